"""One lazy-import helper for every heavy or optional dependency.

    torch = require("torch")

When a package is missing, the error names it, says what edge-ladder needs it for and how to
install it (on a workstation and on a Jetson). Nothing is ever installed at run time.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# module -> (what it is needed for, install on a workstation, install on a Jetson)
_KNOWN = {
    "torch": ("training, evaluation and export of the PyTorch model",
              "pip install torch==2.13.0  (or, in a clone of edge-ladder: pip install -e '.[train]')",
              "not needed on the device: the runtime serves ONNX/TensorRT files without torch"),
    "onnx": ("writing and checking ONNX files (edge-ladder export)",
             "pip install onnx", "pip install onnx"),
    "onnxruntime": ("the CPU runtime and ONNX parity checks",
                    "pip install onnxruntime",
                    "pip install onnxruntime  (or the Jetson Zoo onnxruntime-gpu wheel)"),
    "tensorrt": ("building and running TensorRT engines",
                 "pip install tensorrt  (needs NVIDIA's package index and a CUDA GPU)",
                 "comes with JetPack (apt install python3-libnvinfer); in a venv use "
                 "--system-site-packages"),
    "pycuda": ("device buffers and CUDA streams for the TensorRT runtime",
               "pip install pycuda  (needs the CUDA toolkit: nvcc on PATH)",
               "pip install pycuda  (after: export PATH=/usr/local/cuda/bin:$PATH)"),
    "cv2": ("video decoding and the Haar-cascade face detector",
            "pip install opencv-python-headless",
            "JetPack's python3-opencv, or pip install opencv-python-headless"),
    "av": ("reading the audio track of any recording (prepare --unlabelled: MP4, MKV, FLV, WAV ...)",
           "pip install av  (or, in a clone of edge-ladder: pip install -e '.[train]')", "pip install av"),
    "matplotlib": ("PNG plots (confusion matrix, latency histogram)",
                   "pip install matplotlib", "pip install matplotlib"),
    "scipy": ("the chance-level test of a trained model (binomial)", "pip install scipy", "pip install scipy"),
    "librosa": ("the log-mel oracle in the tests", "pip install librosa", "pip install librosa"),
}


class MissingDependencyError(ImportError):
    """A dependency edge-ladder needs for the requested operation is not installed."""


def missing_message(name: str, cause: BaseException | None = None) -> str:
    why, pip_cmd, jetson_cmd = _KNOWN.get(name, ("this operation", f"pip install {name}", f"pip install {name}"))
    text = (f"edge-ladder needs the Python package '{name}' for {why}, but it could not be imported"
            f"{f' ({cause})' if cause else ''}.\n"
            f"  install:   {pip_cmd}\n"
            f"  on Jetson: {jetson_cmd}")
    return text


def require(name: str) -> ModuleType:
    """Import `name` or raise MissingDependencyError with the install command."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise MissingDependencyError(missing_message(name, error)) from error


def available(name: str) -> bool:
    """True when `name` imports. Probes only when called, never at import of edge_ladder."""
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True
