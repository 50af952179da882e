"""Python binding of the kernels/ C library (installed as edge_ladder.kernels). numpy + ctypes only.

The library (build/libedge_ladder_kernels.so, built by `make kernels`) computes the model's
front-ends -- log-mel frames and standardised face crops, exactly as edge_ladder.frontend defines
them -- on the host or on a CUDA GPU, writing fp32 or fp16 straight into a caller's buffer: a
numpy array, or the device input buffers of a TensorRT engine.

    log_mel(pcm, out=None, dtype=np.float32, device="host"|"cuda")     -> (T, 80)
    face_crops(frame, boxes, out=None, slots=None, device=...)           -> (N, S, S) or out
    log_mel_device(...), face_crops_device(...)   device pointers + CUDA stream (TensorRT runtime)
    DeviceBuffer, upload_filterbank()             device memory without pycuda
    is_built(), built_with_cuda(), has_cuda(), build_info(), library_path()

Where the library is looked for: $EDGE_LADDER_KERNELS_LIB (only there, when set), then build/ at
the repository root, then beside this module. When it is not built, the host functions fall back
to the numpy front-ends (one warning, once); device="cuda" and the *_device functions raise.
Python decides shapes and dtypes here; the C side checks them again and names the wrong argument.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from edge_ladder import frontend
from edge_ladder.errors import EdgeLadderError

LIBRARY_ENV = "EDGE_LADDER_KERNELS_LIB"
BUILD_COMMAND = "make kernels  (or: cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build)"

# status codes and enums of kernels/edge_ladder_kernels.h
OK, ERROR_INVALID_ARGUMENT, ERROR_CUDA, ERROR_NO_CUDA = 0, 1, 2, 3
_OUT_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}
_PCM_FORMATS = {np.dtype(np.int16): 0, np.dtype(np.float32): 1}
_CHANNEL_ORDERS = {"bgr": 0, "rgb": 1}
_DEVICES = ("host", "cuda")


class KernelError(EdgeLadderError):
    """A kernels/ call failed: bad argument (code 1), CUDA error (2) or no CUDA in the build (3)."""

    def __init__(self, message: str, code: int = ERROR_INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code


class KernelsFallbackWarning(UserWarning):
    """The C library is not built; the numpy front-ends (edge_ladder.frontend) are used instead."""


# ---------------------------------------------------------------------------------------------
# Finding and loading the library.

def _library_file_names() -> list[str]:
    if sys.platform == "darwin":
        return ["libedge_ladder_kernels.dylib"]
    if sys.platform == "win32":
        return ["edge_ladder_kernels.dll"]
    return ["libedge_ladder_kernels.so"]


def library_candidates() -> list[Path]:
    """Paths tried in order: $EDGE_LADDER_KERNELS_LIB alone when set, else build/, else beside."""
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        return [Path(explicit)]
    here = Path(__file__).resolve().parent
    folders = [here.parent / "build", here]
    return [folder / name for folder in folders for name in _library_file_names()]


_c_int64, _c_void_p, _c_float, _c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float, ctypes.c_int
_PROTOTYPES = {
    "elk_api_version": (_c_int, []),
    "elk_built_with_cuda": (_c_int, []),
    "elk_build_info": (ctypes.c_char_p, []),
    "elk_last_error": (ctypes.c_char_p, []),
    "elk_log_mel_frame_count": (_c_int64, [_c_int64, _c_int, _c_int]),
    "elk_log_mel_host": (_c_int, [_c_void_p, _c_int, _c_int64, _c_int, _c_int, _c_int, _c_int,
                                  _c_void_p, _c_float, _c_void_p, _c_int, _c_int64, _c_int64, _c_int64]),
    "elk_log_mel_cuda": (_c_int, [_c_void_p, _c_int, _c_int64, _c_int, _c_int, _c_int, _c_int,
                                  _c_void_p, _c_float, _c_void_p, _c_int, _c_int64, _c_int64, _c_int64,
                                  _c_void_p]),
    "elk_face_crops_host": (_c_int, [_c_void_p, _c_int, _c_int, _c_int64, _c_int, _c_void_p, _c_void_p,
                                     _c_int, _c_int, _c_void_p, _c_int, _c_int, _c_int]),
    "elk_face_crops_cuda": (_c_int, [_c_void_p, _c_int, _c_int, _c_int64, _c_int, _c_void_p, _c_void_p,
                                     _c_int, _c_int, _c_void_p, _c_int, _c_int, _c_int, _c_void_p]),
    "elk_float_to_half_host": (_c_int, [_c_void_p, _c_void_p, _c_int64]),
    "elk_cuda_device_count": (_c_int, [ctypes.POINTER(_c_int)]),
    "elk_cuda_device_name": (_c_int, [_c_int, ctypes.c_char_p, _c_int]),
    "elk_cuda_malloc": (_c_int, [ctypes.POINTER(_c_void_p), ctypes.c_size_t]),
    "elk_cuda_free": (_c_int, [_c_void_p]),
    "elk_cuda_copy_to_device": (_c_int, [_c_void_p, _c_void_p, ctypes.c_size_t, _c_void_p]),
    "elk_cuda_copy_to_host": (_c_int, [_c_void_p, _c_void_p, ctypes.c_size_t, _c_void_p]),
    "elk_cuda_synchronize": (_c_int, [_c_void_p]),
}
API_VERSION = 1

_lock = threading.Lock()
_loaded: dict = {}          # "lib": CDLL or None, "path": Path or None
_fallback_noticed = False


def _load(path: Path) -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as error:
        raise KernelError(f"cannot load the kernels library {path}: {error}. Rebuild it: {BUILD_COMMAND}",
                          ERROR_NO_CUDA) from error
    for name, (restype, argtypes) in _PROTOTYPES.items():
        function = getattr(lib, name, None)
        if function is None:
            raise KernelError(f"{path} has no symbol {name}: it is stale or not edge-ladder's kernels "
                              f"library. Rebuild it: {BUILD_COMMAND}")
        function.restype, function.argtypes = restype, argtypes
    if lib.elk_api_version() != API_VERSION:
        raise KernelError(f"{path} has API version {lib.elk_api_version()}, this module expects "
                          f"{API_VERSION}. Rebuild it: {BUILD_COMMAND}")
    return lib


def _library() -> ctypes.CDLL | None:
    """The loaded library, or None when none of library_candidates() exists. Cached."""
    with _lock:
        if "lib" not in _loaded:
            candidates = library_candidates()
            found = next((path for path in candidates if path.is_file()), None)
            if found is None and os.environ.get(LIBRARY_ENV):
                raise KernelError(f"{LIBRARY_ENV}={os.environ[LIBRARY_ENV]} does not exist. Point it at "
                                  f"build/libedge_ladder_kernels.so or unset it; build with: {BUILD_COMMAND}")
            _loaded["lib"] = _load(found) if found is not None else None
            _loaded["path"] = found
        return _loaded["lib"]


def _reset_library_cache() -> None:
    """Forget the loaded library (tests change $EDGE_LADDER_KERNELS_LIB)."""
    global _fallback_noticed
    with _lock:
        _loaded.clear()
        _fallback_noticed = False
    has_cuda.cache_clear()


def _notice_fallback() -> None:
    global _fallback_noticed
    if not _fallback_noticed:
        _fallback_noticed = True
        warnings.warn(f"edge_ladder.kernels: C library not built ({BUILD_COMMAND.split('  ')[0]}); "
                      f"using the numpy front-ends", KernelsFallbackWarning, stacklevel=3)


def is_built() -> bool:
    """True when the C library was found and loaded."""
    return _library() is not None


def library_path() -> Path | None:
    _library()
    return _loaded.get("path")


def built_with_cuda() -> bool:
    """True when the library contains the CUDA implementation (nvcc was found at build time)."""
    lib = _library()
    return bool(lib is not None and lib.elk_built_with_cuda())


@functools.lru_cache(maxsize=None)
def has_cuda() -> bool:
    """True when the CUDA implementation is built and a CUDA device answers (probed when called)."""
    lib = _library()
    if lib is None or not lib.elk_built_with_cuda():
        return False
    count = ctypes.c_int(0)
    return lib.elk_cuda_device_count(ctypes.byref(count)) == OK and count.value > 0


def build_info() -> str:
    lib = _library()
    return "not built" if lib is None else lib.elk_build_info().decode()


def cuda_device_name(device: int = 0) -> str:
    lib = _require_cuda("cuda_device_name")
    name = ctypes.create_string_buffer(256)
    _check(lib, lib.elk_cuda_device_name(device, name, len(name)))
    return name.value.decode()


def _check(lib: ctypes.CDLL, status: int) -> None:
    if status != OK:
        raise KernelError(lib.elk_last_error().decode(), status)


def _require_cuda(what: str, probe_device: bool = False) -> ctypes.CDLL:
    """The library, checked to contain CUDA (and, with probe_device, to see a CUDA device)."""
    lib = _library()
    if lib is None:
        raise KernelError(f"{what} needs the kernels library built with CUDA; it is not built. "
                          f"Build it with: {BUILD_COMMAND}", ERROR_NO_CUDA)
    if not lib.elk_built_with_cuda():
        raise KernelError(f"{what} needs CUDA, but {_loaded['path']} was built without it (no nvcc "
                          f"at build time). Install the CUDA toolkit and rebuild: {BUILD_COMMAND}",
                          ERROR_NO_CUDA)
    if probe_device:
        count = ctypes.c_int(0)
        if lib.elk_cuda_device_count(ctypes.byref(count)) != OK:
            raise KernelError(f"{what}: no usable CUDA device: {lib.elk_last_error().decode()}", ERROR_CUDA)
        if count.value == 0:
            raise KernelError(f"{what}: the CUDA runtime sees 0 devices; use device='host'", ERROR_CUDA)
    return lib


def float_to_half(values: np.ndarray) -> np.ndarray:
    """The kernels' fp32 -> fp16 rounding on the host (tests compare it with numpy's astype)."""
    lib = _library()
    if lib is None:
        _notice_fallback()
        return np.asarray(values, np.float32).astype(np.float16)
    values = np.ascontiguousarray(values, dtype=np.float32)
    halves = np.empty(values.shape, np.float16)
    _check(lib, lib.elk_float_to_half_host(values.ctypes.data, halves.ctypes.data, values.size))
    return halves


# ---------------------------------------------------------------------------------------------
# Device memory (no pycuda needed). Any object with int(obj) -> device address works where a
# pointer is expected, so pycuda's DeviceAllocation can be passed too.

class DeviceBuffer:
    """`nbytes` of CUDA device memory. int(buffer) is its address."""

    def __init__(self, nbytes: int):
        self._lib = _require_cuda("DeviceBuffer", probe_device=True)
        if nbytes < 1:
            raise KernelError(f"DeviceBuffer needs nbytes >= 1; got {nbytes}")
        pointer = ctypes.c_void_p()
        _check(self._lib, self._lib.elk_cuda_malloc(ctypes.byref(pointer), nbytes))
        self.ptr = int(pointer.value)
        self.nbytes = int(nbytes)

    @classmethod
    def from_array(cls, array: np.ndarray, stream=0) -> "DeviceBuffer":
        array = np.ascontiguousarray(array)
        buffer = cls(max(array.nbytes, 1))
        buffer.upload(array, stream)
        return buffer

    def __int__(self) -> int:
        return self.ptr

    def upload(self, array: np.ndarray, stream=0, offset: int = 0) -> None:
        """Copy a C-contiguous array to byte `offset` of this buffer (ordered on `stream`)."""
        if not array.flags.c_contiguous:
            raise KernelError("DeviceBuffer.upload needs a C-contiguous array; use np.ascontiguousarray")
        if offset < 0 or offset + array.nbytes > self.nbytes:
            raise KernelError(f"DeviceBuffer.upload: {array.nbytes} bytes at offset {offset} do not fit "
                              f"in {self.nbytes} bytes")
        _check(self._lib, self._lib.elk_cuda_copy_to_device(self.ptr + offset, array.ctypes.data,
                                                            array.nbytes, _stream_handle(stream)))

    def download(self, shape, dtype, stream=0, offset: int = 0) -> np.ndarray:
        """A new host array of `shape`/`dtype` from byte `offset` (synchronises `stream`)."""
        result = np.empty(shape, dtype)
        if offset < 0 or offset + result.nbytes > self.nbytes:
            raise KernelError(f"DeviceBuffer.download: {result.nbytes} bytes at offset {offset} exceed "
                              f"{self.nbytes} bytes")
        _check(self._lib, self._lib.elk_cuda_copy_to_host(result.ctypes.data, self.ptr + offset,
                                                          result.nbytes, _stream_handle(stream)))
        return result

    def free(self) -> None:
        if self.ptr:
            pointer, self.ptr = self.ptr, 0
            _check(self._lib, self._lib.elk_cuda_free(pointer))

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.free()

    def __del__(self):
        # At interpreter exit the CUDA runtime may already be unloaded; cudaFree then fails and
        # the memory goes with the process anyway, so a failure here is not reported.
        if getattr(self, "ptr", 0):
            self._lib.elk_cuda_free(self.ptr)
            self.ptr = 0


def synchronize(stream=0) -> None:
    lib = _require_cuda("synchronize")
    _check(lib, lib.elk_cuda_synchronize(_stream_handle(stream)))


def _stream_handle(stream) -> int | None:
    """0/None, an int cudaStream_t, or an object with .handle (pycuda.driver.Stream)."""
    if stream is None:
        return None
    handle = getattr(stream, "handle", stream)
    return int(handle) or None


def _address(pointer, name: str) -> int:
    try:
        address = int(pointer)
    except (TypeError, ValueError) as error:
        raise KernelError(f"{name} must be a device address (int, DeviceBuffer or pycuda "
                          f"DeviceAllocation); got {type(pointer).__name__}") from error
    return address


@functools.lru_cache(maxsize=8)
def _filterbank(spec: frontend.AudioSpec) -> np.ndarray:
    filterbank = np.ascontiguousarray(frontend.mel_filterbank(spec), dtype=np.float32)
    filterbank.setflags(write=False)
    return filterbank                                                         # (n_mels, n_fft//2+1)


def upload_filterbank(spec: frontend.AudioSpec = frontend.AudioSpec(), stream=0) -> DeviceBuffer:
    """frontend.mel_filterbank(spec) in device memory, for log_mel_device."""
    return DeviceBuffer.from_array(_filterbank(spec), stream)


# ---------------------------------------------------------------------------------------------
# Argument preparation (Python decides shapes and dtypes).

def _out_dtype(dtype, out: np.ndarray | None) -> np.dtype:
    if dtype is None:
        dtype = out.dtype if out is not None else np.float32
    dtype = np.dtype(dtype)
    if dtype not in _OUT_DTYPES:
        raise KernelError(f"dtype must be float32 or float16 (the engine input types); got {dtype}")
    if out is not None and out.dtype != dtype:
        raise KernelError(f"out is {out.dtype} but dtype={dtype} was asked; pass an out of that dtype "
                          f"or leave dtype unset")
    return dtype


def _check_device(device: str) -> None:
    if device not in _DEVICES:
        raise KernelError(f"device must be one of {_DEVICES}; got {device!r}")


def _pcm_array(pcm) -> np.ndarray:
    pcm = np.asarray(pcm)
    if pcm.dtype == np.int16:
        samples = np.ascontiguousarray(pcm)
    elif np.issubdtype(pcm.dtype, np.floating):
        samples = np.ascontiguousarray(pcm, dtype=np.float32)                # as frontend.pcm_to_float
    else:
        raise KernelError(f"audio PCM must be int16 or float; got {pcm.dtype}. Convert with "
                          f"pcm.astype(np.int16) or scale to float32 in [-1, 1].")
    if samples.ndim != 1:
        raise KernelError(f"audio must be mono (n_samples,); got shape {samples.shape}. Mix down first, "
                          f"e.g. pcm.mean(axis=1).")
    return samples


def _log_mel_out(out, n_frames: int, time_offset: int, n_mels: int, dtype: np.dtype):
    """(out array, row stride in elements, capacity) with checks on a caller's out."""
    if out is None:
        if time_offset != 0:
            raise KernelError(f"time_offset={time_offset} needs an out array to write into")
        out = np.empty((n_frames, n_mels), dtype)
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[1] != n_mels:
        raise KernelError(f"out must be a numpy array (T_capacity, {n_mels}); got "
                          f"{getattr(out, 'shape', type(out).__name__)}. For batch slot b of the engine "
                          f"input (B, T, {n_mels}) pass out=audio[b].")
    itemsize = out.dtype.itemsize
    if out.shape[0] == 0:                                        # numpy gives empty arrays any strides
        return out, n_mels, 0
    if not out.flags.writeable or out.strides[1] != itemsize or out.strides[0] % itemsize or out.strides[0] < 0:
        raise KernelError(f"out must be writeable with contiguous rows (strides (k*{itemsize}, {itemsize})); "
                          f"got strides {out.strides}")
    return out, out.strides[0] // itemsize, out.shape[0]


# ---------------------------------------------------------------------------------------------
# Log-mel.

def log_mel(pcm, out: np.ndarray | None = None, *, dtype=None, device: str = "host",
            time_offset: int = 0, spec: frontend.AudioSpec = frontend.AudioSpec()) -> np.ndarray:
    """Mono PCM (n_samples,) int16 or float -> log-mel (T, n_mels), T = frontend.n_audio_frames.

    out: optional (T_capacity, n_mels) float32/float16 array with contiguous rows (e.g. audio[b]
    of the engine's (B, T, 80) input); rows [time_offset, time_offset + T) are written and that
    view is returned. dtype: float32 (default) or float16. device: "host" or "cuda".
    """
    _check_device(device)
    samples = _pcm_array(pcm)
    dtype = _out_dtype(dtype, out)
    n_frames = frontend.n_audio_frames(samples.shape[0], spec)
    target, row_stride, capacity = _log_mel_out(out, n_frames, time_offset, spec.n_mels, dtype)
    if time_offset < 0 or time_offset + n_frames > capacity:
        raise KernelError(f"out has {capacity} rows; {samples.shape[0]} samples give {n_frames} frames "
                          f"from time_offset={time_offset}: needs >= {time_offset + n_frames} rows")
    rows = target[time_offset:time_offset + n_frames]
    lib = _library()
    if lib is None:
        if device == "cuda":
            _require_cuda("log_mel(device='cuda')")
        _notice_fallback()
        rows[...] = frontend.log_mel(samples, spec)
        return rows
    filterbank = _filterbank(spec)
    args = (_PCM_FORMATS[samples.dtype], samples.shape[0], spec.win, spec.hop, spec.n_fft, spec.n_mels)
    if device == "host":
        _check(lib, lib.elk_log_mel_host(samples.ctypes.data, *args, filterbank.ctypes.data,
                                         spec.log_floor, target.ctypes.data, _OUT_DTYPES[dtype],
                                         row_stride, time_offset, capacity))
        return rows
    _require_cuda("log_mel(device='cuda')", probe_device=True)
    if n_frames == 0:
        return rows
    with DeviceBuffer.from_array(samples) as pcm_device, DeviceBuffer.from_array(filterbank) as fb_device, \
            DeviceBuffer(n_frames * spec.n_mels * dtype.itemsize) as out_device:
        _check(lib, lib.elk_log_mel_cuda(pcm_device.ptr, *args, fb_device.ptr, spec.log_floor,
                                         out_device.ptr, _OUT_DTYPES[dtype], spec.n_mels, 0, n_frames, None))
        rows[...] = out_device.download((n_frames, spec.n_mels), dtype)
    return rows


def log_mel_device(pcm_ptr, n_samples: int, pcm_dtype, filterbank_ptr, out_ptr, *, time_capacity: int,
                   out_dtype=np.float32, out_row_stride: int | None = None, time_offset: int = 0,
                   spec: frontend.AudioSpec = frontend.AudioSpec(), stream=0) -> int:
    """Enqueue log-mel of device PCM into device memory on `stream`; returns the frame count T.

    pcm_ptr: n_samples of int16 or float32 on the device. filterbank_ptr: upload_filterbank(spec).
    out_ptr: row t goes to out_ptr + ((time_offset + t) * out_row_stride) elements, for
    t < T <= time_capacity - time_offset. For batch slot b of an engine input (B, T_max, 80):
    out_ptr = base + b * T_max * 80 * itemsize, time_capacity = T_max.
    """
    lib = _require_cuda("log_mel_device")
    pcm_dtype = np.dtype(pcm_dtype)
    if pcm_dtype not in _PCM_FORMATS:
        raise KernelError(f"pcm_dtype must be int16 or float32; got {pcm_dtype}")
    out_dtype = _out_dtype(out_dtype, None)
    row_stride = spec.n_mels if out_row_stride is None else out_row_stride
    _check(lib, lib.elk_log_mel_cuda(_address(pcm_ptr, "pcm_ptr"), _PCM_FORMATS[pcm_dtype], n_samples,
                                     spec.win, spec.hop, spec.n_fft, spec.n_mels,
                                     _address(filterbank_ptr, "filterbank_ptr"), spec.log_floor,
                                     _address(out_ptr, "out_ptr"), _OUT_DTYPES[out_dtype], row_stride,
                                     time_offset, time_capacity, _stream_handle(stream)))
    return frontend.n_audio_frames(n_samples, spec)


# ---------------------------------------------------------------------------------------------
# Face crops.

def _frame_array(frame) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise KernelError(f"frame must be uint8 (H, W, 3); got {frame.dtype} {frame.shape}")
    # Rows may be pitched (a crop of a larger frame); pixels must be packed 3-byte triplets.
    if frame.strides[2] != 1 or frame.strides[1] != 3 or frame.strides[0] < 3 * frame.shape[1]:
        frame = np.ascontiguousarray(frame)
    return frame


def _boxes_array(boxes) -> np.ndarray:
    boxes = np.ascontiguousarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise KernelError(f"boxes must be (N, 4) x, y, w, h in pixels (frontend.square_box); got shape "
                          f"{boxes.shape}")
    return boxes


def _slots_array(slots, n_boxes: int, out_batch: int, out_time: int) -> np.ndarray:
    slots = np.asarray(slots)
    if slots.shape != (n_boxes, 2) or not np.issubdtype(slots.dtype, np.integer):
        raise KernelError(f"slots must be integer (N={n_boxes}, 2) (batch, time) indices, one per box; "
                          f"got {slots.dtype} {slots.shape}")
    slots = np.ascontiguousarray(slots, dtype=np.int32)
    flat = slots[:, 0].astype(np.int64) * out_time + slots[:, 1]
    if np.unique(flat).size != n_boxes:
        raise KernelError(f"slots must be distinct: two boxes would write the same (batch, time) crop; "
                          f"got {slots.tolist()}")
    return slots


def _face_out(out, n_boxes: int, size: int, dtype: np.dtype, slots):
    """(out array, slots, out_batch, out_time)."""
    if out is None:
        if slots is not None:
            raise KernelError("slots index into an out array (B, T_v, 1, S, S); pass out= too, or drop slots "
                              "to get (N, S, S)")
        out = np.empty((n_boxes, size, size), dtype)
        slots = np.stack([np.arange(n_boxes), np.zeros(n_boxes, np.int64)], axis=1)
        return out, np.ascontiguousarray(slots, dtype=np.int32), max(n_boxes, 1), 1
    if not isinstance(out, np.ndarray) or out.ndim != 5 or out.shape[2:] != (1, size, size):
        raise KernelError(f"out must be the engine face input (B, T_v, 1, {size}, {size}); got "
                          f"{getattr(out, 'shape', type(out).__name__)}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise KernelError("out must be a writeable C-contiguous array (B, T_v, 1, S, S)")
    if slots is None:
        raise KernelError("out= needs slots: an (N, 2) array of (batch, time) indices, one per box")
    return out, _slots_array(slots, n_boxes, out.shape[0], out.shape[1]), out.shape[0], out.shape[1]


def face_crops(frame, boxes, out: np.ndarray | None = None, *, slots=None, size: int | None = None,
               channel_order: str = "bgr", dtype=None, device: str = "host") -> np.ndarray:
    """Camera frame (H, W, 3) uint8 + boxes (N, 4) -> standardised crops, as frontend.face_crop.

    Without out: returns (N, S, S). With out, the engine face input (B, T_v, 1, S, S) float32 or
    float16, box i is written to out[slots[i, 0], slots[i, 1], 0] and out is returned.
    size defaults to out's S, else frontend.FACE_SIZE.
    """
    _check_device(device)
    if channel_order not in _CHANNEL_ORDERS:
        raise KernelError(f"channel_order must be 'bgr' or 'rgb'; got {channel_order!r}")
    frame = _frame_array(frame)
    boxes = _boxes_array(boxes)
    if size is None:
        size = out.shape[-1] if isinstance(out, np.ndarray) and out.ndim == 5 else frontend.FACE_SIZE
    dtype = _out_dtype(dtype, out)
    target, slots, out_batch, out_time = _face_out(out, boxes.shape[0], size, dtype, slots)
    lib = _library()
    if lib is None:
        if device == "cuda":
            _require_cuda("face_crops(device='cuda')")
        _notice_fallback()
        crops = target.reshape(out_batch, out_time, size, size)
        for box, (batch, time) in zip(boxes, slots):
            crops[batch, time] = frontend.face_crop(frame, box, size, channel_order)
        return target
    height, width = frame.shape[:2]
    args = (height, width, frame.strides[0], _CHANNEL_ORDERS[channel_order])
    tail = (boxes.ctypes.data, slots.ctypes.data, boxes.shape[0], size)
    if device == "host":
        _check(lib, lib.elk_face_crops_host(frame.ctypes.data, *args, *tail, target.ctypes.data,
                                            _OUT_DTYPES[dtype], out_batch, out_time))
        return target
    _require_cuda("face_crops(device='cuda')", probe_device=True)
    if boxes.shape[0] == 0:
        return target
    span = (height - 1) * frame.strides[0] + width * 3          # bytes from the first to the last pixel
    frame_bytes = np.ctypeslib.as_array((ctypes.c_uint8 * span).from_address(frame.ctypes.data))
    with DeviceBuffer.from_array(frame_bytes) as frame_device, DeviceBuffer(target.nbytes) as out_device:
        out_device.upload(np.ascontiguousarray(target))         # boxes write only their slots
        _check(lib, lib.elk_face_crops_cuda(frame_device.ptr, *args, *tail, out_device.ptr,
                                            _OUT_DTYPES[dtype], out_batch, out_time, None))
        target[...] = out_device.download(target.shape, dtype)
    return target


def face_crops_device(frame_ptr, height: int, width: int, row_pitch: int, boxes, slots, out_ptr, *,
                      out_batch: int, out_time: int, size: int = frontend.FACE_SIZE,
                      channel_order: str = "bgr", out_dtype=np.float32, stream=0) -> None:
    """Enqueue face crops of a device frame into a device face input (out_batch, out_time, 1, S, S).

    frame_ptr: height rows of row_pitch bytes (packed BGR/RGB uint8). boxes (N, 4) and slots
    (N, 2) (batch, time) are host arrays. Nothing is synchronised.
    """
    lib = _require_cuda("face_crops_device")
    if channel_order not in _CHANNEL_ORDERS:
        raise KernelError(f"channel_order must be 'bgr' or 'rgb'; got {channel_order!r}")
    boxes = _boxes_array(boxes)
    slots = _slots_array(slots, boxes.shape[0], out_batch, out_time)
    out_dtype = _out_dtype(out_dtype, None)
    _check(lib, lib.elk_face_crops_cuda(_address(frame_ptr, "frame_ptr"), height, width, row_pitch,
                                        _CHANNEL_ORDERS[channel_order], boxes.ctypes.data, slots.ctypes.data,
                                        boxes.shape[0], size, _address(out_ptr, "out_ptr"),
                                        _OUT_DTYPES[out_dtype], out_batch, out_time, _stream_handle(stream)))
