"""Stage check: every node of an exported file must be parsable by TensorRT 8.5 (JetPack 5.1),
the oldest target.

TensorRT 8.5's ONNX parser reads opset <= 17, has no LayerNormalization (added in 8.6) and no
STFT/DFT/MelWeightMatrix. The allow-list below is deliberately explicit and short: the ops our
exported graphs use and that onnx-tensorrt 8.5 lists as supported. A new op in the model makes the
export fail here, on the workstation, instead of on the Jetson.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .._deps import require
from ..errors import EdgeLadderError

MAX_OPSET = 17

# Subset of onnx-tensorrt 8.5 (release/8.5-GA docs/operators.md) "supported" operators.
TRT85_ALLOWED_OPS = frozenset({
    "Abs", "Add", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Div", "Dropout", "Elu", "Equal",
    "Erf", "Exp", "Expand", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool",
    "Greater", "GreaterOrEqual", "Identity", "LeakyRelu", "Less", "LessOrEqual", "Log",
    "LogSoftmax", "MatMul", "Max", "MaxPool", "Min", "Mul", "Neg", "Not", "Pad", "Pow", "PRelu",
    "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape",
    "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Tanh", "Tile",
    "Transpose", "Unsqueeze", "Where",
})
# Named so the error can say why, not just "not allowed".
TRT85_KNOWN_MISSING = {
    "LayerNormalization": "added to the TensorRT ONNX parser in 8.6; decompose it (ReduceMean/Sub/Pow/Sqrt/Div)",
    "STFT": "not supported by TensorRT's parser; compute the log-mel outside the graph (edge_ladder.frontend)",
    "DFT": "not supported by TensorRT's parser; compute the log-mel outside the graph (edge_ladder.frontend)",
    "MelWeightMatrix": "not supported by TensorRT's parser; compute the log-mel outside the graph",
    "GroupNormalization": "opset 18 op, newer than TensorRT 8.5's parser",
}


class OpsetError(EdgeLadderError):
    """An ONNX file uses an opset or op the oldest TensorRT target cannot parse."""


def op_histogram(model) -> dict[str, int]:
    """{op_type: count} over the main graph (the exporter emits no subgraphs for this model)."""
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def default_opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def check_trt85(model_or_path, what: str | None = None) -> dict[str, int]:
    """Raise OpsetError when `model_or_path` needs more than TensorRT 8.5's parser offers; return
    the op histogram otherwise."""
    onnx = require("onnx")
    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    what = what or (str(model_or_path) if isinstance(model_or_path, (str, Path)) else "model")
    problems = []
    opset = default_opset(model)
    if opset > MAX_OPSET:
        problems.append(f"opset {opset} > {MAX_OPSET} (TensorRT 8.5's parser maximum); re-export with --opset {MAX_OPSET}")
    custom = sorted({o.domain for o in model.opset_import if o.domain not in ("", "ai.onnx")})
    if custom:
        problems.append(f"custom op domains {custom} (no TensorRT plugin for them)")
    histogram = op_histogram(model)
    for op in histogram:
        if op in TRT85_KNOWN_MISSING:
            problems.append(f"{op}: {TRT85_KNOWN_MISSING[op]}")
        elif op not in TRT85_ALLOWED_OPS:
            problems.append(f"{op}: not in the TensorRT 8.5 allow-list (export/opcheck.py)")
    if problems:
        raise OpsetError(f"{what} is not parsable by TensorRT 8.5 (JetPack 5.1):\n  - " + "\n  - ".join(problems))
    return histogram
