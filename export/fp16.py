"""Stage: fp32 ONNX -> strongly-typed FP16 ONNX (our own graph pass, no extra library).

TensorRT 11 has no builder FP16 flag: an FP16 engine comes only from a graph whose tensors are
already FP16 ("strongly typed"). This pass writes such a graph:

* graph inputs and outputs stay float32 (the runtime contract does not change); Casts inside;
* the heavy ops (Conv, MatMul, Gemm) start FP16 regions; element-wise and data-movement ops
  follow the precision of their data inputs, so the input normalisation before the first Conv
  stays FP32;
* the block-list (Softmax, reductions, Div, Sqrt, Pow, Exp, Log, normalisation layers, Casts,
  ...) always runs in FP32: these overflow or lose the masked-mean denominator in FP16, the most
  reported FP16 bug on TensorRT;
* float initializers feeding only FP16 nodes are stored as FP16 (half the file); one that feeds
  both gets an FP16 copy.

Every decision is made per node from its op type and its inputs' precisions; ops the pass does not
know run in FP32 (safe default) and are listed by `unknown_ops` for review.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from .._deps import require

# Start an FP16 region: compute-bound, accumulate well in FP16 on tensor cores.
FP16_SEEDS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
# Run in FP16 when one of their (non-constant) float inputs is FP16, else in FP32.
FOLLOWERS = frozenset({
    "Add", "Sub", "Mul", "Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "Tanh",
    "Gelu", "Erf", "Clip", "Max", "Min", "Neg", "Abs", "MaxPool", "PRelu", "Where",
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "Concat",
    "Expand", "Identity", "Split", "Tile", "Pad", "Dropout",
})
# Always FP32: normalisation, softmax, reductions and the masked-mean division, plus ops whose
# attributes name a float dtype (Cast, ConstantOfShape) or that produce shapes/indices.
FP32_BLOCK_LIST = frozenset({
    "Softmax", "LogSoftmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare", "GlobalAveragePool",
    "AveragePool", "GlobalMaxPool", "Div", "Reciprocal", "Sqrt", "Pow", "Exp", "Log",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "CumSum", "Sum", "Mean", "Cast", "CastLike", "ConstantOfShape", "Range", "Shape", "Size",
    "ArgMax", "ArgMin", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not",
    "And", "Or", "TopK", "NonZero", "Constant",
})

FLOAT = 1      # onnx.TensorProto.FLOAT
FLOAT16 = 10   # onnx.TensorProto.FLOAT16


def unknown_ops(model) -> list[str]:
    """Op types this pass has no rule for (they stay FP32)."""
    known = FP16_SEEDS | FOLLOWERS | FP32_BLOCK_LIST
    return sorted({n.op_type for n in model.graph.node if n.op_type not in known})


def _float_tensors(model) -> set[str]:
    """Names of every float32 tensor of the graph, from ONNX type inference."""
    onnx = require("onnx")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    graph = inferred.graph
    names = set()
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        if info.type.tensor_type.elem_type == FLOAT:
            names.add(info.name)
    for init in graph.initializer:
        if init.data_type == FLOAT:
            names.add(init.name)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == FLOAT:
                    names.add(node.output[0])
    return names


def convert_to_fp16(model, block_list=FP32_BLOCK_LIST):
    """Return a new ModelProto: `model` (float32, topologically sorted as ONNX requires) with FP16
    compute regions and explicit Casts, fp32 graph inputs/outputs. `model` is not modified."""
    onnx = require("onnx")
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())  # work on a copy
    graph = model.graph
    floats = _float_tensors(model)
    initializers = {init.name: init for init in graph.initializer}
    constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
    static = set(initializers) | set(constants)

    # 1. choose each node's precision in topological order; a tensor's precision is its producer's
    precision: dict[str, int] = {i.name: FLOAT for i in graph.input}
    node_is_fp16: list[bool] = []
    for node in graph.node:
        data_inputs = [x for x in node.input if x and x in floats and x not in static]
        if node.op_type in block_list or node.op_type not in (FP16_SEEDS | FOLLOWERS):
            fp16 = False
        elif node.op_type in FP16_SEEDS:
            fp16 = True
        else:
            fp16 = any(precision.get(x) == FLOAT16 for x in data_inputs)
        node_is_fp16.append(fp16)
        for out in node.output:
            if out in floats:
                precision[out] = FLOAT16 if fp16 and node.op_type != "Constant" else FLOAT

    # 2. static float tensors: FP16 copy for FP16 consumers, FP32 kept if any FP32 consumer remains
    consumers = defaultdict(list)
    for index, node in enumerate(graph.node):
        for x in node.input:
            consumers[x].append(index)
    half_name = {}
    for name in static:
        if name not in floats:
            continue
        users = consumers.get(name, [])
        if not any(node_is_fp16[i] for i in users):
            continue
        source = initializers.get(name)
        array = numpy_helper.to_array(source) if source is not None else \
            numpy_helper.to_array(next(a.t for a in constants[name].attribute if a.name == "value"))
        if np.abs(array).max(initial=0.0) > np.finfo(np.float16).max:
            continue  # out of FP16 range: leave it FP32, a Cast is inserted where it is used
        half_name[name] = f"{name}__fp16"
        graph.initializer.append(numpy_helper.from_array(array.astype(np.float16), half_name[name]))

    # 3. rewrite inputs of each node to the precision it runs in, inserting Casts where needed
    new_nodes = []
    cast_cache: dict[tuple[str, int], str] = {}

    def cast(name: str, to: int) -> str:
        key = (name, to)
        if key not in cast_cache:
            out = f"{name}__to_{'fp16' if to == FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=f"Cast_{out}"))
            cast_cache[key] = out
        return cast_cache[key]

    for node, fp16 in zip(graph.node, node_is_fp16):
        want = FLOAT16 if fp16 else FLOAT
        for i, x in enumerate(node.input):
            if not x or x not in floats:
                continue
            if x in static:
                if fp16:
                    node.input[i] = half_name.get(x) or cast(x, FLOAT16)
                continue
            if precision.get(x, FLOAT) != want:
                node.input[i] = cast(x, want)
        new_nodes.append(node)

    # 4. graph outputs stay float32
    outputs = {o.name for o in graph.output if o.type.tensor_type.elem_type == FLOAT}
    for out in outputs:
        if precision.get(out) == FLOAT16:
            inner = f"{out}__fp16"
            for node in new_nodes:
                node.output[:] = [inner if o == out else o for o in node.output]
                node.input[:] = [inner if x == out else x for x in node.input]
            new_nodes.append(helper.make_node("Cast", [inner], [out], to=FLOAT, name=f"Cast_{out}_out"))

    # drop initializers nobody reads any more (FP32 originals fully replaced by FP16 copies)
    used = {x for node in new_nodes for x in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(_toposort(new_nodes, {i.name for i in graph.input} | {i.name for i in kept}))
    del graph.value_info[:]  # stale float32 annotations; re-inferred below
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def _toposort(nodes, available: set[str]):
    """Order nodes so every input is produced before use (Casts were appended out of order)."""
    available = set(available) | {""}
    pending = list(nodes)
    ordered = []
    while pending:
        progressed = []
        for node in pending:
            if all(x in available for x in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                progressed.append(node)
        if len(progressed) == len(pending):
            missing = sorted({x for n in progressed for x in n.input if x not in available})
            raise RuntimeError(f"fp16 pass produced a graph with unresolved inputs: {missing[:5]}")
        pending = progressed
    return ordered


def precision_summary(model) -> dict:
    """Count nodes by the float dtype they compute in: {'fp16': [...op types], 'fp32': [...]}"""
    onnx = require("onnx")
    inferred = onnx.shape_inference.infer_shapes(model)
    dtype = {v.name: v.type.tensor_type.elem_type
             for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    summary = {"fp16": defaultdict(int), "fp32": defaultdict(int)}
    for node in inferred.graph.node:
        if node.op_type == "Cast":
            continue
        kinds = {dtype.get(o) for o in node.output}
        if FLOAT16 in kinds:
            summary["fp16"][node.op_type] += 1
        elif FLOAT in kinds:
            summary["fp32"][node.op_type] += 1
    return {k: dict(sorted(v.items())) for k, v in summary.items()}


def convert_file(src: Path, dst: Path) -> dict:
    """fp32 ONNX file -> FP16 ONNX file (atomic). Returns the precision summary."""
    onnx = require("onnx")
    from ..features import atomic_write_bytes
    half = convert_to_fp16(onnx.load(str(src)))
    atomic_write_bytes(Path(dst), half.SerializeToString())
    return precision_summary(half)
