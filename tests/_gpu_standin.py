"""A GPU-input model for machines with a CUDA GPU and pycuda but no TensorRT.

`DeviceFedOnnxModel` is NOT TensorRT and proves nothing about engines. It is the ONNX Runtime
model (runtime.onnx_backend.OnnxModel) given TensorRTModel's device-input interface --
`active()`, `cuda`, `device_inputs(shapes)`, `execute_prefilled(shapes, host_inputs)` -- on
real pycuda allocations in the device's primary context (runtime.cuda.PrimaryContext, one
stream and buffer set per thread through runtime.cuda.PerThread). The CUDA front-end
(runtime.gpu_frontend) and Stream(frontend='auto') then run for real: the kernels write
log-mel frames and face crops into those device buffers in the engine-like input dtype
(float32 or float16), and execute_prefilled copies them back and runs ONNX Runtime, so a test
can compare the GPU-built inputs and results with the numpy front-end's.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from edge_ladder.runtime.base import validate_shapes
from edge_ladder.runtime.cuda import PerThread, PrimaryContext
from edge_ladder.runtime.onnx_backend import OnnxModel
from edge_ladder.runtime.trt_backend import DeviceInput, check_host_inputs


class _ThreadBuffers:
    def __init__(self, cuda):
        self.cuda = cuda
        self.stream = cuda.Stream(flags=1)             # non-blocking, as TensorRTModel's (runtime.cuda)
        self.allocations: Dict[str, tuple] = {}      # name -> (DeviceAllocation, nbytes)
        self.prepared: Optional[dict] = None

    def pointer(self, name: str, nbytes: int) -> int:
        current = self.allocations.get(name)
        if current is None or current[1] < nbytes:
            if current is not None:
                current[0].free()
            self.allocations[name] = (self.cuda.mem_alloc(max(nbytes, 1)), nbytes)
        return int(self.allocations[name][0])

    def free(self) -> None:
        for allocation, _ in self.allocations.values():
            allocation.free()
        self.allocations.clear()


class DeviceFedOnnxModel(OnnxModel):
    """See the module docstring. io_dtype: the dtype of the audio and face device buffers."""

    backend = "onnxruntime-device-fed (test stand-in, not TensorRT)"

    def __init__(self, path, io_dtype=np.float32, device: int = 0):
        super().__init__(path, intra_op_threads=1)
        self.io_dtype = np.dtype(io_dtype)
        self.gpu = PrimaryContext(device)
        self.cuda = self.gpu.cuda
        self._threads = PerThread(lambda: _ThreadBuffers(self.cuda))

    def active(self):
        return self.gpu.active()

    def _dtype(self, name: str) -> np.dtype:
        return self.io_dtype if name in ("audio", "face") else np.dtype(np.float32)

    def device_inputs(self, shapes: Mapping[str, tuple]) -> Dict[str, DeviceInput]:
        shapes = validate_shapes(shapes, self.inputs)
        with self.active():
            state = self._threads.get()
            state.prepared = dict(shapes)
            return {name: DeviceInput(name, state.pointer(name, int(np.prod(shape)) * self._dtype(name).itemsize),
                                      shape, self._dtype(name), state.stream)
                    for name, shape in shapes.items()}

    def execute_prefilled(self, shapes: Mapping[str, tuple], host_inputs: Optional[Mapping[str, np.ndarray]] = None,
                          preprocess_ms: Optional[float] = None):
        shapes = validate_shapes(shapes, self.inputs)
        host_inputs = check_host_inputs(host_inputs, shapes)
        with self.active():
            state = self._threads.get()
            assert state.prepared == shapes, "device_inputs(shapes) first, from this thread"
            state.stream.synchronize()
            arrays = {}
            for name in ("audio", "face"):
                host = np.empty(shapes[name], self._dtype(name))
                self.cuda.memcpy_dtoh(host, state.allocations[name][0])
                arrays[name] = host.astype(np.float32)
        arrays.update(host_inputs)
        return self.predict(arrays, preprocess_ms=preprocess_ms)

    def close(self) -> None:
        if not self.gpu._released:
            with self.active():
                self._threads.free_all()
            self.gpu.release()
        super().close()


def assert_stream_kernels_match_numpy(model, requested: str, input_dtype) -> None:
    """Stream(frontend=requested) on `model` (TensorRT, or DeviceFedOnnxModel) runs the CUDA
    kernels into its device inputs and gives the numpy front-end's inputs and labels.
    input_dtype: the device buffers' dtype (float16 rounds the kernels' output)."""
    from edge_ladder.runtime.stream import Stream
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 255, (120, 161, 3), dtype=np.uint8) for _ in range(13)]
    # faces in frames 0-5 only: 7 misses in a row outlast the stream's box reuse, so some ticks have none
    boxes = [[(20 + i, 15, 50, 58)] if i < 6 else [] for i in range(len(frames))]
    pcm = (rng.normal(0, 3000, 16000 * 3 + 97)).astype(np.int16)
    streams = [Stream(model, window_s=1.0, hop_s=0.5, smoothing=0.0, silence_dbfs=None, keep_inputs=True,
                      frontend=choice) for choice in ("numpy", requested)]
    assert streams[1].frontend == "kernels-cuda" and "kernels-cuda" in streams[1].describe()
    runs = []
    for stream in streams:
        for i, frame in enumerate(frames * 3):
            stream.feed_frame(frame, i / 10, boxes=boxes[i % len(frames)])
        runs.append(stream.feed_audio(pcm))
    want, got = runs
    assert len(got) == len(want) >= 4
    for g, w in zip(got, want):
        assert g.frontend == "kernels-cuda" and "preprocess_gpu" in g.timings
        for name in ("audio_mask", "face_mask", "presence"):
            np.testing.assert_array_equal(g.inputs[name], w.inputs[name], err_msg=name)
        rtol = 1e-3 if np.dtype(input_dtype) == np.float16 else 1e-4
        for name in ("audio", "face"):
            scale = np.abs(w.inputs[name]).max()
            np.testing.assert_allclose(g.inputs[name], w.inputs[name], rtol=rtol, atol=rtol * scale, err_msg=name)
        np.testing.assert_allclose(g.probs, w.probs, atol=1e-3)
        assert g.label == w.label
    face_ticks = np.concatenate([w.inputs["face_mask"].ravel() for w in want])
    assert 0 < face_ticks.sum() < face_ticks.size                  # windows with and without faces
    streams[1].close()
