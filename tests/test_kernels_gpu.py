"""kernels/ CUDA path against the numpy front-ends, and writing straight into engine-shaped device
buffers. Marked `gpu`: skipped (with the reason) by conftest's probe on machines without one.
Timings are printed for the record; the speed targets live in benchmarks/bench_kernels.py."""
from __future__ import annotations

import time

import numpy as np
import pytest

from edge_ladder import frontend, kernels
from test_kernels import (assert_fp16_within_one_ulp, assert_fp32_close, camera_frame, face_boxes,
                                random_pcm)

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda_library():
    kernels._reset_library_cache()
    if not kernels.built_with_cuda():
        pytest.fail(f"a GPU is present but the kernels library has no CUDA code ({kernels.build_info()}); "
                    f"rebuild with nvcc on PATH: make kernels")
    assert kernels.has_cuda(), "the CUDA runtime sees no device although the driver does"
    print(f"{kernels.cuda_device_name()}: {kernels.build_info()}")


def _median_ms(function, repeats: int = 20) -> float:
    function()                                                          # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


@pytest.mark.parametrize("pcm_dtype", [np.int16, np.float32])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_log_mel_cuda_matches_numpy(pcm_dtype, out_dtype):
    pcm = random_pcm(np.random.default_rng(), frontend.SAMPLE_RATE + 37, pcm_dtype)
    ref = frontend.log_mel(pcm).astype(np.float64)
    got = kernels.log_mel(pcm, dtype=out_dtype, device="cuda")
    assert got.shape == ref.shape
    if out_dtype == np.float32:
        assert_fp32_close(got, ref, "cuda log-mel")
    else:
        assert_fp16_within_one_ulp(got, ref, "cuda log-mel")


@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_log_mel_device_writes_into_engine_audio_slot(out_dtype):
    """(B=3, T_max=240, 80) device buffer; slot 2, time offset 11, on the default stream."""
    rng = np.random.default_rng()
    batch, t_max, n_mels = 3, 240, frontend.N_MELS
    initial = rng.standard_normal((batch, t_max, n_mels)).astype(out_dtype)
    pcm = random_pcm(rng, 2 * frontend.SAMPLE_RATE + 37, np.int16)
    itemsize = np.dtype(out_dtype).itemsize
    with kernels.DeviceBuffer.from_array(initial) as audio, kernels.DeviceBuffer.from_array(pcm) as pcm_dev, \
            kernels.upload_filterbank() as filterbank:
        n_frames = kernels.log_mel_device(pcm_dev, pcm.size, np.int16, filterbank,
                                          audio.ptr + 2 * t_max * n_mels * itemsize, out_dtype=out_dtype,
                                          time_offset=11, time_capacity=t_max)
        result = audio.download(initial.shape, out_dtype)
    ref = frontend.log_mel(pcm).astype(np.float64)
    assert n_frames == ref.shape[0] == 198
    written = result[2, 11:11 + n_frames]
    (assert_fp32_close if out_dtype == np.float32 else assert_fp16_within_one_ulp)(written, ref, "slot")
    untouched = np.ones(initial.shape, bool)
    untouched[2, 11:11 + n_frames] = False
    np.testing.assert_array_equal(result[untouched], initial[untouched])


def test_log_mel_cuda_matches_host_path():
    pcm = random_pcm(np.random.default_rng(), 3 * frontend.SAMPLE_RATE + 101, np.float32)
    host = kernels.log_mel(pcm, device="host").astype(np.float64)
    assert_fp32_close(kernels.log_mel(pcm, device="cuda"), host, "cuda vs host")


@pytest.mark.parametrize("channel_order", ["bgr", "rgb"])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_face_crops_cuda_match_numpy(channel_order, out_dtype):
    rng = np.random.default_rng()
    frame = camera_frame(rng)                                          # 1081 x 1921, pitched
    boxes = face_boxes(frame.shape)
    ref = np.stack([frontend.face_crop(frame, box, 48, channel_order) for box in boxes]).astype(np.float64)
    got = kernels.face_crops(frame, boxes, channel_order=channel_order, dtype=out_dtype, device="cuda")
    (assert_fp32_close if out_dtype == np.float32 else assert_fp16_within_one_ulp)(got, ref, "cuda faces")


def test_face_crops_device_write_engine_face_slots():
    """100 boxes (two launches of 64) into (B=4, T_v=30, 1, 48, 48) fp16 slots."""
    rng = np.random.default_rng()
    frame = camera_frame(rng, 720, 1283)
    n_boxes = 100
    sides = rng.uniform(20, 300, n_boxes)
    boxes = np.stack([rng.uniform(-50, 1250, n_boxes), rng.uniform(-50, 700, n_boxes), sides, sides], 1)
    boxes = boxes.astype(np.float32)
    flat = rng.choice(4 * 30, n_boxes, replace=False)
    slots = np.stack([flat // 30, flat % 30], 1)
    initial = rng.standard_normal((4, 30, 1, 48, 48)).astype(np.float16)
    span = (frame.shape[0] - 1) * frame.strides[0] + frame.shape[1] * 3
    parent = frame.base if frame.base is not None else frame
    frame_bytes = np.ascontiguousarray(parent).reshape(-1)[:span]
    with kernels.DeviceBuffer.from_array(frame_bytes) as frame_dev, kernels.DeviceBuffer.from_array(initial) as face:
        kernels.face_crops_device(frame_dev, frame.shape[0], frame.shape[1], frame.strides[0], boxes, slots, face,
                                  out_batch=4, out_time=30, out_dtype=np.float16, channel_order="rgb")
        result = face.download(initial.shape, np.float16)
    written = np.zeros((4, 30), bool)
    for box, (b, t) in zip(boxes, slots):
        written[b, t] = True
        assert_fp16_within_one_ulp(result[b, t, 0], frontend.face_crop(frame, box, 48, "rgb").astype(np.float64),
                                   f"slot {(b, t)}")
    np.testing.assert_array_equal(result[~written], initial[~written])


def test_cuda_refuses_host_pointers_by_name():
    pcm = np.random.default_rng().standard_normal(4000).astype(np.float32)
    with kernels.upload_filterbank() as filterbank, kernels.DeviceBuffer(50 * 80 * 4) as out:
        with pytest.raises(kernels.KernelError, match="pcm=.*host memory"):
            kernels.log_mel_device(pcm.ctypes.data, pcm.size, np.float32, filterbank, out, time_capacity=50)


def test_print_cuda_timings():
    """For the record (not asserted): 2 s log-mel and 1080p + 4 faces, numpy vs CUDA kernel only."""
    rng = np.random.default_rng()
    pcm = random_pcm(rng, 2 * frontend.SAMPLE_RATE, np.int16)
    frame = camera_frame(rng, 1080, 1920, pad=0)
    boxes = face_boxes(frame.shape)
    numpy_audio = _median_ms(lambda: frontend.log_mel(pcm), 10)
    numpy_faces = _median_ms(lambda: [frontend.face_crop(frame, box) for box in boxes], 10)
    with kernels.DeviceBuffer.from_array(pcm) as pcm_dev, kernels.upload_filterbank() as filterbank, \
            kernels.DeviceBuffer(200 * 80 * 2) as audio, kernels.DeviceBuffer.from_array(frame) as frame_dev, \
            kernels.DeviceBuffer(4 * 48 * 48 * 2) as face:
        def audio_kernel():
            kernels.log_mel_device(pcm_dev, pcm.size, np.int16, filterbank, audio, out_dtype=np.float16,
                                   time_capacity=200)
            kernels.synchronize()

        def face_kernel():
            kernels.face_crops_device(frame_dev, 1080, 1920, 1920 * 3, boxes, [[0, t] for t in range(4)], face,
                                      out_batch=1, out_time=4, out_dtype=np.float16)
            kernels.synchronize()
        cuda_audio, cuda_faces = _median_ms(audio_kernel), _median_ms(face_kernel)
    print(f"log-mel 2 s: numpy {numpy_audio:.3f} ms, cuda {cuda_audio:.3f} ms ({numpy_audio / cuda_audio:.1f}x); "
          f"faces 1080p x4: numpy {numpy_faces:.3f} ms, cuda {cuda_faces:.3f} ms ({numpy_faces / cuda_faces:.1f}x)")
