"""runtime.cuda and runtime.gpu_frontend run for real on a CUDA GPU through pycuda, without
TensorRT (marked `gpu`; skipped, with the reason, where there is none). The engine is replaced
by tests/_gpu_standin.DeviceFedOnnxModel -- ONNX Runtime fed from the device buffers -- which
checks what the CUDA front-end writes, not TensorRT: the engine tests are test_runtime_trt.py."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_ladder import frontend, kernels

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def cuda_kernels():
    pytest.importorskip("pycuda", reason="the GPU runtime's buffers and streams use pycuda (pip install pycuda)")
    kernels._reset_library_cache()
    if not kernels.has_cuda():
        pytest.fail(f"a GPU is present but the kernels library cannot use it ({kernels.build_info()}); "
                    f"{kernels.BUILD_COMMAND}")


@pytest.fixture(scope="module")
def context():
    from edge_ladder.runtime.cuda import PrimaryContext
    ctx = PrimaryContext(0)
    yield ctx
    ctx.release()


def _window(rng, seconds=2.0, n_ticks=20, every_other_face=True):
    """PCM (int16) and face ticks: two camera frames shared by several ticks, some ticks faceless."""
    pcm = (rng.normal(0, 3000, int(seconds * frontend.SAMPLE_RATE) + 37)).astype(np.int16)
    frames = [rng.integers(0, 256, (241, 321, 3), dtype=np.uint8) for _ in range(2)]
    ticks = []
    for t in range(n_ticks):
        if every_other_face and t % 3 == 2:
            ticks.append((frames[t % 2], None))
        else:
            ticks.append((frames[t % 2], (30.0 + 3 * t, 20.5 + t, 90.0 + t, 90.0 + t)))
    return pcm, ticks


def _numpy_inputs(pcm, ticks, t_audio):
    """What features.batch_inputs-style padding makes of the same window with the numpy front-end."""
    mel = frontend.log_mel(pcm)
    audio = np.zeros((1, t_audio, frontend.N_MELS), np.float32)
    audio[0, :mel.shape[0]] = mel
    face = np.zeros((1, len(ticks), 1, frontend.FACE_SIZE, frontend.FACE_SIZE), np.float32)
    face_mask = np.zeros((1, len(ticks)), np.float32)
    for t, (frame, box) in enumerate(ticks):
        if box is not None:
            face[0, t, 0] = frontend.face_crop(frame, box, frontend.FACE_SIZE, "bgr")
            face_mask[0, t] = 1
    return {"audio": audio, "audio_mask": (np.arange(t_audio) < mel.shape[0]).astype(np.float32)[None],
            "face": face, "face_mask": face_mask, "presence": np.array([[1, 1]], np.float32)}


def test_memset_async_clears_only_its_range_on_the_stream(context):
    from edge_ladder.runtime.cuda import memset_async
    cuda = context.cuda
    with context.active():
        stream = cuda.Stream()
        data = np.arange(4096, dtype=np.uint8)
        pointer = cuda.mem_alloc(data.nbytes)
        cuda.memcpy_htod(pointer, data)
        memset_async(int(pointer) + 100, 1000, stream.handle, value=7)
        stream.synchronize()
        got = np.empty_like(data)
        cuda.memcpy_dtoh(got, pointer)
        pointer.free()
    want = data.copy()
    want[100:1100] = 7
    np.testing.assert_array_equal(got, want)


def test_cuda_graph_replays_captured_kernels_with_current_buffer_contents(context):
    """CudaGraph captures the log-mel kernel on a pycuda stream without running it; each launch
    reruns it on whatever the PCM buffer holds then."""
    from edge_ladder.runtime.cuda import CudaGraph
    rng = np.random.default_rng(1)
    first = (rng.normal(0, 3000, 2 * frontend.SAMPLE_RATE)).astype(np.int16)
    second = (rng.normal(0, 300, first.size)).astype(np.int16)
    n_frames = frontend.n_audio_frames(first.size)
    with context.active():
        stream = context.new_stream()                            # non-blocking, as the runtime's
        with kernels.upload_filterbank() as filterbank, kernels.DeviceBuffer.from_array(first) as pcm, \
                kernels.DeviceBuffer(n_frames * frontend.N_MELS * 4) as out:
            kernels.DeviceBuffer.upload(out, np.full((n_frames, frontend.N_MELS), -1.0, np.float32))
            kernels.synchronize()
            graph = CudaGraph()

            def enqueue():
                kernels.log_mel_device(pcm, first.size, np.int16, filterbank, out, time_capacity=n_frames,
                                       stream=stream)
                return True
            assert graph.capture(stream.handle, enqueue), graph.failure
            stream.synchronize()
            untouched = out.download((n_frames, frontend.N_MELS), np.float32)
            assert (untouched == -1.0).all(), "capturing must not run the kernel"
            results = []
            for samples in (first, second):
                pcm.upload(samples)
                kernels.synchronize()
                graph.launch(stream.handle)
                stream.synchronize()
                results.append(out.download((n_frames, frontend.N_MELS), np.float32))
            graph.destroy()
            graph.destroy()                                      # idempotent
    for got, samples in zip(results, (first, second)):
        np.testing.assert_allclose(got, frontend.log_mel(samples), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("io_dtype", [np.float32, np.float16])
def test_gpu_frontend_writes_the_numpy_frontends_inputs(tiny_export, io_dtype):
    from _gpu_standin import DeviceFedOnnxModel
    from edge_ladder.runtime.gpu_frontend import GpuFrontEnd
    model = DeviceFedOnnxModel(tiny_export / "model.onnx", io_dtype=io_dtype)
    gpu = GpuFrontEnd(model)
    rng = np.random.default_rng(2)
    tolerance = 1e-4 if io_dtype == np.float32 else 2e-3
    for seconds, n_ticks in ((2.0, 20), (1.0, 10), (0.01, 3)):      # the last: too short for one audio frame
        pcm, ticks = _window(rng, seconds, n_ticks)
        result, inputs = gpu.run(pcm, ticks, keep_inputs=True)
        want = _numpy_inputs(pcm, ticks, gpu.shapes(pcm.size, n_ticks)["audio"][1])
        if seconds < 0.1:
            want["presence"][0, 0] = 0.0
        for name in ("audio_mask", "face_mask", "presence"):
            np.testing.assert_array_equal(inputs[name], want[name], err_msg=name)
        for name in ("audio", "face"):
            scale = max(1.0, float(np.abs(want[name]).max()))
            np.testing.assert_allclose(inputs[name], want[name], rtol=tolerance, atol=tolerance * scale,
                                       err_msg=name)
        reference = model.predict(want)
        np.testing.assert_allclose(result.probs, reference.probs, atol=10 * tolerance)
        assert result.timings["preprocess_gpu"] > 0 and result.timings["preprocess"] > 0
    gpu.close()
    gpu.close()                                                   # idempotent
    model.close()


def test_gpu_frontend_threads_each_get_the_serial_results(tiny_export):
    """Per-thread scratch buffers and events: 4 threads x 6 windows == the same windows serially."""
    from _gpu_standin import DeviceFedOnnxModel
    from edge_ladder.runtime.gpu_frontend import GpuFrontEnd
    model = DeviceFedOnnxModel(tiny_export / "model.onnx")
    gpu = GpuFrontEnd(model)
    rng = np.random.default_rng(3)
    windows = [_window(rng, 1.0 + 0.25 * i, 8 + i) for i in range(6)]
    serial = [gpu.run(pcm, ticks)[0].probs for pcm, ticks in windows]
    bad = []

    def worker():
        for i, (pcm, ticks) in enumerate(windows):
            if not np.array_equal(gpu.run(pcm, ticks)[0].probs, serial[i]):
                bad.append(i)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not bad
    gpu.close()
    model.close()


def test_stream_auto_frontend_uses_the_cuda_kernels(tiny_export):
    """Stream(frontend='auto') on a model with device inputs picks the CUDA kernels and gives the
    numpy front-end's inputs and labels."""
    from _gpu_standin import DeviceFedOnnxModel, assert_stream_kernels_match_numpy
    model = DeviceFedOnnxModel(tiny_export / "model.onnx", io_dtype=np.float16)
    assert_stream_kernels_match_numpy(model, requested="auto", input_dtype=np.float16)
    model.close()
