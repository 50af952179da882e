"""pycuda with the device's PRIMARY context, pushed and popped around every call.

pycuda.autoinit creates a fresh (non-primary) context that is current only in the importing
thread; TensorRT, ONNX Runtime's CUDA provider and the CUDA runtime API all use the primary
context. So we retain the primary context once and push/pop it around every native call, from
whichever thread makes it. Nothing here runs at import: pycuda is imported on first use.

Streams are non-blocking (CU_STREAM_NON_BLOCKING, `new_stream`): a blocking stream
synchronises with the legacy default stream, so another thread's synchronous pycuda copy
(memcpy_htod / memcpy_dtoh run on the legacy stream) during a CUDA-graph capture fails with
CUDA_ERROR_STREAM_CAPTURE_IMPLICIT (906) and breaks the capture (cuda.h: "When a blocking stream
is capturing, the legacy stream is in an unusable state until the blocking stream capture is
terminated"). The price: work on the legacy stream is not ordered before work on ours; enqueue
everything a model reads on its stream.

CUDA graphs go through the driver API (libcuda via ctypes: cuStreamBeginCapture_v2,
cuStreamEndCapture, cuGraphInstantiateWithFlags, cuGraphLaunch) on pycuda's stream handle,
because that C API is the same on every CUDA 11.4-13 Jetson.
"""
from __future__ import annotations

import contextlib
import ctypes
import threading
from types import ModuleType
from typing import Callable, Generic, List, Optional, Tuple, TypeVar

from .._deps import require
from .base import ModelLoadError

_init_lock = threading.Lock()
_initialised = False
CU_STREAM_NON_BLOCKING = 1              # cuda.h CUstream_flags: no implicit sync with the legacy stream
CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16


def driver() -> ModuleType:
    """pycuda.driver, initialised once (cuInit), never pycuda.autoinit."""
    global _initialised
    require("pycuda")
    cuda = require("pycuda.driver")
    with _init_lock:
        if not _initialised:
            cuda.init()
            _initialised = True
    return cuda


class PrimaryContext:
    """The primary CUDA context of one device, usable from any thread:

        ctx = PrimaryContext(0)
        with ctx.active():
            ...  # allocations, copies, TensorRT calls
        ctx.close(free)   # once, from any thread: waits for other threads' active() blocks,
                          # refuses new ones, runs free() with the context current, releases it

    Identity for the engine sidecar: name, compute_capability, sm_count, memory_mib (every Orin
    module reports the name "Orin"; the SM count and memory tell an AGX 64 GB from an NX 8 GB).
    """

    def __init__(self, device_index: int = 0):
        cuda = driver()
        count = cuda.Device.count()
        if not 0 <= device_index < count:
            raise ModelLoadError(f"CUDA device {device_index} does not exist; this machine has {count} "
                                 f"device(s) (indices 0..{count - 1}).")
        self.cuda = cuda
        self.device_index = device_index
        self.device = cuda.Device(device_index)
        self.context = self.device.retain_primary_context()
        self._released = False
        self._release_lock = threading.Lock()
        self._users = threading.Condition()          # guards _active / _closing
        self._active = 0                             # active() blocks open now, all threads
        self._closing = False
        self._depth = threading.local()              # this thread's open active() blocks

    @property
    def name(self) -> str:
        return self.device.name()

    @property
    def compute_capability(self) -> tuple:
        return tuple(self.device.compute_capability())

    @property
    def sm_count(self) -> int:
        return int(self.device.get_attribute(self.cuda.device_attribute.MULTIPROCESSOR_COUNT))

    @property
    def memory_mib(self) -> int:
        return int(self.device.total_memory()) >> 20

    def new_stream(self):
        """A non-blocking pycuda Stream (see the module docstring); call inside active()."""
        return self.cuda.Stream(flags=CU_STREAM_NON_BLOCKING)

    @contextlib.contextmanager
    def active(self):
        """Make the primary context current in this thread for the block, then restore. Refused
        (ModelLoadError) once close() has begun."""
        with self._users:
            if self._released or self._closing:
                raise ModelLoadError("this model was closed; load it again.")
            self._active += 1
        self._depth.n = getattr(self._depth, "n", 0) + 1
        try:
            self.context.push()
            try:
                yield self
            finally:
                if not self._released:               # closed inside this block: release() left nothing to pop
                    self.cuda.Context.pop()
        finally:
            self._depth.n -= 1
            with self._users:
                self._active -= 1
                self._users.notify_all()

    def close(self, free: Optional[Callable[[], None]] = None) -> None:
        """Shut down from any thread: new active() blocks are refused from now on, the open ones of
        other threads (calls in flight) are waited for, then free() runs with the context current
        (per-thread states, engines: whatever must go while it exists) and the context is released
        (`release`). A thread that calls close() inside its own active() block is not waited for.
        Later calls, and calls while another thread closes, return at once."""
        with self._users:
            if self._released or self._closing:
                return
            self._closing = True
            own = getattr(self._depth, "n", 0)
            self._users.wait_for(lambda: self._active <= own)
        try:
            if free is not None:
                self.context.push()
                try:
                    free()
                finally:
                    self.cuda.Context.pop()
        finally:
            self.release()

    def release(self) -> None:
        """Drop our reference to the primary context, exactly once, from any thread.

        pycuda's Context.detach() alone does not do this for a retained primary context
        (pycuda src/cpp/cuda.hpp, context::detach and primary_context::detach_internal): when the
        context is not current it pushes it and calls cuDevicePrimaryCtxRelease, which never
        pops ("unlike cuCtxDestroy() this method does not pop the context from stack in any
        circumstances"), so the context stays current in this thread; from a thread other than
        the one that retained it, it releases nothing. So: push it (pycuda now sees it current,
        in any thread), pop it off the driver's stack ourselves, then detach(), which takes the
        "current" branch: cuDevicePrimaryCtxRelease, pycuda's stack entry dropped, and whatever
        pycuda context was current before re-pushed. Later calls are no-ops."""
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self.context.push()
        popped = ctypes.c_void_p()
        _check(_cuda_lib("releasing the primary context").cuCtxPopCurrent_v2(ctypes.byref(popped)),
               "cuCtxPopCurrent_v2")
        self.context.detach()


# ---------------------------------------------------------------------------------------------
# per-thread device resources

Freeable = TypeVar("Freeable")


class PerThread(Generic[Freeable]):
    """One object per thread (an execution context, scratch buffers: anything with free()),
    made by `make()` on the thread's first get(). When a new thread's object is made, the
    objects of threads that have ended are freed first (a server with a thread per request
    does not grow); the rest are freed by free_all(). Threads Python did not start (C
    callbacks) never count as ended. The caller holds the CUDA context current around get()
    and free_all(): both may free device memory.
    """

    def __init__(self, make: Callable[[], Freeable]):
        self._make = make
        self._local = threading.local()
        self._lock = threading.Lock()
        self._owned: List[Tuple[threading.Thread, Freeable]] = []

    def get(self) -> Freeable:
        """The calling thread's object, made on first use."""
        item = getattr(self._local, "item", None)
        if item is None:
            with self._lock:
                alive = []
                for thread, old in self._owned:
                    if thread.is_alive():
                        alive.append((thread, old))
                    else:
                        old.free()
                self._owned = alive
            item = self._local.item = self._make()
            with self._lock:
                self._owned.append((threading.current_thread(), item))
        return item

    def owners(self) -> List[threading.Thread]:
        """The threads whose objects are held now (ended ones included until the next new thread)."""
        with self._lock:
            return [thread for thread, _ in self._owned]

    def free_all(self) -> None:
        """Free every thread's object; one that fails to free does not keep the others (the first
        error is raised after all were tried)."""
        with self._lock:
            owned, self._owned = self._owned, []
        errors = []
        for _, item in owned:
            try:
                item.free()
            except Exception as error:              # raised below, after the rest are freed
                errors.append(error)
        if errors:
            raise errors[0]


# ---------------------------------------------------------------------------------------------
# CUDA graphs through the driver API

_CAPTURE_MODE_THREAD_LOCAL = 1   # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
_libcuda: Optional[ctypes.CDLL] = None


def _cuda_lib(purpose: str) -> ctypes.CDLL:
    """libcuda (the driver API), loaded once; `purpose` names what needs it in the error."""
    global _libcuda
    if _libcuda is None:
        for name in ("libcuda.so.1", "libcuda.so"):
            try:
                _libcuda = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise ModelLoadError(f"{purpose} needs the CUDA driver library libcuda.so.1, which was not found "
                                 f"(install the NVIDIA driver / JetPack, or run on the GPU machine).")
    return _libcuda


def _check(result: int, call: str) -> None:
    if result != 0:
        raise RuntimeError(f"{call} failed with CUDA driver error {result}")


def memset_async(pointer: int, nbytes: int, stream_handle: int, value: int = 0) -> None:
    """Set `nbytes` bytes at device address `pointer` to `value`, ordered on the stream
    (cuMemsetD8Async, the same in every CUDA 11.4-13 driver). Context must be current."""
    lib = _cuda_lib("memset_async (the CUDA front-end clearing engine inputs)")
    _check(lib.cuMemsetD8Async(ctypes.c_ulonglong(int(pointer)), ctypes.c_ubyte(value), ctypes.c_size_t(nbytes),
                               ctypes.c_void_p(stream_handle or None)), "cuMemsetD8Async")


class CudaGraph:
    """Capture work enqueued on a stream once, replay it with one launch.

        graph = CudaGraph()
        if graph.capture(stream_handle, lambda: context.execute_async_v3(stream_handle)):
            graph.launch(stream_handle)
        else:
            ...  # graph.failure says why; run without a graph

    Capture on a non-blocking stream (PrimaryContext.new_stream). The primary context must be
    current (PrimaryContext.active()) for every call.
    """

    def __init__(self):
        self._graph = ctypes.c_void_p()
        self._exec = ctypes.c_void_p()
        self.failure: Optional[str] = None

    def capture(self, stream_handle: int, enqueue: Callable[[], bool]) -> bool:
        """Record what enqueue() puts on the stream (nothing runs). True when the graph is ready
        to launch; False, with `failure` set, when enqueue() returned False or the driver refused
        the capture (CUDA docs: an invalid operation during capture invalidates it and
        cuStreamEndCapture returns an error). The capture is always ended, so the stream stays
        usable either way."""
        lib = _cuda_lib("CUDA graph capture (use_cuda_graph)")
        stream = ctypes.c_void_p(stream_handle)
        _check(lib.cuStreamBeginCapture_v2(stream, ctypes.c_int(_CAPTURE_MODE_THREAD_LOCAL)), "cuStreamBeginCapture_v2")
        try:
            enqueued = enqueue()
        except BaseException:
            lib.cuStreamEndCapture(stream, ctypes.byref(self._graph))
            self.destroy()
            raise
        ended = lib.cuStreamEndCapture(stream, ctypes.byref(self._graph))
        if not enqueued:
            self.failure = "the enqueue call returned False inside the capture"
        elif ended != 0:
            self.failure = f"cuStreamEndCapture failed with CUDA driver error {ended}"
        else:
            instantiated = lib.cuGraphInstantiateWithFlags(ctypes.byref(self._exec), self._graph, ctypes.c_ulonglong(0))
            if instantiated != 0:
                self.failure = f"cuGraphInstantiateWithFlags failed with CUDA driver error {instantiated}"
        if self.failure is not None:
            self.destroy()
            return False
        return True

    def launch(self, stream_handle: int) -> None:
        _check(_cuda_lib("CUDA graph launch").cuGraphLaunch(self._exec, ctypes.c_void_p(stream_handle)), "cuGraphLaunch")

    def destroy(self) -> None:
        lib = _cuda_lib("CUDA graph destroy")
        if self._exec:
            lib.cuGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph:
            lib.cuGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()
