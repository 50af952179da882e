"""model.int8.onnx: static post-training INT8 quantization of the fp32 file, for the CPU runtime.

    quantize_file(fp32_path, int8_path, calibration_batches(features_dir))

What is quantized: the convolutions (the backbones: > 99 % of the MACs), with ONNX Runtime's
quantizer, in QDQ form -- a QuantizeLinear/DequantizeLinear pair on each quantized tensor --
with int8 weights per output channel and int8 activations, both symmetric (zero point 0).
Weights use the reduced 7-bit range ([-64, 63], `reduce_range=True`): on x86 CPUs without VNNI
(AVX2 only, e.g. Zen 2/3) ONNX Runtime's int8 convolutions multiply u8 x s8 pairs into 16-bit
sums that saturate (VPMADDUBSW; onnxruntime.quantization.quantize_static's docstring, "x86/x64
CPU without VNNI ... set reduce_range=True ... to reduce the risk of integer saturation"). With
8-bit weights a file that passed its check on a VNNI machine lost accuracy on an AVX2 one
(measured: max probability error 0.275, 14 of 18 decisive clips kept, on the random-weights test
model; 0.031 and 18 of 18 with 7-bit weights). The file is meant to move between machines, so
the range is reduced everywhere; ARM and VNNI kernels run it unchanged.
That is the form TensorRT's explicit quantization parses too, but only ONNX Runtime runs the
file in this project: no TensorRT INT8 engine is built or verified.

What stays fp32:
- Convolutions whose reduction length (C_in / group x kernel elements) is below
  MIN_REDUCTION. The first face convolution (1 x 3 x 3 = 9) is one: on the reference CPU (AMD
  EPYC Zen 4, AVX-512 VNNI, 1 thread, batch 1, 20 frames) it took 270 us in int8 against 43 us
  in fp32, because an int8 GEMM with 9-long dot products wastes its 4-wide VNNI lanes and adds
  the quantize/dequantize passes. Every other convolution ran 2.9-4.2x faster in int8.
- Gemm/MatMul (the ladder layers and classifier, < 0.2 % of the MACs), normalisation, masks.

Calibration: min/max of every quantized tensor over clips of the TRAIN split (one clip per
run, at its own length), never the split the file is then checked on. The check
(parity.int8_parity) compares with the fp32 file on the held-out clips.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .._deps import require
from ..atomic import atomic_path
from ..errors import EdgeLadderError
from ..features import INPUT_NAMES, batch_clips, load_split

MIN_REDUCTION = 16            # convolutions with a shorter dot product stay fp32 (see above)
CALIBRATION_CLIPS = 64
CALIBRATION_SPLIT = "train"


class CalibrationError(EdgeLadderError):
    """No calibration data: there is nothing to quantize against."""


def calibration_batches(features_dir, split: str = CALIBRATION_SPLIT, limit: int = CALIBRATION_CLIPS) -> list:
    """Up to `limit` clips of `split`, evenly spread over it (only those are read), each a B=1
    input dict (float32)."""
    clips = load_split(Path(features_dir), split, limit=limit)
    if len(clips) < 2:
        raise CalibrationError(f"INT8 calibration needs clips of the {split!r} split of {features_dir}; found "
                               f"{len(clips)}. Export with the features directory training used, or pass --no-int8.")
    batches = []
    for clip in clips:
        batch = batch_clips([clip])
        batches.append({name: np.ascontiguousarray(batch[name], dtype=np.float32) for name in INPUT_NAMES})
    return batches


def conv_plan(model) -> tuple:
    """(names of Conv nodes to quantize, {name: reduction length} of those kept fp32). The
    quantizer selects nodes by name: every Conv must have a unique, non-empty one."""
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    names = [node.name for node in model.graph.node if node.op_type == "Conv"]
    if "" in names or len(set(names)) != len(names):
        raise EdgeLadderError(f"INT8 selects convolutions by node name, but this graph's Conv names are empty or "
                              f"repeated ({names}); re-export model.onnx with `edge-ladder export`.")
    quantize, keep = [], {}
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        shape = weights[node.input[1]]                  # (C_out, C_in / group, *kernel)
        reduction = int(np.prod(shape[1:]))
        if reduction >= MIN_REDUCTION:
            quantize.append(node.name)
        else:
            keep[node.name] = reduction
    return quantize, keep


def quantize_file(fp32_path, int8_path, calibration: list) -> dict:
    """Write int8_path (atomically) from the fp32 ONNX file; returns what export.json records."""
    onnx = require("onnx")
    require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if not calibration:
        raise EdgeLadderError("INT8 calibration got no batches; pass the features directory training used.")
    class Batches(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(calibration)

        def get_next(self):
            return next(self.remaining, None)

    prepared = int8_path.with_name(int8_path.name + ".prepared")   # the pre-pass output, removed after
    try:
        with atomic_path(int8_path) as partial:
            # the quantizer's recommended pre-pass: ONNX shape inference + ONNX Runtime's basic graph
            # optimisations (its symbolic shape inference is skipped: it gives up on this graph's
            # data-dependent masked means, which plain shape inference handles)
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize, keep = conv_plan(onnx.load(str(prepared)))
            if not quantize:
                raise EdgeLadderError(f"{fp32_path} has no convolution with a reduction length >= {MIN_REDUCTION} "
                                      f"to quantize; INT8 would gain nothing here. Pass --no-int8.")
            quantize_static(str(prepared), str(partial), Batches(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                            reduce_range=True,       # 7-bit weights: no saturation without VNNI (above)
                            op_types_to_quantize=["Conv"], nodes_to_quantize=quantize,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
            model = onnx.load(str(partial))
            # the pre-pass declares every domain ONNX Runtime knows (com.microsoft.nchwc, ai.onnx.preview,
            # ...); keep only those a node uses, so an older runtime (JetPack's) has nothing unknown to refuse
            used = {node.domain for node in model.graph.node} | {""}
            kept = [opset for opset in model.opset_import if opset.domain in used]
            del model.opset_import[:]
            model.opset_import.extend(kept)
            model.ir_version = onnx.load(str(fp32_path), load_external_data=False).ir_version   # what export wrote
            onnx.save(model, str(partial))
    finally:
        if prepared.exists():
            prepared.unlink()
    counts = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    done = quantized_convs(model)
    if sorted(done) != sorted(quantize):
        raise EdgeLadderError(f"the quantizer made {sorted(done)} int8, not the planned {sorted(quantize)}; "
                              f"this onnxruntime ({require('onnxruntime').__version__}) selects differently.")
    return {"format": "QDQ", "weights": "int8 (7-bit range), symmetric, per output channel", "reduce_range": True,
            "activations": "int8, symmetric", "calibration": {"method": "minmax", "split": CALIBRATION_SPLIT,
                                                               "clips": len(calibration)},
            "quantized_convs": done, "fp32_convs": keep, "min_reduction": MIN_REDUCTION,
            "quantize_linear_nodes": counts.get("QuantizeLinear", 0),
            "dequantize_linear_nodes": counts.get("DequantizeLinear", 0)}


def quantized_convs(model) -> list:
    """Names of the Conv nodes of a QDQ graph whose data and weight inputs come from DequantizeLinear."""
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    return [node.name for node in model.graph.node if node.op_type == "Conv"
            and all(producer.get(name) == "DequantizeLinear" for name in node.input[:2])]
