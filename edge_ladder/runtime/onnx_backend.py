"""ONNX Runtime backend: the default on a CPU, CUDA/TensorRT execution providers when present.

An InferenceSession's run() is thread-safe, so one session serves every thread; nothing in
this class is mutated per call.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from .._deps import require
from .base import Model, ModelLoadError, TensorSpec

# ONNX element type strings as onnxruntime reports them
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}
# preferred order; only those the installed onnxruntime offers are used
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def default_threads() -> int:
    """Intra-op threads: all cores up to 4 (a small CPU serving one stream gains nothing past that)."""
    return max(1, min(4, os.cpu_count() or 1))


def _spec(node) -> TensorSpec:
    if node.type not in _ORT_DTYPES:
        raise ModelLoadError(f"tensor {node.name} has type {node.type}; edge-ladder models use float tensors.")
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in node.shape)
    return TensorSpec(name=node.name, dtype=np.dtype(_ORT_DTYPES[node.type]), shape=shape)


class OnnxModel(Model):
    """An ONNX file served by onnxruntime.

    providers: execution providers in priority order (default: TensorRT, CUDA, CPU, keeping only
    those installed). intra_op_threads: CPU threads per run (default: min(4, cores)). spin: let idle
    worker threads busy-wait between runs (lower latency on a dedicated core, higher power).
    """
    backend = "onnxruntime"

    def __init__(self, path, providers: Optional[Sequence[str]] = None,
                 intra_op_threads: Optional[int] = None, inter_op_threads: int = 1, spin: bool = False):
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"ONNX model {path} does not exist. Export one with "
                                 f"`edge-ladder export RUN_DIR/checkpoint.pt --out EXPORT_DIR`.")
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in PROVIDER_ORDER if p in available]
        else:
            unknown = [p for p in providers if p not in available]
            if unknown:
                raise ModelLoadError(f"execution providers {unknown} are not in this onnxruntime build "
                                     f"(available: {available}). Install onnxruntime-gpu for CUDA/TensorRT.")
        if intra_op_threads is not None and intra_op_threads < 1:
            raise ModelLoadError(f"intra_op_threads must be >= 1; got {intra_op_threads}.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or default_threads()
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # ONNX Runtime's worker threads busy-wait after each run by default. On a robot that burns
        # CPU and power between windows and starves the camera/control threads (and any other
        # library in the process: torch became 50x slower interleaved with a spinning session).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(f"onnxruntime could not load {path}: {error}. Is it an ONNX file written by "
                                 f"`edge-ladder export`?") from error
        self.providers = self.session.get_providers()
        self.intra_op_threads = options.intra_op_num_threads
        super().__init__(path, {n.name: _spec(n) for n in self.session.get_inputs()},
                         {n.name: _spec(n) for n in self.session.get_outputs()})
        self._output_names = [n for n in self.outputs]

    def _execute(self, arrays: Dict[str, np.ndarray]):
        feeds = {name: array.astype(self.inputs[name].dtype, copy=False) for name, array in arrays.items()}
        start = time.perf_counter()
        values = self.session.run(self._output_names, feeds)
        compute_ms = (time.perf_counter() - start) * 1e3
        outputs = {name: np.asarray(v, np.float32) for name, v in zip(self._output_names, values)}
        return outputs, {"compute": compute_ms}

    def close(self) -> None:
        self.session = None
