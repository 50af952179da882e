"""TensorRT backend (JetPack 5.1 / TensorRT 8.5 through TensorRT 11.x), name-based I/O only.

    engine  deserialised once per model (after the sidecar check), shared by all threads
    per thread: one IExecutionContext, one CUDA stream, CUDA events, page-locked host buffers
            and device buffers, allocated on first use and grown only when a larger shape
            arrives; optional CUDA graphs, one per fixed set of input shapes
    per call: primary context pushed -> set_input_shape per input -> async H2D -> 
            execute_async_v3 (or graph launch) -> async D2H -> synchronise -> context popped

Only the API present in every version from 8.5 is used: num_io_tensors, get_tensor_name,
get_tensor_mode, get_tensor_dtype, get_tensor_shape, get_tensor_profile_shape,
set_input_shape, set_tensor_address, execute_async_v3. (Bindings and execute_async_v2 were
removed in TensorRT 10.)
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .._deps import require
from .base import AXIS_NAMES, Model, ModelLoadError, TensorSpec
from .cuda import CudaGraph, PrimaryContext
from .sidecar import check_sidecar


class _DeviceBuffer:
    """A page-locked host array and a device allocation of the same capacity (bytes)."""

    def __init__(self, cuda, dtype: np.dtype, n_elements: int):
        self.dtype = np.dtype(dtype)
        self.capacity = max(1, n_elements)
        self.host = cuda.pagelocked_empty(self.capacity, self.dtype)
        self.device = cuda.mem_alloc(self.capacity * self.dtype.itemsize)

    def view(self, shape) -> np.ndarray:
        return self.host[:int(np.prod(shape))].reshape(shape)

    def free(self) -> None:
        self.device.free()


class _ThreadState:
    """Everything one thread needs to run the engine: TensorRT contexts are not thread-safe."""

    def __init__(self, cuda, engine, profile_index: int):
        self.context = engine.create_execution_context()
        if self.context is None:
            raise ModelLoadError("TensorRT could not create an execution context (out of GPU memory?).")
        self.stream = cuda.Stream()
        if profile_index:
            self.context.set_optimization_profile_async(profile_index, self.stream.handle)
        self.events = [cuda.Event() for _ in range(4)]    # start, after H2D, after compute, after D2H
        self.buffers: Dict[str, _DeviceBuffer] = {}
        self.graphs: Dict[tuple, CudaGraph] = {}

    def buffer(self, cuda, name: str, dtype, shape) -> _DeviceBuffer:
        """The buffer for `name`, grown (and graphs dropped: addresses change) when too small."""
        n = int(np.prod(shape))
        current = self.buffers.get(name)
        if current is None or current.capacity < n:
            if current is not None:
                current.free()
                self.drop_graphs()
            self.buffers[name] = _DeviceBuffer(cuda, dtype, n)
        return self.buffers[name]

    def drop_graphs(self) -> None:
        for graph in self.graphs.values():
            graph.destroy()
        self.graphs.clear()

    def free(self) -> None:
        self.drop_graphs()
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        self.context = None


class TensorRTModel(Model):
    """A serialized TensorRT engine (MODEL.engine + MODEL.engine.json sidecar).

    device: CUDA device index. profile: optimisation profile index used by every context.
    use_cuda_graph: capture execute_async_v3 in a CUDA graph per distinct set of input shapes
    (worth it for fixed-shape streaming windows). verify_sidecar: refuse engines built for
    another TensorRT/GPU or changed since the build (keep True unless you built the engine
    yourself with trtexec).
    """
    backend = "tensorrt"

    def __init__(self, path, device: int = 0, profile: int = 0, use_cuda_graph: bool = False,
                 verify_sidecar: bool = True):
        trt = require("tensorrt")
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"TensorRT engine {path} does not exist. Build it on this device with "
                                 f"`edge-ladder build-engine MODEL.onnx --out {path}`.")
        self.trt = trt
        self.gpu = PrimaryContext(device)
        self.cuda = self.gpu.cuda
        engine_bytes = path.read_bytes()
        self.sidecar = None
        if verify_sidecar:
            self.sidecar = check_sidecar(path, engine_bytes, tensorrt_version=trt.__version__,
                                         gpu_name=self.gpu.name, compute_capability=self.gpu.compute_capability)
        self.logger = trt.Logger(trt.Logger.WARNING)
        with self.gpu.active():
            self.runtime = trt.Runtime(self.logger)
            self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise ModelLoadError(f"TensorRT {trt.__version__} could not deserialise {path} (see the TensorRT "
                                 f"log above). Rebuild it on this device: `edge-ladder build-engine MODEL.onnx "
                                 f"--out {path}`.")
        if not 0 <= profile < self.engine.num_optimization_profiles:
            raise ModelLoadError(f"profile must be in [0, {self.engine.num_optimization_profiles}); got {profile}.")
        self.profile = profile
        self.use_cuda_graph = use_cuda_graph
        inputs, outputs = self._io_specs()
        super().__init__(path, inputs, outputs)
        self._local = threading.local()
        self._states = []                      # every thread's state, freed by close()
        self._states_lock = threading.Lock()

    def _io_specs(self):
        trt, engine = self.trt, self.engine
        inputs: Dict[str, TensorSpec] = {}
        outputs: Dict[str, TensorSpec] = {}
        for index in range(engine.num_io_tensors):
            name = engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            dims = tuple(engine.get_tensor_shape(name))
            axes = AXIS_NAMES.get(name, ())
            shape = tuple(d if d >= 0 else (axes[i] if i < len(axes) else "?") for i, d in enumerate(dims))
            # pybind11 enum member compared by name: TensorIOMode.INPUT/OUTPUT exist in 8.5-11.4, but the
            # member names are not visible to ../shared/tools/trt_api_check.py in the compiled bindings.
            if engine.get_tensor_mode(name).name == "INPUT":
                low, opt, high = engine.get_tensor_profile_shape(name, self.profile)
                inputs[name] = TensorSpec(name, dtype, shape, min_shape=tuple(low), max_shape=tuple(high),
                                          opt_shape=tuple(opt))
            else:
                outputs[name] = TensorSpec(name, dtype, shape)
        return inputs, outputs

    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = _ThreadState(self.cuda, self.engine, self.profile)
            self._local.state = state
            with self._states_lock:
                self._states.append(state)
        return state

    def _execute(self, arrays: Dict[str, np.ndarray]):
        cuda = self.cuda
        with self.gpu.active():
            state = self._state()
            context, stream = state.context, state.stream
            for name, array in arrays.items():
                if not context.set_input_shape(name, array.shape):
                    raise ModelLoadError(f"TensorRT rejected shape {array.shape} for {name} "
                                         f"(profile {self.inputs[name].describe()}).")
            staged = []
            for name, array in arrays.items():
                buf = state.buffer(cuda, name, self.inputs[name].dtype, array.shape)
                np.copyto(buf.view(array.shape), array, casting="same_kind")
                staged.append((buf, array.shape))
            outs = {}
            for name, spec in self.outputs.items():
                shape = tuple(context.get_tensor_shape(name))
                outs[name] = (state.buffer(cuda, name, spec.dtype, shape), shape)
            # addresses after every (re)allocation above
            for name, array in arrays.items():
                context.set_tensor_address(name, int(state.buffers[name].device))
            for name, (buf, _) in outs.items():
                context.set_tensor_address(name, int(buf.device))

            start, after_h2d, after_compute, after_d2h = state.events
            start.record(stream)
            for buf, shape in staged:
                cuda.memcpy_htod_async(buf.device, buf.view(shape), stream)
            after_h2d.record(stream)
            self._enqueue(state, tuple(a.shape for a in arrays.values()))
            after_compute.record(stream)
            for buf, shape in outs.values():
                cuda.memcpy_dtoh_async(buf.view(shape), buf.device, stream)
            after_d2h.record(stream)
            after_d2h.synchronize()
            timings = {"h2d": after_h2d.time_since(start), "compute": after_compute.time_since(after_h2d),
                       "d2h": after_d2h.time_since(after_compute)}
            outputs = {name: buf.view(shape).astype(np.float32) for name, (buf, shape) in outs.items()}
        return outputs, timings

    def _enqueue(self, state: _ThreadState, shapes_key: tuple) -> None:
        handle = state.stream.handle
        if not self.use_cuda_graph:
            if not state.context.execute_async_v3(handle):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above).")
            return
        graph = state.graphs.get(shapes_key)
        if graph is None:
            # one plain run first: TensorRT does deferred work after a shape change, which must
            # not land inside the capture
            if not state.context.execute_async_v3(handle):
                raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above).")
            graph = CudaGraph()
            with graph.capture(handle):
                state.context.execute_async_v3(handle)
            state.graphs[shapes_key] = graph
        graph.launch(handle)

    def close(self) -> None:
        if getattr(self, "engine", None) is None:
            return
        with self.gpu.active():
            with self._states_lock:
                for state in self._states:
                    state.free()
                self._states.clear()
            self.engine = None
            self.runtime = None
        self.gpu.release()
