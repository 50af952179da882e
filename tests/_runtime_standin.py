"""A stand-in ONNX model with the exported model's interface (five inputs, two outputs, dynamic
B/T_a/T_v), built with onnx.helper. Runtime tests of plumbing (validation, threads, streaming)
use it where the trained model is not the point; numerical parity tests use tiny_export."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def make_standin_onnx(path: Path, seed: int = 0, n_mels: int = 80, face_size: int = 48) -> Path:
    """logits = [masked-mean audio (80), masked-mean face brightness (1), presence (2)] @ W + b."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.05, (n_mels + 3, 6)).astype(np.float32)
    bias = rng.normal(0, 0.1, 6).astype(np.float32)
    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("audio", f, ["B", "T_a", n_mels]),
              helper.make_tensor_value_info("audio_mask", f, ["B", "T_a"]),
              helper.make_tensor_value_info("face", f, ["B", "T_v", 1, face_size, face_size]),
              helper.make_tensor_value_info("face_mask", f, ["B", "T_v"]),
              helper.make_tensor_value_info("presence", f, ["B", 2])]
    outputs = [helper.make_tensor_value_info("logits", f, ["B", 6]),
               helper.make_tensor_value_info("probs", f, ["B", 6])]
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    n = helper.make_node
    nodes = [
        n("Unsqueeze", ["audio_mask", "minus1"], ["am3"]),
        n("Mul", ["audio", "am3"], ["a_masked"]),
        n("ReduceSum", ["a_masked", "axis1"], ["a_sum"], keepdims=0),
        n("ReduceSum", ["audio_mask", "axis1"], ["a_cnt"], keepdims=1),
        n("Max", ["a_cnt", "one"], ["a_cnt1"]),
        n("Div", ["a_sum", "a_cnt1"], ["a_mean"]),
        n("ReduceMean", ["face"], ["f_pix"], axes=[2, 3, 4], keepdims=0),   # opset 17: axes attribute
        n("Mul", ["f_pix", "face_mask"], ["f_masked"]),
        n("ReduceSum", ["f_masked", "axis1"], ["f_sum"], keepdims=1),
        n("ReduceSum", ["face_mask", "axis1"], ["f_cnt"], keepdims=1),
        n("Max", ["f_cnt", "one"], ["f_cnt1"]),
        n("Div", ["f_sum", "f_cnt1"], ["f_mean"]),
        n("Concat", ["a_mean", "f_mean", "presence"], ["joint"], axis=1),
        n("MatMul", ["joint", "W"], ["mm"]),
        n("Add", ["mm", "b"], ["logits"]),
        n("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "standin", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def random_inputs(rng, batch: int = 2, t_audio: int = 97, t_video: int = 13) -> dict:
    """Fresh random model inputs with odd sizes; masks with a padded tail on sample 0."""
    audio = rng.normal(-5.0, 3.0, (batch, t_audio, 80)).astype(np.float32)
    face = rng.normal(0.0, 1.0, (batch, t_video, 1, 48, 48)).astype(np.float32)
    audio_mask = np.ones((batch, t_audio), np.float32)
    face_mask = (rng.random((batch, t_video)) > 0.2).astype(np.float32)
    audio_mask[0, t_audio // 2:] = 0.0
    presence = np.ones((batch, 2), np.float32)
    return {"audio": audio, "audio_mask": audio_mask, "face": face, "face_mask": face_mask, "presence": presence}
