"""Stage: pruned torch inference module -> fp32 ONNX with the runtime's named I/O.

    inputs   audio (B, T_a, 80), audio_mask (B, T_a), face (B, T_v, 1, 48, 48),
             face_mask (B, T_v), presence (B, 2)               all float32
    outputs  logits (B, 6), probs (B, 6) = softmax(logits)     float32
    dynamic  B, T_a, T_v

Uses torch's TorchScript-based exporter (`dynamo=False`): it writes opset 17 directly, which the
TensorRT 8.5 parser needs, and needs no onnxscript.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from .._deps import require
from ..features import INPUT_NAMES, OUTPUT_NAMES, atomic_write_bytes

DYNAMIC_AXES = {
    "audio": {0: "batch", 1: "audio_frames"},
    "audio_mask": {0: "batch", 1: "audio_frames"},
    "face": {0: "batch", 1: "video_frames"},
    "face_mask": {0: "batch", 1: "video_frames"},
    "presence": {0: "batch"},
    "logits": {0: "batch"},
    "probs": {0: "batch"},
}


def with_probs(inference_module):
    """Wrap a module returning logits (B, 6) so it returns (logits, probs) — the graph's outputs."""
    torch = require("torch")

    class LogitsAndProbs(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, audio, audio_mask, face, face_mask, presence):
            logits = self.inner(audio, audio_mask, face, face_mask, presence)  # (B, 6)
            return logits, torch.softmax(logits, dim=-1)

    return LogitsAndProbs(inference_module).eval()


def export_onnx(inference_module, example_inputs: dict, path: Path, opset: int = 17):
    """Export `inference_module` (forward(audio, audio_mask, face, face_mask, presence) -> logits)
    to `path` (written atomically). `example_inputs` maps the five input names to float32 numpy
    arrays; their sizes only trace the graph (all of B, T_a, T_v stay dynamic). Returns the
    checked onnx.ModelProto."""
    torch = require("torch")
    onnx = require("onnx")
    missing = [n for n in INPUT_NAMES if n not in example_inputs]
    if missing:
        raise ValueError(f"example_inputs must hold {INPUT_NAMES}; missing {missing}")
    module = with_probs(inference_module)
    args = tuple(torch.as_tensor(example_inputs[n]) for n in INPUT_NAMES)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo; we need its opset-17 output
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=DYNAMIC_AXES, do_constant_folding=True)
    model = onnx.load_from_string(buffer.getvalue())
    model.producer_name = "edge-ladder"
    onnx.checker.check_model(model)
    atomic_write_bytes(Path(path), model.SerializeToString())
    return model


def io_signature(model) -> dict:
    """{'inputs': {name: {'shape': [...], 'dtype': 'float32'}}, 'outputs': {...}} with symbolic
    dims as strings, for export.json."""
    onnx = require("onnx")

    def describe(values):
        out = {}
        for value in values:
            tensor = value.type.tensor_type
            dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
            out[value.name] = {"shape": dims,
                               "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}
