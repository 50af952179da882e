"""Stand-ins for TensorRT 8.5 / 8.6 / 10.3 / 11.4, pycuda and the CUDA driver, so that
`build-engine` and the TensorRT runtime run end to end on a CPU.

NOT TensorRT and NOT a GPU. Each stand-in behaviour encodes one documented fact of the real thing
and names where to check it (`python3 ../shared/tools/trt_docs.py NAME`, a header, or pycuda's
src/cpp/cuda.hpp); everything else is the plainest thing that lets the code under test run.
The engine "computes" by running the ONNX graph it was built from through ONNX Runtime, reading
its inputs from, and writing its outputs to, the stand-in device memory at the addresses bound
with set_tensor_address, so wrong bindings give wrong numbers.

    standin = install(monkeypatch, "8.5.2.2")     # sys.modules tensorrt / pycuda / pycuda.driver
    standin.driver                                # device memory, context stacks, streams, counts
    standin.trt                                   # the tensorrt stand-in module
"""
from __future__ import annotations

import base64
import enum
import itertools
import json
import sys
import threading
import types
import weakref
from typing import Callable, Dict, List, Optional

import numpy as np

ORIN = {"name": "Orin", "cc": (8, 7), "sm_count": 16, "memory_mib": 62841}   # AGX Orin 64 GB
PLAN_MAGIC = b"STANDIN-PLAN\n"
CACHE_MAGIC = b"STANDIN-TIMING-CACHE\n"


class CudaError(RuntimeError):
    """pycuda._driver.Error / LogicError stand-in."""


class CudaMemoryError(CudaError):
    """pycuda._driver.MemoryError: CUDA_ERROR_OUT_OF_MEMORY (src/wrapper/wrap_cudadrv.cpp translates
    it to MemoryError, a subclass of pycuda's Error)."""


# =============================================================================================
# The CUDA driver


class Driver:
    """One device's driver state: memory, per-thread context stacks, streams and their captures."""

    def __init__(self, name="Orin", cc=(8, 7), sm_count=16, memory_mib=62841):
        self.name, self.cc, self.sm_count, self.memory_mib = name, tuple(cc), sm_count, memory_mib
        self.primary_retains = 0                      # cuDevicePrimaryCtxRetain minus ...Release
        self.primary_handle = 0xC0DE
        self._threads = threading.local()
        self.lock = threading.RLock()
        self.memory: Dict[int, np.ndarray] = {}       # base address -> bytes (uint8)
        self._next_address = itertools.count(0x10000, 0x100000)
        self.streams = weakref.WeakValueDictionary()  # live streams by handle
        self.live = {"stream": 0, "event": 0, "device": 0, "host": 0}
        self.leaked: List[str] = []                   # objects pycuda could not clean up
        self.captures: Dict[int, Optional[list]] = {}  # stream handle -> recorded ops (None: invalidated)
        self.graphs: Dict[int, list] = {}
        self._graph_ids = itertools.count(1)
        self.on_capture_begin: Optional[Callable[[], None]] = None   # test hook
        self.on_execute: Optional[Callable[[], None]] = None         # test hook: inside execute_async_v3
        self.on_context_created: Optional[Callable[[], None]] = None  # test hook: create_execution_context
        self.memory_limit: Optional[int] = None       # device bytes; beyond: CUDA_ERROR_OUT_OF_MEMORY
        self._allocated: Dict[int, int] = {}

    def device_info(self, device: int = 0) -> dict:       # export.engine.cuda_device_info's answer
        return {"gpu_name": self.name, "compute_capability": f"{self.cc[0]}.{self.cc[1]}",
                "sm_count": self.sm_count, "memory_mib": self.memory_mib, "cuda_version": "12.6"}

    def device_key(self) -> str:
        return f"{self.name}/sm{self.cc[0]}{self.cc[1]}/{self.sm_count}SM/{self.memory_mib}MiB"

    # per-thread CUDA context stack (cuCtxPushCurrent / cuCtxPopCurrent)
    def stack(self) -> list:
        if not hasattr(self._threads, "stack"):
            self._threads.stack = []
        return self._threads.stack

    # memory
    def alloc(self, nbytes: int) -> int:
        with self.lock:
            if self.memory_limit is not None and sum(self._allocated.values()) + nbytes > self.memory_limit:
                raise CudaMemoryError("cuMemAlloc failed: out of memory")
            address = next(self._next_address)
            self.memory[address] = np.zeros(max(nbytes, 1), np.uint8)
            self._allocated[address] = nbytes
            self.live["device"] += 1
            return address

    def free(self, address: int) -> None:
        with self.lock:
            del self.memory[address]
            del self._allocated[address]
            self.live["device"] -= 1

    def region(self, address: int, nbytes: int) -> np.ndarray:
        with self.lock:
            for base, block in self.memory.items():
                if base <= address and address + nbytes <= base + block.size:
                    return block[address - base:address - base + nbytes]
        raise CudaError(f"cuMemcpy: {nbytes} bytes at {address:#x} are not inside one device allocation "
                        f"(CUDA_ERROR_INVALID_VALUE)")

    # streams and captures
    def enqueue(self, stream_handle: Optional[int], op: Callable[[], None]) -> None:
        """Run `op` now, or record it when its stream is capturing (nothing runs in a capture)."""
        if stream_handle in self.captures:
            if self.captures[stream_handle] is not None:
                self.captures[stream_handle].append(op)
            return
        if not stream_handle:
            self.legacy_stream_use("an operation on the legacy default stream")
        op()

    def legacy_stream_use(self, what: str) -> None:
        """Models cuda.h (cuStreamIsCapturing): "When a blocking stream is capturing, the legacy
        stream is in an unusable state until the blocking stream capture is terminated", failing
        with CUDA_ERROR_STREAM_CAPTURE_IMPLICIT (906) -- and, per the CUDA programming guide, an
        invalid operation during a capture invalidates that capture. Non-blocking streams
        (CU_STREAM_NON_BLOCKING) do not synchronise with the legacy stream and are unaffected."""
        with self.lock:
            blocking = [handle for handle in self.captures if self.streams[handle].flags == 0]
            for handle in blocking:
                self.captures[handle] = None
        if blocking:
            raise CudaError(f"{what} failed: CUDA_ERROR_STREAM_CAPTURE_IMPLICIT (906): the legacy stream would "
                            f"depend on the capturing blocking stream(s) {blocking}")


# =============================================================================================
# pycuda.driver


def make_pycuda(driver: Driver):
    """(pycuda, pycuda.driver) modules on `driver`."""
    cuda = types.ModuleType("pycuda.driver")
    local = threading.local()                        # pycuda's context_stack, per thread

    def pycuda_stack() -> list:
        if not hasattr(local, "stack"):
            local.stack = []
        return local.stack

    def current_context(except_=None):
        """cuda.hpp context::current_context: the top valid context; invalid ones are popped."""
        stack = pycuda_stack()
        while stack:
            top = stack[-1]
            if top is not except_ and top.valid:
                return top
            stack.pop()
        return None

    def prepare_context_switch():
        """cuda.hpp: "if (!context_stack::get().empty()) cuCtxPopCurrent" before every push/pop."""
        if pycuda_stack():
            driver.stack().pop()

    class Context:
        """A retained primary context, modelling pycuda src/cpp/cuda.hpp (context::push/pop/detach,
        primary_context::detach_internal). detach(): current -> cuDevicePrimaryCtxRelease, which
        does not pop ("unlike cuCtxDestroy() this method does not pop the context from stack in any
        circumstances", cuda.h); not current, same thread -> cuCtxPushCurrent then release (so it
        stays pushed); another thread -> nothing ("leaked out-of-thread context")."""

        def __init__(self):
            self.valid, self.thread, self.handle = True, threading.current_thread(), driver.primary_handle

        def push(self):
            prepare_context_switch()
            driver.stack().append(self.handle)
            pycuda_stack().append(self)

        @staticmethod
        def pop():
            prepare_context_switch()
            if not pycuda_stack():
                raise CudaError("context::pop failed: cannot pop non-current context")
            pycuda_stack().pop()
            current = current_context()
            if current is not None:
                driver.stack().append(current.handle)

        def _release(self):
            driver.primary_retains -= 1

        def detach(self):
            if not self.valid:
                raise CudaError("context::detach failed: cannot detach from invalid context")
            active = current_context() is self
            if active:
                self._release()
            elif self.thread is threading.current_thread():
                driver.stack().append(self.handle)
                self._release()
            self.valid = False
            if active:
                new_active = current_context(except_=self)
                if new_active is not None:
                    driver.stack().append(new_active.handle)

    def ward_context():
        """cuda.hpp explicit_context_dependent::acquire_context."""
        context = current_context()
        if context is None:
            raise CudaError("explicit_context_dependent failed: no currently active context?")
        return context

    def cleanup(kind: str, ward) -> bool:
        """A context-dependent object's destructor (cuda.hpp scoped_context_activation +
        CUDAPP_CATCH_CLEANUP_ON_DEAD_CONTEXT): freed when its context is current or can be made
        current (same thread); otherwise leaked, with a warning for an out-of-thread context."""
        if ward.valid and (current_context() is ward or ward.thread is threading.current_thread()):
            driver.live[kind] -= 1
            return True
        driver.leaked.append(f"{kind} in {'out-of-thread' if ward.valid else 'dead'} context")
        return False

    class Stream:
        """pycuda Stream(flags=0) -> cuStreamCreate(&s, flags); CU_STREAM_NON_BLOCKING = 1."""
        _handles = itertools.count(0x5000)

        def __init__(self, flags=0):
            self.ward, self.flags, self.handle = ward_context(), int(flags), next(Stream._handles)
            with driver.lock:
                driver.streams[self.handle] = self
                driver.live["stream"] += 1
            weakref.finalize(self, Stream._destroy, self.ward, self.handle)

        @staticmethod
        def _destroy(ward, handle):
            driver.streams.pop(handle, None)
            cleanup("stream", ward)

        def synchronize(self):
            pass                                     # ops ran when enqueued

    class Event:
        def __init__(self, flags=0):
            self.ward = ward_context()
            driver.live["event"] += 1
            weakref.finalize(self, cleanup, "event", self.ward)

        def record(self, stream=None):
            pass

        def synchronize(self):
            pass

        def time_since(self, other) -> float:
            return 0.01

    class DeviceAllocation:
        def __init__(self, nbytes):
            ward_context()
            self.address, self.nbytes, self.freed = driver.alloc(nbytes), nbytes, False

        def __int__(self):
            return self.address

        __index__ = __int__

        def free(self):
            """cuda.hpp device_allocation::free: a second free() throws CUDA_ERROR_INVALID_HANDLE."""
            if self.freed:
                raise CudaError("device_allocation::free failed: invalid resource handle")
            ward_context()
            driver.free(self.address)
            self.freed = True

    class PagelockedHostAllocation:
        """The .base of pagelocked_empty's array (pycuda doc/driver.rst), with free()."""

        def __init__(self, shape, dtype):
            self.ward = ward_context()
            self._array = np.zeros(shape, dtype)
            self.__array_interface__ = self._array.__array_interface__
            self.freed = False
            driver.live["host"] += 1

        def free(self):
            """cuda.hpp pagelocked_host_allocation::free: a second free() throws CUDA_ERROR_INVALID_HANDLE."""
            if self.freed:
                raise CudaError("pagelocked_host_allocation::free failed: invalid resource handle")
            self.freed = True
            driver.live["host"] -= 1

    def pagelocked_empty(shape, dtype, order="C", mem_flags=0):
        array = np.asarray(PagelockedHostAllocation(shape, dtype))
        assert isinstance(array.base, PagelockedHostAllocation)
        return array

    def _address(pointer) -> int:
        return int(pointer)

    def memcpy_htod_async(dest, src, stream=None):
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1).copy()
        driver.enqueue(getattr(stream, "handle", None),
                       lambda: driver.region(_address(dest), data.size).__setitem__(slice(None), data))

    def memcpy_dtoh_async(dest, src, stream=None):
        def copy():
            flat = dest.reshape(-1).view(np.uint8)
            flat[:] = driver.region(_address(src), flat.size)
        driver.enqueue(getattr(stream, "handle", None), copy)

    def memcpy_htod(dest, src):                      # synchronous: the legacy default stream
        driver.legacy_stream_use("cuMemcpyHtoD")
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        driver.region(_address(dest), data.size)[:] = data

    def memcpy_dtoh(dest, src):
        driver.legacy_stream_use("cuMemcpyDtoH")
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = driver.region(_address(src), flat.size)

    class Device:
        @staticmethod
        def count():
            return 1

        def __init__(self, index):
            if index != 0:
                raise CudaError("cuDeviceGet failed: invalid device ordinal")

        def name(self):
            return driver.name

        def compute_capability(self):
            return driver.cc

        def get_attribute(self, attribute):
            return {"MULTIPROCESSOR_COUNT": driver.sm_count}[attribute]

        def total_memory(self):
            return driver.memory_mib << 20

        def retain_primary_context(self):
            driver.primary_retains += 1
            return Context()

    cuda.init = lambda flags=0: None
    cuda.Device, cuda.Context, cuda.Stream, cuda.Event = Device, Context, Stream, Event
    cuda.device_attribute = types.SimpleNamespace(MULTIPROCESSOR_COUNT="MULTIPROCESSOR_COUNT")
    cuda.mem_alloc = DeviceAllocation
    cuda.pagelocked_empty = pagelocked_empty
    cuda.memcpy_htod_async, cuda.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    cuda.memcpy_htod, cuda.memcpy_dtoh = memcpy_htod, memcpy_dtoh
    cuda.Error = cuda.LogicError = CudaError
    cuda.MemoryError = CudaMemoryError
    cuda.pycuda_stack = pycuda_stack                 # for assertions
    package = types.ModuleType("pycuda")
    package.driver = cuda
    return package, cuda


class LibCuda:
    """The driver API calls runtime/cuda.py makes through ctypes, on `driver`."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.captures_begun = 0

    @staticmethod
    def _value(argument) -> int:
        return int(getattr(argument, "value", argument) or 0)

    def cuStreamBeginCapture_v2(self, stream, mode):
        handle = self._value(stream)
        self.driver.captures[handle] = []
        self.captures_begun += 1
        if self.driver.on_capture_begin is not None:
            self.driver.on_capture_begin()
        return 0

    def cuStreamEndCapture(self, stream, graph_ref):
        """cuda.h cuStreamEndCapture: "If the capture was invalidated ... a NULL graph will be
        returned" with CUDA_ERROR_STREAM_CAPTURE_INVALIDATED (901)."""
        ops = self.driver.captures.pop(self._value(stream))
        if ops is None:
            graph_ref._obj.value = None
            return 901
        graph_id = next(self.driver._graph_ids)
        self.driver.graphs[graph_id] = ops
        graph_ref._obj.value = graph_id
        return 0

    def cuGraphInstantiateWithFlags(self, exec_ref, graph, flags):
        exec_ref._obj.value = self._value(graph)
        return 0

    def cuGraphLaunch(self, graph_exec, stream):
        for op in self.driver.graphs[self._value(graph_exec)]:
            self.driver.enqueue(self._value(stream), op)
        return 0

    def cuGraphExecDestroy(self, graph_exec):
        return 0

    def cuGraphDestroy(self, graph):
        self.driver.graphs.pop(self._value(graph), None)
        return 0

    def cuCtxPopCurrent_v2(self, context_ref):
        stack = self.driver.stack()
        if not stack:
            return 201                               # CUDA_ERROR_INVALID_CONTEXT
        context_ref._obj.value = stack.pop()
        return 0

    def cuMemsetD8Async(self, pointer, value, nbytes, stream):
        self.driver.enqueue(self._value(stream), lambda: self.driver.region(
            self._value(pointer), self._value(nbytes)).__setitem__(slice(None), self._value(value)))
        return 0


# =============================================================================================
# tensorrt


class NetworkTensor:
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


class NetworkLayer:
    """An INetworkDefinition layer: type, name, tensors, set_output_type, and precision, None
    until set (ILayer.precision_is_set is False until then)."""

    def __init__(self, layer_type, name, inputs, outputs):
        self.type, self.name, self.precision = layer_type, name, None
        self._inputs, self._outputs, self.output_types = inputs, outputs, {}

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


def _major(version: str) -> int:
    return int(version.split(".")[0])


_ONNX_LAYER = {"Conv": "CONVOLUTION", "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY",
               "Softmax": "SOFTMAX", "ReduceSum": "REDUCE", "ReduceMean": "REDUCE", "ReduceMax": "REDUCE",
               "Add": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Sub": "ELEMENTWISE",
               "Max": "ELEMENTWISE", "Cast": "CAST", "Concatenation": "CONCATENATION", "Concat": "CONCATENATION"}
_ONNX_DTYPE = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 9: "BOOL"}


def make_tensorrt(version: str, driver: Driver, ignores_fp16: bool = False, capturable: bool = True):
    """A tensorrt module of `version` ('8.5.2.2', '8.6.2.3', '10.3.0.30', '11.4.0.106') building
    for and running on `driver`'s device. ignores_fp16: the builder picks FP32 kernels despite
    BuilderFlag.FP16 (it may: the flag allows, it does not require). capturable: False models an
    engine whose enqueue cannot be captured in a CUDA graph (execute_async_v3 returns False
    inside a capture)."""
    major, minor = _major(version), int(version.split(".")[1])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.loggers, trt.logger_warnings = [], []
    trt.built_configs = []                           # every BuilderConfig passed to a build

    DataType = enum.Enum("DataType", "FLOAT HALF INT32 INT64 BOOL")
    trt.DataType, trt.float32, trt.float16, trt.int32, trt.bool = (DataType, DataType.FLOAT, DataType.HALF,
                                                                   DataType.INT32, DataType.BOOL)
    trt.nptype = lambda dtype: {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32,
                                DataType.INT64: np.int64, DataType.BOOL: np.bool_}[dtype]
    trt.TensorIOMode = enum.Enum("TensorIOMode", "NONE INPUT OUTPUT")
    trt.LayerType = enum.Enum("LayerType", "CONVOLUTION MATRIX_MULTIPLY SOFTMAX REDUCE ELEMENTWISE CAST IDENTITY "
                                           "CONCATENATION SHUFFLE UNARY")
    # trt_docs.py BuilderFlag: FP16 / OBEY_PRECISION_CONSTRAINTS gone in 11.x; TF32 in all
    trt.BuilderFlag = enum.Enum("BuilderFlag", "TF32" if major >= 11 else "FP16 TF32 OBEY_PRECISION_CONSTRAINTS")
    # trt_docs.py NetworkDefinitionCreationFlag --list: 8.6 EXPLICIT_BATCH=0; 10.3 EXPLICIT_BATCH=0,
    # STRONGLY_TYPED=1; 11.4 STRONGLY_TYPED=0
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {
        8: {"EXPLICIT_BATCH": 0}, 10: {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}, 11: {"STRONGLY_TYPED": 0}}[major])
    # trt_docs.py PreviewFeature: PROFILE_SHARING_0806 from 8.6 (off by default) to 10.x (on by default)
    trt.PreviewFeature = enum.Enum("PreviewFeature", {
        (8, 5): "FASTER_DYNAMIC_SHAPES_0805 DISABLE_EXTERNAL_TACTIC_SOURCES_FOR_CORE_0805",
        (8, 6): "FASTER_DYNAMIC_SHAPES_0805 DISABLE_EXTERNAL_TACTIC_SOURCES_FOR_CORE_0805 PROFILE_SHARING_0806",
        (10, 3): "PROFILE_SHARING_0806 ALIASED_PLUGIN_IO_10_03",
        (11, 4): "ALIASED_PLUGIN_IO_10_03 RUNTIME_ACTIVATION_RESIZE_10_10"}[(major, minor)])
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", "WORKSPACE")
    trt.ProfilingVerbosity = enum.Enum("ProfilingVerbosity", "LAYER_NAMES_ONLY NONE DETAILED")
    trt.LayerInformationFormat = enum.Enum("LayerInformationFormat", "ONELINE JSON")
    sharing_preview = getattr(trt.PreviewFeature, "PROFILE_SHARING_0806", None)

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity="WARNING"):
            trt.loggers.append(self)

    trt.Logger = Logger
    live_logged = weakref.WeakSet()                  # builders / runtimes alive, by their logger

    def take_logger(owner, logger):
        """NVIDIA/TensorRT#1475: "TensorRT maintains only a single logger pointer at any given time,
        so the existing value ... will be used instead" when another logger arrives while a builder,
        runtime or refitter made with the first is alive (trt_docs.py ILogger: "The logger should be
        valid until all objects created are released")."""
        for other in live_logged:
            if other.logger is not logger:
                trt.logger_warnings.append("The logger passed into createInferRuntime differs from one already "
                                           "provided for an existing builder, runtime, or refitter.")
                break
        owner.logger = logger
        live_logged.add(owner)

    if major >= 10:
        class IProgressMonitor:
            def __init__(self):
                pass
        trt.IProgressMonitor = IProgressMonitor

    # ---- network (from the ONNX graph)
    Tensor, Layer = NetworkTensor, NetworkLayer

    class Network:
        def __init__(self, flags):
            self.flags, self.layers, self.inputs, self.onnx = flags, [], [], b""

        num_layers = property(lambda self: len(self.layers))
        num_inputs = property(lambda self: len(self.inputs))

        def get_layer(self, index):
            return self.layers[index]

        def get_input(self, index):
            return self.inputs[index]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse(self, data, path=None):
            import onnx
            model = onnx.shape_inference.infer_shapes(onnx.load_from_string(bytes(data)))
            dtypes = {v.name: v.type.tensor_type.elem_type for v in
                      list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)}
            dtypes.update({init.name: init.data_type for init in model.graph.initializer})
            tensor = lambda name: Tensor(name, getattr(DataType, _ONNX_DTYPE.get(dtypes.get(name, 1), "FLOAT")))
            for node in model.graph.node:
                kind = _ONNX_LAYER.get(node.op_type, "SHUFFLE")
                if kind == "CAST" and major < 10:
                    kind = "IDENTITY"                # how TensorRT 8.x parses an ONNX Cast (export/engine.py)
                self.network.layers.append(Layer(getattr(trt.LayerType, kind), node.name or node.output[0],
                                                 [tensor(n) for n in node.input], [tensor(n) for n in node.output]))
            self.network.inputs = [tensor(v.name) for v in model.graph.input]
            self.network.onnx = bytes(data)
            return True

    trt.OnnxParser = OnnxParser

    # ---- builder config, timing cache, profiles
    class TimingCache:
        def __init__(self, device_key, entries):
            self.device_key, self.entries = device_key, dict(entries)

        def serialize(self):
            return CACHE_MAGIC + json.dumps({"device": self.device_key, "entries": self.entries}).encode()

    class OptimizationProfile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, low, opt, high):
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class BuilderConfig:
        def __init__(self):
            self.flags = {trt.BuilderFlag.TF32}      # trt_docs.py BuilderFlag.TF32: "Enabled by default."
            self.preview = {sharing_preview} if major >= 10 else set()   # PROFILE_SHARING_0806: on in 10.x
            self.profiles, self._cache = [], None
            self.profiling_verbosity, self.progress_monitor = None, None

        def set_flag(self, flag):
            self.flags.add(flag)

        def clear_flag(self, flag):
            self.flags.discard(flag)

        def get_flag(self, flag):
            return flag in self.flags

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_preview_feature(self, feature, enable):
            (self.preview.add if enable else self.preview.discard)(feature)

        def get_preview_feature(self, feature):
            return feature in self.preview

        def add_optimization_profile(self, profile):
            """trt_docs.py IBuilderConfig.add_optimization_profile: the profile's index, or -1 if invalid."""
            if not all(all(a <= b <= c for a, b, c in zip(*dims)) for dims in profile.shapes.values()):
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            """trt_docs.py IBuilderConfig.create_timing_cache: 'If an empty cache is provided (i.e.
            b""), a new cache will be created.'"""
            data = bytes(data)
            if not data:
                return TimingCache(driver.device_key(), {})
            if not data.startswith(CACHE_MAGIC):
                return None
            parsed = json.loads(data[len(CACHE_MAGIC):])
            return TimingCache(parsed["device"], parsed["entries"])

        def set_timing_cache(self, cache, ignore_mismatch):
            """trt_docs.py IBuilderConfig.set_timing_cache: 'A failure will be reported if the CUDA
            device property in the provided cache is different from current environment';
            returns whether it succeeded."""
            if cache.device_key != driver.device_key() and not ignore_mismatch:
                return False
            self._cache = cache
            return True

        def get_timing_cache(self):
            """trt_docs.py IBuilderConfig.get_timing_cache: '... or None if no timing cache is set.'"""
            return self._cache

    if (major, minor) >= (8, 6):
        BuilderConfig.builder_optimization_level = 3

    class Builder:
        def __init__(self, logger):
            take_logger(self, logger)

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return BuilderConfig()

        def create_optimization_profile(self):
            return OptimizationProfile()

        def build_serialized_network(self, network, config):
            trt.built_configs.append(config)
            strongly = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and \
                bool(network.flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            fp16 = major < 11 and config.get_flag(trt.BuilderFlag.FP16)
            obey = major < 11 and config.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            layers = []
            for layer in network.layers:
                runs = "FP16" if any(t.dtype == DataType.HALF for t in layer._outputs) else "FP32"
                compute = layer.type.name in ("CONVOLUTION", "MATRIX_MULTIPLY")
                if not strongly and fp16 and compute and not ignores_fp16 and not (obey and layer.precision is not None):
                    runs = "FP16"
                layers.append({"name": layer.name, "type": layer.type.name, "runs": runs,
                               "inputs": [t.name for t in layer._inputs], "outputs": [t.name for t in layer._outputs]})
            if config._cache is not None:
                config._cache.entries[f"layers{len(layers)}"] = "timed"
            plan = {"version": version, "device": driver.device_key(), "layers": layers,
                    "sharing": major >= 10 or (sharing_preview is not None and sharing_preview in config.preview),
                    "tf32": config.get_flag(trt.BuilderFlag.TF32),
                    "profiles": [{name: [list(d) for d in dims] for name, dims in p.shapes.items()}
                                 for p in config.profiles],
                    "inputs": [t.name for t in network.inputs], "onnx": base64.b64encode(network.onnx).decode()}
            return PLAN_MAGIC + json.dumps(plan).encode()

    trt.Builder = Builder

    # ---- runtime: engine, execution contexts, inspector
    class Runtime:
        def __init__(self, logger):
            take_logger(self, logger)

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            if not data.startswith(PLAN_MAGIC):
                return None                          # "deserialisation failed", logged by TensorRT
            plan = json.loads(data[len(PLAN_MAGIC):])
            if plan["version"] != version:            # TensorRT: "expecting library version X got Y"
                return None                          # (trt_docs.py Runtime.deserialize_cuda_engine: "or None")
            return Engine(plan)

    class Engine:
        def __init__(self, plan):
            import onnxruntime as ort
            self.plan, self.layers, self.profiles = plan, plan["layers"], plan["profiles"]
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(base64.b64decode(plan["onnx"]), options,
                                                providers=["CPUExecutionProvider"])
            self.io = {i.name: ("INPUT", i.shape) for i in self.session.get_inputs()}
            self.io.update({o.name: ("OUTPUT", o.shape) for o in self.session.get_outputs()})
            self.contexts = weakref.WeakSet()
            self.created_any = False
            self.capturable = capturable

        num_io_tensors = property(lambda self: len(self.io))
        num_optimization_profiles = property(lambda self: len(self.profiles))
        num_layers = property(lambda self: len(self.layers) * len(self.profiles))

        def get_tensor_name(self, index):
            return list(self.io)[index]

        def get_tensor_mode(self, name):
            return getattr(trt.TensorIOMode, self.io[name][0])

        def get_tensor_dtype(self, name):
            return DataType.FLOAT

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in self.io[name][1])

        def get_tensor_profile_shape(self, name, profile_index):
            return [list(d) for d in self.profiles[profile_index][name]]

        def create_execution_context(self):
            """Profiles of a new context. 10.x: "The newly created execution context will be assigned
            optimization profile 0" (NvInferRuntime.h 10). 8.x: "The first execution context created
            will call setOptimizationProfile(0) implicitly. For other execution contexts,
            setOptimizationProfile() must be called with unique profile index before calling execute
            or enqueue" (NvInferRuntime.h 8.5, ICudaEngine::createExecutionContext)."""
            context = ExecutionContext(self, 0 if major >= 10 or not self.created_any else -1)
            self.created_any = True
            self.contexts.add(context)
            if driver.on_context_created is not None:
                driver.on_context_created()
            return context

        def create_engine_inspector(self):
            return EngineInspector(self)

    class ExecutionContext:
        def __init__(self, engine, profile):
            self.engine, self.profile, self.shapes, self.addresses = engine, profile, {}, {}
            self.calls = {"set_input_shape": 0, "set_tensor_address": 0}
            self.resources: Optional[tuple] = None       # (generation, shapes) of the layer resources
            self._generations = itertools.count(1)

        def set_optimization_profile_async(self, profile_index, stream_handle):
            """Before 10.0 without PROFILE_SHARING_0806: "each execution context in concurrent use
            must use a separate optimization profile" (NvInferRuntime.h 8.5, IExecutionContext), so a
            profile held by another live context is refused. Switching invalidates the input shapes
            (trt_docs.py IExecutionContext.active_optimization_profile, 8.6).

            A refusal RAISES: the docstring says ":returns: True if the optimization profile was set
            successfully", but the binding is PY_ASSERT_RUNTIME_ERROR(setOptimizationProfileAsync(...),
            "Error in set optimization profile async."); return true; (python/src/infer/pyCore.cpp,
            lambdas::context_set_optimization_profile_async, identical in 8.5.2, 8.6.1, 10.3, 10.13
            and main), so Python never sees False."""
            if not 0 <= profile_index < len(self.engine.profiles):
                raise RuntimeError("Error in set optimization profile async.")
            held = any(other is not self and other.profile == profile_index for other in list(self.engine.contexts))
            if held and not self.engine.plan["sharing"]:
                raise RuntimeError("Error in set optimization profile async.")
            self.profile, self.shapes = profile_index, {}
            return True

        def set_input_shape(self, name, shape):
            self.calls["set_input_shape"] += 1
            if self.profile < 0:                     # no profile selected: every shape is rejected
                return False
            low, _, high = self.engine.profiles[self.profile][name]
            if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high)):
                return False
            self.shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            if self.engine.io[name][0] == "INPUT":
                return self.shapes.get(name, self.engine.get_tensor_shape(name))
            batch = self.shapes.get("audio", (-1,))[0]
            return (batch, 6)

        def set_tensor_address(self, name, address):
            self.calls["set_tensor_address"] += 1
            self.addresses[name] = int(address)
            return True

        def execute_async_v3(self, stream_handle):
            inputs = [name for name, (mode, _) in self.engine.io.items() if mode == "INPUT"]
            if self.profile < 0 or set(inputs) - set(self.shapes) or set(self.engine.io) - set(self.addresses):
                return False
            if driver.on_execute is not None:
                driver.on_execute()
            capturing = stream_handle in driver.captures
            if capturing and not self.engine.capturable:
                return False
            shapes, addresses = dict(self.shapes), dict(self.addresses)
            # Layer resources follow the input shapes and are updated at the first enqueue after a
            # change: "This function will trigger layer resource updates on the next call of
            # enqueueV2()/executeV2() ... if the shapes are different than the previous set shapes"
            # and "the first enqueueV2() call after a setInputShapeBinding() call will cause failure
            # in stream capture due to resource allocation. Please call enqueueV2() once before
            # capturing the graph" (NvInferRuntime.h 8.5/8.6, IExecutionContext; plugins'
            # configurePlugin runs then too, IPluginV2DynamicExt). So an update inside a capture fails
            # it, and a graph captured before an update replays kernels reading resources that are
            # gone (modelled as the illegal-address error it would be at best).
            if self.resources is None or self.resources[1] != shapes:
                if capturing:
                    return False
                self.resources = (next(self._generations), shapes)
            generation = self.resources[0]

            def run():
                if self.resources[0] != generation:
                    raise CudaError("CUDA_ERROR_ILLEGAL_ADDRESS (700): kernels captured for layer resources of "
                                    f"shapes {shapes} replayed after TensorRT updated them for {self.resources[1]}")
                feeds = {name: driver.region(addresses[name], 4 * int(np.prod(shapes[name]))).view(np.float32)
                         .reshape(shapes[name]).copy() for name in inputs}
                outputs = self.engine.session.run(None, feeds)
                for meta, value in zip(self.engine.session.get_outputs(), outputs):
                    value = np.ascontiguousarray(value, np.float32)
                    driver.region(addresses[meta.name], value.nbytes)[:] = value.view(np.uint8).reshape(-1)
            driver.enqueue(stream_handle, run)
            return True

    class EngineInspector:
        """NvInferRuntime.h (8.5-11.x) IEngineInspector::setExecutionContext: "Setting the execution
        context and specifying all the input shapes allows the inspector to calculate concrete
        dimensions for any dynamic shapes and display their format information. Otherwise, values
        dependent on input shapes will be displayed as -1 and format information will not be
        shown." Layers of profile k (index // layers per profile, before 10.0) need a context on
        profile k. Tactic names carry no precision marker (as Myelin and many gemm tactics do)."""

        def __init__(self, engine):
            self.engine, self.execution_context = engine, None

        def get_layer_information(self, index, fmt):
            per_profile = len(self.engine.layers)
            layer, profile_index = self.engine.layers[index % per_profile], index // per_profile
            context = self.execution_context
            known = (context is not None and context.profile == profile_index
                     and all(name in context.shapes for name in self.engine.plan["inputs"]))

            def tensor(name):
                entry = {"Name": name, "Dimensions": [-1]}
                if known:
                    entry["Format/Datatype"] = f"Row major linear {layer['runs']} format"
                return entry
            kind = {"MATRIX_MULTIPLY": ("CaskGemm", "MatrixMultiply"),
                    "CONVOLUTION": ("CaskConvolution", "Convolution")}.get(layer["type"], (layer["type"].title(), None))
            info = {"Name": layer["name"], "LayerType": kind[0], "Inputs": [tensor(n) for n in layer["inputs"]],
                    "Outputs": [tensor(n) for n in layer["outputs"]], "TacticName": "sm87_xmma_tile_64x64_nn"}
            if kind[1]:
                info["ParameterType"] = kind[1]
            return json.dumps(info)

        def get_engine_information(self, fmt):
            return json.dumps({"Layers": [json.loads(self.get_layer_information(i, fmt))
                                          for i in range(self.engine.num_layers)]})

    trt.Runtime = Runtime
    trt.BuilderConfig = BuilderConfig                # for tests that change one behaviour
    return trt


# =============================================================================================


def build(tmp_path, fp16: bool = False, **build_options):
    """The stand-in ONNX model (tests/_runtime_standin.py) built by edge_ladder's build_engine on
    the installed stand-in -> (onnx path, engine path, sidecar, log lines)."""
    from _runtime_standin import make_standin_onnx
    from edge_ladder.export.engine import build_engine
    onnx_path = tmp_path / "model.onnx"
    if not onnx_path.exists():
        make_standin_onnx(onnx_path)
    engine_path, lines = tmp_path / "model.engine", []
    build_options = {key: value for key, value in build_options.items() if value is not None}
    sidecar = build_engine(onnx_path, engine_path, fp16=fp16, log=lines.append, **build_options)
    return onnx_path, engine_path, sidecar, lines


def install(monkeypatch, version: str, driver: Optional[Driver] = None, **trt_options):
    """Put the stand-ins where edge_ladder imports them from; undone by monkeypatch."""
    from edge_ladder.export import engine as engine_module
    from edge_ladder.runtime import cuda as cuda_module
    from edge_ladder.runtime import trt_backend
    driver = driver or Driver(**ORIN)
    trt = make_tensorrt(version, driver, **trt_options)
    package, cuda = make_pycuda(driver)
    libcuda = LibCuda(driver)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setattr(cuda_module, "_libcuda", libcuda)
    monkeypatch.setattr(cuda_module, "_initialised", False)
    monkeypatch.setattr(engine_module, "cuda_device_info", driver.device_info)
    monkeypatch.setattr(trt_backend, "_LOGGER", None, raising=False)   # a fresh process's logger
    return types.SimpleNamespace(trt=trt, driver=driver, cuda=cuda, libcuda=libcuda)

