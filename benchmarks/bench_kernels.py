"""kernels/ speed against the numpy front-ends (pytest-benchmark; `make bench`).

    pytest benchmarks/bench_kernels.py --benchmark-only [--benchmark-json OUT.json]

Groups: "log-mel 2 s" (a 2 s int16 window -> (198, 80)) and "faces 1080p x4" (a 1920x1080 BGR
frame, 4 boxes -> 4 x 48x48). Variants: numpy (edge_ladder.frontend), the library's host path,
and on a GPU the CUDA kernel with its input already on the device (as in the TensorRT runtime,
which writes into the engine's input buffers) and with the input's host->device copy included.
GPU variants synchronise inside the timed region. At the end the speed-ups over numpy are
printed; the target is >= 20x for the CUDA kernel in both groups (asserted on GPU hosts).
"""
from __future__ import annotations

import numpy as np
import pytest

from edge_ladder import frontend, kernels

SPEEDUP_TARGET = 20.0
_MEANS: dict = {}                 # (group, variant) -> mean seconds


def _pcm(seconds: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(1)
    n = int(seconds * frontend.SAMPLE_RATE)
    t = np.arange(n) / frontend.SAMPLE_RATE
    signal = 0.1 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * 220.0 * t)
    return np.clip(signal * 32767, -32768, 32767).astype(np.int16)


def _frame_and_boxes():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
    detections = [(700.3, 300.7, 181.0, 203.5), (100.0, 80.0, 150.0, 133.3),
                  (1500.5, 700.25, 210.0, 190.0), (900.0, 600.0, 96.0, 88.0)]
    boxes = np.array([frontend.square_box(box, frame.shape) for box in detections], np.float32)
    return frame, boxes


def _record(benchmark, group: str, variant: str) -> None:
    """Keep the mean for the summary; the JSON gets the speed-up over numpy (measured first)."""
    if benchmark.stats is None:  # --benchmark-disable (CI runs the suite once, untimed)
        return
    mean = benchmark.stats.stats.mean
    _MEANS[(group, variant)] = mean
    base = _MEANS.get((group, "numpy"))
    if base and variant != "numpy":
        benchmark.extra_info["speedup_vs_numpy"] = base / mean


@pytest.fixture(scope="module", autouse=True)
def speedup_report(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"kernels: {kernels.build_info()}"]
    failures = []
    for group in ("log-mel 2 s", "faces 1080p x4"):
        base = _MEANS.get((group, "numpy"))
        for (g, variant), mean in sorted(_MEANS.items()):
            if g != group:
                continue
            ratio = f" = {base / mean:.1f}x numpy" if base else ""
            lines.append(f"  {group:15s} {variant:22s} {1e3 * mean:9.3f} ms{ratio}")
            if variant == "cuda kernel" and base and base / mean < SPEEDUP_TARGET:
                failures.append(f"{group}: {base / mean:.1f}x < {SPEEDUP_TARGET}x")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():               # teardown output is captured otherwise
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)
    assert not failures, "CUDA kernels below the speed-up target: " + "; ".join(failures)


@pytest.fixture(scope="module")
def library():
    if not kernels.is_built():
        pytest.fail(f"kernels library not built: {kernels.BUILD_COMMAND}")


# ---------------------------------------------------------------------------------------------
# log-mel, 2 s window

def test_log_mel_numpy(benchmark):
    benchmark.group = "log-mel 2 s"
    pcm = _pcm()
    result = benchmark(frontend.log_mel, pcm)
    assert result.shape == (198, 80)
    _record(benchmark, "log-mel 2 s", "numpy")


def test_log_mel_host(benchmark, library):
    benchmark.group = "log-mel 2 s"
    pcm = _pcm()
    out = np.empty((198, 80), np.float16)
    benchmark(kernels.log_mel, pcm, out=out)
    _record(benchmark, "log-mel 2 s", "host (fp16 out)")


@pytest.mark.gpu
@pytest.mark.parametrize("upload", [False, True], ids=["kernel", "with_upload"])
def test_log_mel_cuda(benchmark, library, upload):
    """The kernel with the PCM already on the device, or with its host->device copy included."""
    benchmark.group = "log-mel 2 s"
    pcm = _pcm()
    with kernels.DeviceBuffer.from_array(pcm) as pcm_dev, kernels.upload_filterbank() as filterbank, \
            kernels.DeviceBuffer(198 * 80 * 2) as audio:
        def run():
            if upload:
                pcm_dev.upload(pcm)
            kernels.log_mel_device(pcm_dev, pcm.size, np.int16, filterbank, audio, out_dtype=np.float16,
                                   time_capacity=198)
            kernels.synchronize()
        benchmark(run)
        _record(benchmark, "log-mel 2 s", "cuda + H2D pcm" if upload else "cuda kernel")


# ---------------------------------------------------------------------------------------------
# face crops, 1080p frame, 4 boxes

def test_faces_numpy(benchmark):
    benchmark.group = "faces 1080p x4"
    frame, boxes = _frame_and_boxes()
    benchmark(lambda: [frontend.face_crop(frame, box) for box in boxes])
    _record(benchmark, "faces 1080p x4", "numpy")


def test_faces_host(benchmark, library):
    benchmark.group = "faces 1080p x4"
    frame, boxes = _frame_and_boxes()
    out = np.empty((1, 4, 1, 48, 48), np.float16)
    slots = [[0, t] for t in range(4)]
    benchmark(kernels.face_crops, frame, boxes, out=out, slots=slots)
    _record(benchmark, "faces 1080p x4", "host (fp16 out)")


@pytest.mark.gpu
@pytest.mark.parametrize("upload", [False, True], ids=["kernel", "with_upload"])
def test_faces_cuda(benchmark, library, upload):
    """The kernel with the frame already on the device, or with its host->device copy included."""
    benchmark.group = "faces 1080p x4"
    frame, boxes = _frame_and_boxes()
    slots = [[0, t] for t in range(4)]
    with kernels.DeviceBuffer.from_array(frame) as frame_dev, kernels.DeviceBuffer(4 * 48 * 48 * 2) as face:
        def run():
            if upload:
                frame_dev.upload(frame)
            kernels.face_crops_device(frame_dev, 1080, 1920, 1920 * 3, boxes, slots, face, out_batch=1,
                                      out_time=4, out_dtype=np.float16)
            kernels.synchronize()
        benchmark(run)
        _record(benchmark, "faces 1080p x4", "cuda + H2D frame" if upload else "cuda kernel")
