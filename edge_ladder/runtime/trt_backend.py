"""TensorRT backend (JetPack 5.1 / TensorRT 8.5 through TensorRT 11.x), name-based I/O only.

    engine  deserialised once per model (after the sidecar check), shared by all threads;
            one TensorRT logger for the whole process (`trt_logger`)
    per thread: one IExecutionContext on its own optimisation profile where TensorRT needs that
            (below), one non-blocking CUDA stream, CUDA events, page-locked host buffers and
            device buffers, allocated on first use and grown only when a larger shape arrives;
            optional CUDA graph, for the input shapes the context holds (dropped when they change)
    per call: primary context pushed -> set_input_shape / set_tensor_address where the shapes or
            buffers changed -> async H2D -> execute_async_v3 (or graph launch) -> async D2H ->
            synchronise -> context popped
    states of threads that have ended are freed (context, stream, events, buffers) when the
    next new thread creates its state (a server with a thread per request does not grow), the
    rest by close()

Optimisation profiles and threads. Before TensorRT 10 "each execution context in concurrent use
must use a separate optimization profile" (NvInferRuntime.h, 8.5), and only the first context an
engine creates gets profile 0 implicitly. TensorRT 8.6 can lift that at build time
(PreviewFeature.PROFILE_SHARING_0806, off by default); 10.x shares profiles by default. So:
    TensorRT >= 10, or a sidecar saying profile_sharing: every thread's context uses `profile`
    otherwise (8.5; 8.6 engines built without sharing): each thread's context takes a free
            profile among those with `profile`'s shapes (build-engine --contexts N builds N
            identical ones on 8.5), and a thread beyond that gets ContextLimitError naming the fix.
Every context selects its profile explicitly (set_optimization_profile_async, through
`select_profile`: the binding raises RuntimeError where its docstring promises False) and a refusal
is a ContextLimitError: never a misleading "rejected shape" from a context without a profile.

Device-filled inputs (the CUDA front-end kernels write log-mel frames and face crops straight
into the engine's input buffers; edge_ladder.runtime.gpu_frontend does this for a window):

    with model.active():                                # primary context current in this thread
        slots = model.device_inputs(shapes)             # {name: DeviceInput(ptr, shape, dtype, stream)}
        ... enqueue kernels on slots["audio"].stream writing slots["audio"].ptr (its dtype) ...
        result = model.execute_prefilled(shapes, host_inputs={"audio_mask": ..., "presence": ...})

Only the API present in every version from 8.5 is used: num_io_tensors, get_tensor_name,
get_tensor_mode, get_tensor_dtype, get_tensor_shape, get_tensor_profile_shape,
num_optimization_profiles, set_optimization_profile_async, set_input_shape, set_tensor_address,
execute_async_v3. (Bindings and execute_async_v2 were removed in TensorRT 10.)
"""
from __future__ import annotations

import re
import threading
import time
import traceback
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import numpy as np

from .._deps import require
from ..errors import EdgeLadderError
from .base import (AXIS_NAMES, MASK_NAMES, Model, ModelLoadError, Result, RuntimeInputError, TensorSpec,
                   make_result, validate_shapes)
from .cuda import CudaGraph, PerThread, PrimaryContext
from .sidecar import check_sidecar, rebuild_command


class ContextLimitError(EdgeLadderError, RuntimeError):
    """More threads use the engine at once than it has optimisation profiles for (TensorRT < 10)."""


_LOGGER_LOCK = threading.Lock()
_LOGGER: Optional[tuple] = None                      # (tensorrt module, its Logger)


def trt_logger(trt):
    """The process's one TensorRT logger, made on first use and never freed.

    TensorRT keeps a single logger pointer: a second logger passed to Builder/Runtime is ignored
    with "TensorRT maintains only a single logger pointer at any given time, so the existing value
    ... will be used instead" (NVIDIA/TensorRT#1475), and "the logger should be valid until all
    objects created are released" (trt_docs.py ILogger). A logger owned by one model could be
    freed while another model's objects still log through it; build-engine and every model share
    this one instead."""
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None or _LOGGER[0] is not trt:
            _LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
        return _LOGGER[1]


def _major(version: str) -> int:
    match = re.match(r"\d+", str(version))
    return int(match.group()) if match else 0


def profiles_shared(tensorrt_version: str, sidecar: Optional[dict]) -> bool:
    """Whether several live execution contexts may use the same optimisation profile: TensorRT 10+
    ("The default value for this flag is on in TensorRT 10.0", trt_docs.py PreviewFeature), or an
    8.6 engine whose sidecar records PROFILE_SHARING_0806 at build. Unknown (8.x without a sidecar):
    no, the safe answer."""
    return _major(tensorrt_version) >= 10 or bool((sidecar or {}).get("profile_sharing"))


def select_profile(context, profile_index: int, stream_handle: int) -> bool:
    """IExecutionContext.set_optimization_profile_async as a bool. Its docstring says ":returns: True
    if the optimization profile was set successfully", but the binding raises instead of returning
    False: PY_ASSERT_RUNTIME_ERROR(self.setOptimizationProfileAsync(...), "Error in set optimization
    profile async.") (NVIDIA/TensorRT python/src/infer/pyCore.cpp, 8.5.2 through 10.13 and main)."""
    try:
        return bool(context.set_optimization_profile_async(profile_index, stream_handle))
    except RuntimeError:
        return False


class _ProfilePool:
    """The optimisation profiles this model's contexts may take (see the module docstring)."""

    def __init__(self, indices: List[int], shared: bool, limit_message):
        self.indices, self.shared = list(indices), shared
        self._limit_message = limit_message          # (held: {profile: thread name}) -> text
        self._held: Dict[int, str] = {}
        self._lock = threading.Lock()
        # One thread at a time takes a profile, creates its context and selects the profile: before
        # 10.0 the engine's first context holds profile 0 implicitly until it selects another
        # ("The first execution context created will call setOptimizationProfile(0) implicitly",
        # NvInferRuntime.h 8.5), so a thread selecting 0 meanwhile would be refused.
        self.setup = threading.Lock()

    def acquire(self) -> int:
        if self.shared:
            return self.indices[0]
        with self._lock:
            free = [index for index in self.indices if index not in self._held]
            if not free:
                raise ContextLimitError(self._limit_message(dict(self._held)))
            self._held[free[0]] = threading.current_thread().name
            return free[0]

    def release(self, index: int) -> None:
        if not self.shared:
            with self._lock:
                self._held.pop(index, None)


class _DeviceBuffer:
    """A page-locked host array and a device allocation of the same capacity (bytes)."""

    def __init__(self, cuda, dtype: np.dtype, n_elements: int):
        self.dtype = np.dtype(dtype)
        self.capacity = max(1, n_elements)
        self.host = cuda.pagelocked_empty(self.capacity, self.dtype)
        try:
            self.device = cuda.mem_alloc(self.capacity * self.dtype.itemsize)
        except BaseException:                        # out of GPU memory: no page-locked memory left behind
            self.host.base.free()
            raise

    def view(self, shape) -> np.ndarray:
        return self.host[:int(np.prod(shape))].reshape(shape)

    def free(self) -> None:
        """Free both now (pycuda: an array from pagelocked_empty has a PagelockedHostAllocation as
        its .base, whose free() releases the page-locked memory), with the context current."""
        self.device.free()
        self.host.base.free()


@dataclass(frozen=True)
class DeviceInput:
    """One engine input buffer of the calling thread, sized for `shape`.

    ptr: device address (int) of a C-contiguous (shape) array of `dtype` (float32 or float16:
    the engine's own input type). stream: the pycuda Stream the engine runs on in this thread;
    enqueue the work that fills ptr on it (stream.handle is the cudaStream_t) and the engine
    runs after it. Valid until this thread asks for larger shapes or the model is closed.
    """
    name: str
    ptr: int
    shape: tuple
    dtype: np.dtype
    stream: object

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


class _ThreadState:
    """Everything one thread needs to run the engine: TensorRT contexts are not thread-safe."""

    def __init__(self, cuda, engine, pool: _ProfilePool, new_stream):
        self.prepared: Optional[dict] = None         # shapes device_inputs() set up, for execute_prefilled
        self.pool = pool
        self.context = None
        self.stream = None
        with pool.setup:                             # profile, context and selection as one step
            self.profile = pool.acquire()            # ContextLimitError before anything is allocated
            try:
                self.stream = new_stream()
                self.context = engine.create_execution_context()
                if self.context is None:
                    raise ModelLoadError("TensorRT could not create an execution context (out of GPU memory?).")
                # always explicit: before 10.0 only an engine's first context gets profile 0 implicitly
                # ("For other execution contexts, setOptimizationProfile() must be called with unique
                # profile index", NvInferRuntime.h 8.5); the same stream as every enqueue that follows
                if not select_profile(self.context, self.profile, self.stream.handle):
                    raise ContextLimitError(f"TensorRT refused optimisation profile {self.profile} for this thread's "
                                            f"execution context: another live execution context of this engine, "
                                            f"not made by this model, holds it (TensorRT < 10 without profile "
                                            f"sharing). Free that context, or rebuild the engine with more "
                                            f"profiles: `build-engine ... --contexts N`.")
            except BaseException:
                self.context = self.stream = None
                pool.release(self.profile)
                raise
        self.events = [cuda.Event() for _ in range(4)]    # start, after H2D, after compute, after D2H
        self.buffers: Dict[str, _DeviceBuffer] = {}
        self.graphs: Dict[tuple, CudaGraph] = {}     # at most one: for the shapes the context holds now
        self.no_graph: set = set()                   # input shapes whose capture failed: plain enqueue
        self.warm: Optional[tuple] = None            # shapes of the last plain enqueue, none changed since
        self.bound_shapes: Optional[dict] = None     # input shapes the context holds now
        self.bound_outs: Optional[dict] = None       # their outputs {name: (buffer, shape)}
        self.addresses: Dict[str, int] = {}          # tensor -> device address the context holds

    def buffer(self, cuda, name: str, dtype, shape) -> _DeviceBuffer:
        """The buffer for `name`, grown (and graphs dropped: addresses change) when too small. The
        old buffer leaves `buffers` before it is freed: if the larger allocation fails (pycuda's
        MemoryError), no freed buffer stays behind to be freed again (pycuda's free() of a freed
        allocation throws) by the next call or by close()."""
        n = int(np.prod(shape))
        current = self.buffers.get(name)
        if current is None or current.capacity < n:
            if current is not None:
                del self.buffers[name]
                self.drop_graphs()
                current.free()
            self.buffers[name] = _DeviceBuffer(cuda, dtype, n)
        return self.buffers[name]

    def drop_graphs(self) -> None:
        for graph in self.graphs.values():
            graph.destroy()
        self.graphs.clear()

    def free(self) -> None:
        """Free everything with its CUDA context (the caller holds it current, in any thread):
        graphs, buffers, the execution context (its profile is free again after it), the events
        and the stream (pycuda destroys them when the last reference goes, which is here)."""
        if self.stream is None:
            return
        self.drop_graphs()
        for buf in self.buffers.values():
            buf.free()
        self.buffers.clear()
        self.bound_shapes = self.bound_outs = None
        self.context = None
        self.pool.release(self.profile)
        self.events = []
        self.stream = None


def check_host_inputs(host_inputs: Optional[Mapping[str, np.ndarray]], shapes: Mapping[str, tuple]) -> dict:
    """execute_prefilled's host_inputs check (shapes: validate_shapes' result) -> a dict copy.

    Every mask/presence input (MASK_NAMES) must be there: they are always built on the host, and
    one left out would make the engine run on whatever its device buffer held from an earlier call.
    Each array must be float32 of its shape in `shapes`, finite, masks/presence only 0 and 1.
    """
    host_inputs = dict(host_inputs or {})
    missing = [name for name in MASK_NAMES if name in shapes and name not in host_inputs]
    if missing:
        raise RuntimeInputError(f"host_inputs must hold {', '.join(MASK_NAMES)} (built on the host, float32 1/0); "
                                f"missing {', '.join(missing)}. Without them the engine would run on stale "
                                f"device data. Pass them, e.g. host_inputs={{'presence': np.array([[1, 1]], "
                                f"np.float32), ...}}.")
    for name, value in host_inputs.items():
        if name not in shapes:
            raise RuntimeInputError(f"host_inputs names {name!r}, not an input of this model ({', '.join(shapes)}).")
        if not isinstance(value, np.ndarray) or value.dtype != np.float32 or value.shape != shapes[name]:
            raise RuntimeInputError(f"host_inputs[{name!r}] must be float32 {shapes[name]} (its shape in "
                                    f"shapes); got {getattr(value, 'dtype', type(value).__name__)} "
                                    f"{getattr(value, 'shape', '')}.")
        if not np.isfinite(value).all() or (name in MASK_NAMES and not ((value == 0.0) | (value == 1.0)).all()):
            raise RuntimeInputError(f"host_inputs[{name!r}] must be finite"
                                    f"{' and hold only 0 and 1' if name in MASK_NAMES else ''}.")
    return host_inputs


class TensorRTModel(Model):
    """A serialized TensorRT engine (MODEL.engine + MODEL.engine.json sidecar).

    device: CUDA device index. profile: the optimisation profile whose shapes the model serves
    (contexts use it, or on TensorRT < 10 without profile sharing one of the identical profiles,
    see the module docstring). use_cuda_graph: capture execute_async_v3 in a CUDA graph once a
    thread calls twice in a row with the same input shapes, and replay it while they stay the same
    (worth it for fixed-shape streaming windows; a shape change drops the graph, as TensorRT then
    updates the context's layer resources); shapes whose capture fails run without a graph, with a
    RuntimeWarning. verify_sidecar: refuse engines
    built for another TensorRT/GPU or changed since the build (keep True unless you built the
    engine yourself with trtexec).

    Threads: each thread gets its own execution context, stream and buffers on first use. When a
    new thread's state is created, the states of threads that have ended are freed (so a server
    with a thread per request does not grow); the rest are freed by close(). Threads Python did
    not start (C callbacks) never count as ended: their states live until close(). On TensorRT
    < 10 without profile sharing, at most `max_threads` threads hold a state at once; one more
    gets ContextLimitError (build-engine --contexts N builds an engine for N).
    Device-filled inputs: active(), device_inputs(shapes), execute_prefilled(shapes, host_inputs).
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
        self.engine = None
        self.gpu = PrimaryContext(device)
        try:
            self._load(path, trt, profile, use_cuda_graph, verify_sidecar)
        except BaseException as error:
            # a failed load must not keep the primary context retained: drop the engine (if any)
            # with the context current, then our reference on the context. The traceback's frames
            # (_load, _io_specs) may still reference the engine: clear them first, so the engine
            # is destroyed here, with the context current, not later without one.
            traceback.clear_frames(error.__traceback__)
            try:
                with self.gpu.active():
                    self.engine = self.runtime = None
            finally:
                self.gpu.release()
            raise

    def _load(self, path: Path, trt, profile: int, use_cuda_graph: bool, verify_sidecar: bool) -> None:
        self.cuda = self.gpu.cuda
        engine_bytes = path.read_bytes()
        self.sidecar = None
        if verify_sidecar:
            self.sidecar = check_sidecar(path, engine_bytes, tensorrt_version=trt.__version__,
                                         gpu_name=self.gpu.name, compute_capability=self.gpu.compute_capability,
                                         sm_count=self.gpu.sm_count, memory_mib=self.gpu.memory_mib)
        self.logger = trt_logger(trt)
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
        self._pool = _ProfilePool(self._profiles_like(profile), profiles_shared(trt.__version__, self.sidecar),
                                  self._limit_message)
        self._states = PerThread(lambda: _ThreadState(self.cuda, self.engine, self._pool, self.gpu.new_stream))

    @property
    def max_threads(self) -> Optional[int]:
        """How many threads may hold an execution context at once (None: no limit)."""
        return None if self._pool.shared else len(self._pool.indices)

    def _profiles_like(self, profile: int) -> List[int]:
        """`profile` and every other profile with the same min/opt/max shapes for all inputs."""
        def shapes(index):
            return [tuple(tuple(dims) for dims in self.engine.get_tensor_profile_shape(name, index))
                    for name in self.inputs]
        wanted = shapes(profile)
        return [profile] + [index for index in range(self.engine.num_optimization_profiles)
                            if index != profile and shapes(index) == wanted]

    def _limit_message(self, held: Dict[int, str]) -> str:
        n = len(held)
        command = re.sub(r" --contexts \d+", "", rebuild_command(self.path, self.sidecar)) + f" --contexts {2 * n}"
        return (f"{self.path}: {n} threads already hold an execution context, one per optimisation profile "
                f"({', '.join(f'profile {k}: {name}' for k, name in sorted(held.items()))}), and TensorRT "
                f"{self.trt.__version__} without profile sharing needs a separate profile for each context in "
                f"concurrent use. Call predict() from at most {n} threads (a thread's context is freed when the "
                f"thread ends, or by close()), or rebuild the engine for more: `{command}` (on TensorRT 8.6 "
                f"build-engine enables profile sharing instead).")

    def _io_specs(self):
        # self.engine, never a local alias: a local would keep the engine alive in a traceback
        trt = self.trt
        inputs: Dict[str, TensorSpec] = {}
        outputs: Dict[str, TensorSpec] = {}
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            dims = tuple(self.engine.get_tensor_shape(name))
            axes = AXIS_NAMES.get(name, ())
            shape = tuple(d if d >= 0 else (axes[i] if i < len(axes) else "?") for i, d in enumerate(dims))
            # pybind11 enum member compared by name: TensorIOMode.INPUT/OUTPUT exist in 8.5-11.4, but the
            # member names are not visible to ../shared/tools/trt_api_check.py in the compiled bindings.
            if self.engine.get_tensor_mode(name).name == "INPUT":
                low, opt, high = self.engine.get_tensor_profile_shape(name, self.profile)
                inputs[name] = TensorSpec(name, dtype, shape, min_shape=tuple(low), max_shape=tuple(high),
                                          opt_shape=tuple(opt))
            else:
                outputs[name] = TensorSpec(name, dtype, shape)
        return inputs, outputs

    def active(self):
        """Context manager: this model's primary CUDA context current in the calling thread (for
        allocations and kernel launches beside device_inputs / execute_prefilled)."""
        return self.gpu.active()

    def _state(self) -> _ThreadState:
        """This thread's state (primary context current); see PerThread for when states are freed."""
        return self._states.get()

    def _prepare(self, state: _ThreadState, shapes: Dict[str, tuple]) -> Dict[str, tuple]:
        """Set the input shapes, size every buffer, bind the addresses. -> {output: (buffer, shape)}.
        Only what changed is set again: the context keeps shapes and addresses between calls
        (Polygraphy's TrtRunner skips them the same way)."""
        if state.bound_shapes == shapes:
            return state.bound_outs
        # TensorRT updates the context's layer resources at the first enqueue after a shape change
        # (NvInferRuntime.h 8.5/8.6: "will trigger layer resource updates on the next call of
        # enqueueV2() ... if the shapes are different than the previous set shapes"): a graph
        # captured at other shapes must never be replayed after that.
        state.drop_graphs()
        state.warm = None
        cuda, trt_context = self.cuda, state.context
        before, state.bound_shapes = state.bound_shapes or {}, None      # nothing trusted until all set
        for name, shape in shapes.items():
            if before.get(name) != shape and not trt_context.set_input_shape(name, shape):
                raise RuntimeInputError(f"TensorRT rejected shape {shape} for {name} on optimisation profile "
                                        f"{state.profile} (profile {self.inputs[name].describe()}).")
        for name, shape in shapes.items():
            state.buffer(cuda, name, self.inputs[name].dtype, shape)
        outs = {}
        for name, spec in self.outputs.items():
            shape = tuple(trt_context.get_tensor_shape(name))
            outs[name] = (state.buffer(cuda, name, spec.dtype, shape), shape)
        # addresses after every (re)allocation above
        for name in list(shapes) + list(outs):
            address = int(state.buffers[name].device)
            if state.addresses.get(name) != address:
                if not trt_context.set_tensor_address(name, address):
                    raise RuntimeError(f"TensorRT refused the device address of {name} (see the TensorRT log above).")
                state.addresses[name] = address
        state.bound_shapes, state.bound_outs = dict(shapes), outs
        return outs

    def _run(self, state: _ThreadState, shapes: Dict[str, tuple], outs: Dict[str, tuple], host_names):
        """Copy the host-staged inputs `host_names`, run, copy the outputs back, synchronise."""
        cuda, stream = self.cuda, state.stream
        start, after_h2d, after_compute, after_d2h = state.events
        start.record(stream)
        for name in host_names:
            buf = state.buffers[name]
            cuda.memcpy_htod_async(buf.device, buf.view(shapes[name]), stream)
        after_h2d.record(stream)
        self._enqueue(state, tuple(shapes[name] for name in self.inputs))
        after_compute.record(stream)
        for buf, shape in outs.values():
            cuda.memcpy_dtoh_async(buf.view(shape), buf.device, stream)
        after_d2h.record(stream)
        after_d2h.synchronize()
        timings = {"h2d": after_h2d.time_since(start), "compute": after_compute.time_since(after_h2d),
                   "d2h": after_d2h.time_since(after_compute)}
        outputs = {name: buf.view(shape).astype(np.float32) for name, (buf, shape) in outs.items()}
        return outputs, timings

    def _execute(self, arrays: Dict[str, np.ndarray]):
        shapes = {name: arrays[name].shape for name in self.inputs}
        with self.gpu.active():
            state = self._state()
            state.prepared = None                  # host inputs overwrite any device-filled ones
            outs = self._prepare(state, shapes)
            for name, array in arrays.items():
                np.copyto(state.buffers[name].view(array.shape), array, casting="same_kind")
            return self._run(state, shapes, outs, list(self.inputs))

    # ---------------------------------------------------------------------------------------
    # device-filled inputs

    def device_inputs(self, shapes: Mapping[str, tuple]) -> Dict[str, DeviceInput]:
        """The calling thread's input buffers sized for `shapes` ({input name: shape} for all five
        inputs, checked against the engine's profile), allocated or grown as predict() does.

        Fill the ones you produce on the GPU (e.g. with edge_ladder.kernels.log_mel_device /
        face_crops_device) on DeviceInput.stream, in the buffer's dtype (float32 or float16: the
        engine's input type), then call execute_prefilled(shapes, host_inputs=...) from the same
        thread. Padding is not cleared: write every element of what you fill.
        """
        shapes = validate_shapes(shapes, self.inputs)
        with self.gpu.active():
            state = self._state()
            self._prepare(state, shapes)
            state.prepared = dict(shapes)
            return {name: DeviceInput(name, int(state.buffers[name].device), shape, self.inputs[name].dtype,
                                      state.stream)
                    for name, shape in shapes.items()}

    def execute_prefilled(self, shapes: Mapping[str, tuple], host_inputs: Optional[Mapping[str, np.ndarray]] = None,
                          preprocess_ms: Optional[float] = None) -> Result:
        """Run the engine on inputs already in this thread's device buffers (device_inputs(shapes)),
        copying only `host_inputs` (float32 arrays of their shape in `shapes`) from the host first.
        host_inputs must hold audio_mask, face_mask and presence (checked: a forgotten one would
        run on stale device data); audio / face may come from the device. Same Result as
        predict(); timings 'h2d' covers only host_inputs."""
        start = time.perf_counter()
        shapes = validate_shapes(shapes, self.inputs)
        host_inputs = check_host_inputs(host_inputs, shapes)
        with self.gpu.active():
            state = self._state()
            if state.prepared != shapes:
                raise RuntimeInputError(f"execute_prefilled({shapes}) in this thread needs device_inputs() with the "
                                        f"same shapes first (and no predict() in between); the buffers hold "
                                        f"{state.prepared or 'nothing device-filled'}.")
            outs = self._prepare(state, shapes)           # same shapes: no reallocation, data kept
            for name, value in host_inputs.items():
                np.copyto(state.buffers[name].view(value.shape), value, casting="same_kind")
            validated = time.perf_counter()
            outputs, timings = self._run(state, shapes, outs, list(host_inputs))
        timings = {"validate": (validated - start) * 1e3, **timings, "total": (time.perf_counter() - start) * 1e3}
        if preprocess_ms is not None:
            timings = {"preprocess": float(preprocess_ms), **timings}
            timings["total"] += float(preprocess_ms)
        return make_result(outputs["logits"], outputs["probs"], timings, self.backend)

    def _enqueue(self, state: _ThreadState, shapes_key: tuple) -> None:
        """Plain execute_async_v3, or with use_cuda_graph a graph of it. A graph is captured on the
        second consecutive call at the same shapes: the first call after a shape change runs plain,
        which is the enqueue TensorRT needs before a capture ("Please call enqueueV2() once before
        capturing the graph", NvInferRuntime.h 8.5; trtexec does the same). `_prepare` drops the
        graph when the shapes change, so alternating shapes run plain, never a stale graph."""
        handle = state.stream.handle
        graph = state.graphs.get(shapes_key)
        if graph is not None:
            graph.launch(handle)
            return
        if not self.use_cuda_graph or shapes_key in state.no_graph or state.warm != shapes_key:
            self._enqueue_plain(state)
            state.warm = shapes_key
            return
        graph = CudaGraph()
        if not graph.capture(handle, lambda: state.context.execute_async_v3(handle)):
            state.no_graph.add(shapes_key)
            warnings.warn(f"{self.path}: CUDA graph capture failed for input shapes {shapes_key} "
                          f"({graph.failure}); these shapes run without a graph.", RuntimeWarning, stacklevel=4)
            self._enqueue_plain(state)                # nothing of the capture ran: this call's run
            return
        state.graphs[shapes_key] = graph
        graph.launch(handle)

    def _enqueue_plain(self, state: _ThreadState) -> None:
        if not state.context.execute_async_v3(state.stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log above).")

    def close(self) -> None:
        """Free every thread's state, the engine and the primary context, from any thread. Calls
        in flight in other threads are waited for; calls that start meanwhile, or after, get
        ModelLoadError ("closed"). Idempotent."""
        if getattr(self, "engine", None) is None:
            return

        def free():
            try:
                self._states.free_all()
            finally:
                self.engine = None
                self.runtime = None
        self.gpu.close(free)
