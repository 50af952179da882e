"""Deploy-time runtime: serves exported ONNX files and TensorRT engines. Never imports torch.

    from edge_ladder import runtime
    model = runtime.load("export/model.onnx")          # ONNX Runtime (CPU, or CUDA/TRT EPs)
    model = runtime.load("export/model.engine")        # TensorRT + pycuda (Jetson / GPU)
    result = model.predict(batch_inputs(...))          # Result: probs (B, 6), labels, timings
    stream = runtime.Stream(model, window_s=2.0, hop_s=0.5)
    stream = runtime.Stream(engine_model, frontend="kernels")   # CUDA kernels -> engine inputs
    # lower level: TensorRTModel.device_inputs(shapes) / execute_prefilled(shapes, host_inputs),
    # runtime.gpu_frontend.GpuFrontEnd(model).run(pcm, ticks)

Backend modules import onnxruntime / tensorrt / pycuda only when a model is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .base import (INPUT_NAMES, OUTPUT_NAMES, Model, ModelLoadError, Result, RuntimeInputError,
                   TensorSpec, validate_inputs)

BACKENDS = ("onnxruntime", "tensorrt")
OPTIONS = {"onnxruntime": ("providers", "intra_op_threads", "inter_op_threads", "spin"),
           "tensorrt": ("device", "profile", "use_cuda_graph", "verify_sidecar")}
_SUFFIXES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}


def backend_for(path, backend: Optional[str] = None) -> str:
    """The backend for a file: explicit `backend`, else by suffix (.onnx -> onnxruntime,
    .engine/.plan/.trt -> tensorrt). A directory holding one model file stands for that file."""
    from ..paths import model_file
    path = model_file(path)
    if backend is not None:
        if backend not in BACKENDS:
            raise ModelLoadError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
        expected = _SUFFIXES.get(Path(path).suffix.lower())
        if expected is not None and expected != backend:
            raise ModelLoadError(f"{path} is a {expected} file but backend={backend!r} was requested. "
                                 f"Pass the matching file (.onnx for onnxruntime, .engine for tensorrt) "
                                 f"or leave the backend out.")
        return backend
    suffix = Path(path).suffix.lower()
    if suffix in (".pt", ".pth"):
        raise ModelLoadError(f"{path} is a PyTorch checkpoint; the runtime serves exported models. Export it with "
                             f"`edge-ladder export {path} --out EXPORT_DIR` and load EXPORT_DIR/model.onnx "
                             f"(or a TensorRT engine built from it).")
    if suffix not in _SUFFIXES:
        raise ModelLoadError(f"cannot tell the backend of {path}: expected a .onnx file (ONNX Runtime) or a "
                             f".engine file (TensorRT); got suffix {suffix or '(none)'!r}. "
                             f"Name the backend: --backend on the command line, backend= in Python.")
    return _SUFFIXES[suffix]


def load(path, backend: Optional[str] = None, **opts) -> Model:
    """Load a model file for inference.

    path: MODEL.onnx or MODEL.engine (or a directory holding one of them, paths.model_file).
    backend: 'onnxruntime' | 'tensorrt' (default: by suffix).
    opts: for onnxruntime providers=[...], intra_op_threads=N; for tensorrt device=0, profile=0,
    use_cuda_graph=False, verify_sidecar=True.
    """
    from ..paths import model_file
    path = model_file(path)
    chosen = backend_for(path, backend)
    if not Path(path).is_file():
        raise ModelLoadError(f"model file {path} does not exist. Export one with `edge-ladder export` "
                             f"(ONNX) or build one with `edge-ladder build-engine` (TensorRT).")
    unknown = sorted(set(opts) - set(OPTIONS[chosen]))
    if unknown:
        raise ModelLoadError(f"unknown option(s) {unknown} for the {chosen} backend; it accepts "
                             f"{', '.join(OPTIONS[chosen])}.")
    if chosen == "onnxruntime":
        from .onnx_backend import OnnxModel
        return OnnxModel(path, **opts)
    from .trt_backend import TensorRTModel
    return TensorRTModel(path, **opts)


def __getattr__(name):
    # Stream pulls in the media/face helpers; import it on first use only
    if name in ("Stream", "Prediction"):
        from . import stream
        return getattr(stream, name)
    raise AttributeError(f"module 'edge_ladder.runtime' has no attribute {name!r}")


__all__ = ["load", "backend_for", "Model", "Result", "TensorSpec", "RuntimeInputError", "ModelLoadError",
           "validate_inputs", "INPUT_NAMES", "OUTPUT_NAMES", "BACKENDS", "Stream", "Prediction"]
