"""One window's features computed on the GPU, straight into a TensorRT engine's input buffers.

    frontend = GpuFrontEnd(model)                  # model: runtime.load("model.engine")
    result, inputs = frontend.run(pcm, ticks, audio_present=True)

Per window, all on the engine's CUDA stream of the calling thread, then one engine run:
    PCM (int16 or float32, host) -> device scratch -> kernels.log_mel_device -> engine "audio"
    each distinct camera frame  -> device scratch -> kernels.face_crops_device -> engine "face"
    audio_mask / face_mask / presence (a few hundred bytes) are copied from the host.
The kernels write the engine's own input dtype (float32 or float16), so an FP16-I/O engine
gets no cast pass. Features equal edge_ladder.frontend's up to float rounding (the kernels
are tested against it); batch size 1, padding as features.batch_inputs.

Needs the kernels library built with CUDA (`make kernels` on a machine with nvcc) and a
TensorRT model (TensorRTModel.device_inputs / execute_prefilled).
"""
from __future__ import annotations

import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .. import frontend
from ..errors import EdgeLadderError
from .base import Result
from .cuda import PerThread, memset_async


class GpuFrontEndError(EdgeLadderError):
    """The GPU front-end cannot run here (kernels not built with CUDA, model not TensorRT)."""


def _kernels():
    """edge_ladder.kernels (numpy + ctypes only; imported when a GPU front-end is built)."""
    from edge_ladder import kernels
    return kernels


def check_available(model) -> None:
    """Raise GpuFrontEndError saying why the GPU front-end cannot serve `model`, if it cannot."""
    kernels = _kernels()
    if not hasattr(model, "device_inputs"):
        raise GpuFrontEndError(f"the CUDA front-end writes into TensorRT input buffers; {model.path} is a "
                               f"{model.backend} model. Load the .engine, or use frontend='kernels' with "
                               f"the kernels' host path / frontend='numpy'.")
    if not kernels.is_built():
        raise GpuFrontEndError(f"the CUDA front-end needs the kernels library, which is not built. Build it "
                               f"with: {kernels.BUILD_COMMAND}")
    if not kernels.has_cuda():
        reason = ("it was built without CUDA (no nvcc at build time); install the CUDA toolkit and rebuild"
                  if not kernels.built_with_cuda() else "no CUDA device answers")
        raise GpuFrontEndError(f"the CUDA front-end needs {kernels.library_path()} with CUDA: {reason} "
                               f"({kernels.BUILD_COMMAND}), or use frontend='numpy'.")


class _Scratch:
    """One thread's device scratch buffers (PCM, camera frame), grown on demand, and its two
    timing events, made once and reused. Created and freed with the model's context current:
    pycuda destroys an event, stream or allocation only where its context is current (or can be
    made current: the thread that created the context), else it leaks it (cuda.hpp
    scoped_context_activation, CUDAPP_CATCH_CLEANUP_ON_DEAD_CONTEXT). Close the front-end before
    its model: after model.close() the context is gone for this process's objects."""

    def __init__(self, cuda):
        self.buffers: Dict[str, object] = {}
        self.begin, self.end = cuda.Event(), cuda.Event()

    def get(self, kernels, key: str, nbytes: int):
        current = self.buffers.get(key)
        if current is None or current.nbytes < nbytes:
            if current is not None:
                current.free()
            self.buffers[key] = kernels.DeviceBuffer(max(nbytes, 1))
        return self.buffers[key]

    def free(self) -> None:
        """Free the buffers and events; the model's context must be current."""
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers.clear()
        self.begin = self.end = None                 # last references: destroyed now, context current


class GpuFrontEnd:
    """Log-mel + face crops by the CUDA kernels into `model`'s input buffers, then execute.

    model: a TensorRTModel. spec: the audio front-end (the model's: frontend.AudioSpec()).
    Thread-safe: each thread uses its own engine state (TensorRTModel) and scratch buffers
    (PCM and frame: ~6 MB with a 1080p camera; two events). As TensorRTModel does, a new
    thread's scratch first frees the scratches of threads that have ended (a server with a
    thread per request does not grow); the rest are freed by close().
    """

    def __init__(self, model, spec: frontend.AudioSpec = frontend.AudioSpec(), face_size: int = frontend.FACE_SIZE):
        check_available(model)
        self.kernels = _kernels()
        self.model = model
        self.spec = spec
        self.face_size = face_size
        self._scratches = PerThread(lambda: _Scratch(model.cuda))
        with model.active():
            self.filterbank = self.kernels.upload_filterbank(spec)        # (n_mels, n_fft//2+1) float32
            # uploaded on the legacy stream, which the model's non-blocking streams do not wait for
            self.kernels.synchronize()

    def shapes(self, n_samples: int, n_ticks: int) -> Dict[str, tuple]:
        """Input shapes (B=1) of a window of n_samples PCM samples and n_ticks face ticks."""
        t_audio = max(1, frontend.n_audio_frames(n_samples, self.spec))
        t_video = max(1, n_ticks)
        size = self.face_size
        return {"audio": (1, t_audio, self.spec.n_mels), "audio_mask": (1, t_audio),
                "face": (1, t_video, 1, size, size), "face_mask": (1, t_video), "presence": (1, 2)}

    def run(self, pcm: np.ndarray, ticks: Sequence[Tuple[Optional[np.ndarray], Optional[Sequence[float]]]],
            audio_present: Optional[bool] = None, keep_inputs: bool = False,
            channel_order: str = "bgr") -> Tuple[Result, Optional[Dict[str, np.ndarray]]]:
        """One window -> (Result, the five inputs as float32 host arrays when keep_inputs else None).

        pcm: (n,) int16 or float32 in [-1, 1) at 16 kHz. ticks: per face tick, (frame (H, W, 3)
        uint8, square box (x, y, w, h) in pixels as frontend.square_box gives) or (None/frame,
        None) for no face; ticks sharing a frame object upload it once. audio_present: presence
        flag (default: at least one audio frame). timings: 'preprocess' (host ms to enqueue),
        'preprocess_gpu' (GPU ms of uploads + kernels), then the engine's.
        """
        kernels, model = self.kernels, self.model
        started = time.perf_counter()
        pcm = np.asarray(pcm)
        pcm = np.ascontiguousarray(pcm, dtype=np.int16 if pcm.dtype == np.int16 else np.float32)
        if pcm.ndim != 1:
            raise GpuFrontEndError(f"pcm must be mono (n,); got shape {pcm.shape}.")
        shapes = self.shapes(pcm.shape[0], len(ticks))
        n_frames = frontend.n_audio_frames(pcm.shape[0], self.spec)
        face_valid = np.array([frame is not None and box is not None for frame, box in ticks], bool)
        with model.active():
            slots = model.device_inputs(shapes)
            stream = slots["audio"].stream
            cuda = model.cuda
            scratch = self._scratches.get()
            begin, end = scratch.begin, scratch.end          # per thread, reused: see _Scratch
            begin.record(stream)
            audio = slots["audio"]
            if n_frames < shapes["audio"][1]:
                memset_async(audio.ptr, audio.nbytes, stream.handle)          # empty window: zeros
            if n_frames > 0:
                pcm_device = scratch.get(kernels, "pcm", pcm.nbytes)
                pcm_device.upload(pcm, stream)
                kernels.log_mel_device(pcm_device, pcm.shape[0], pcm.dtype, self.filterbank, audio.ptr,
                                       time_capacity=shapes["audio"][1], out_dtype=audio.dtype,
                                       spec=self.spec, stream=stream)
            face = slots["face"]
            memset_async(face.ptr, face.nbytes, stream.handle)                # ticks without a face
            self._crop_faces(scratch, ticks, face, shapes["face"][1], channel_order, stream)
            end.record(stream)
            host_inputs = {
                "audio_mask": (np.arange(shapes["audio"][1]) < n_frames).astype(np.float32)[None],
                "face_mask": np.zeros(shapes["face_mask"], np.float32),
                "presence": np.array([[float(n_frames > 0 if audio_present is None else audio_present),
                                       float(face_valid.any())]], np.float32),
            }
            host_inputs["face_mask"][0, :len(ticks)] = face_valid
            preprocess_ms = (time.perf_counter() - started) * 1e3
            result = model.execute_prefilled(shapes, host_inputs=host_inputs, preprocess_ms=preprocess_ms)
            result.timings["preprocess_gpu"] = end.time_since(begin)            # synchronised by the run
            inputs = None
            if keep_inputs:
                inputs = dict(host_inputs)
                for name in ("audio", "face"):
                    slot = slots[name]
                    # on the engine's (non-blocking) stream, not the legacy one; async needs page-locked memory
                    host = cuda.pagelocked_empty(slot.shape, slot.dtype)
                    cuda.memcpy_dtoh_async(host, slot.ptr, stream)
                    stream.synchronize()
                    inputs[name] = host.astype(np.float32)
                    host.base.free()                            # now, with the context current
        return result, inputs

    def _crop_faces(self, scratch: _Scratch, ticks, face, t_video: int, channel_order: str, stream) -> None:
        """Upload each distinct frame once and crop its ticks' boxes into face[0, tick]."""
        by_frame: Dict[int, list] = {}
        for tick, (frame, box) in enumerate(ticks):
            if frame is not None and box is not None:
                by_frame.setdefault(id(frame), []).append((tick, frame, box))
        for entries in by_frame.values():
            image = np.ascontiguousarray(entries[0][1])
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise GpuFrontEndError(f"frames must be uint8 (H, W, 3); got {image.dtype} {image.shape}.")
            frame_device = scratch.get(self.kernels, "frame", image.nbytes)
            frame_device.upload(image, stream)          # stream-ordered after the previous frame's crops
            boxes = np.array([box for _, _, box in entries], np.float32)
            slots = np.array([(0, tick) for tick, _, _ in entries], np.int32)
            self.kernels.face_crops_device(frame_device, image.shape[0], image.shape[1], image.strides[0], boxes,
                                           slots, face.ptr, out_batch=1, out_time=t_video, size=self.face_size,
                                           channel_order=channel_order, out_dtype=face.dtype, stream=stream)

    def close(self) -> None:
        """Free the device filterbank and every thread's scratch buffers. Idempotent."""
        if self.filterbank is None:
            return
        with self.model.active():
            self._scratches.free_all()
            self.filterbank.free()
            self.filterbank = None
