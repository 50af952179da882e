"""kernels/ host path against the numpy front-ends (edge_ladder.frontend defines the math), the
C argument checks, the fp16 rounding and the numpy fallback. The library is built by
`make kernels` (make test runs it first); these tests fail, not skip, when it is missing.
GPU comparisons are in test_kernels_gpu.py."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge_ladder import frontend, kernels
from edge_ladder.kernels import KernelError

FP32_TOLERANCE = 1e-4   # |kernel - numpy| <= 1e-4 * max(1, |numpy|)


@pytest.fixture(scope="module")
def lib():
    kernels._reset_library_cache()
    if not kernels.is_built():
        pytest.fail(f"the kernels library is not built (looked in {kernels.library_candidates()}); "
                    f"run: make kernels")
    return kernels._library()


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - ref) / np.maximum(1.0, np.abs(ref)), initial=0.0))


def assert_fp32_close(got, ref, what):
    error = relative_error(got, ref)
    mean = float(np.mean(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
    print(f"{what}: max rel error {error:.2e}, mean abs error {mean:.2e}")
    assert got.dtype == np.float32
    assert error <= FP32_TOLERANCE, f"{what}: max relative error {error:.3e} > {FP32_TOLERANCE}"


def assert_fp16_within_one_ulp(got, ref, what):
    """fp16 output vs the float64 numpy reference: within half an fp16 step (the rounding) plus
    the fp32 tolerance (the kernel's own error before rounding)."""
    assert got.dtype == np.float16
    ref16 = ref.astype(np.float16)
    allowed = 0.5 * np.spacing(np.abs(ref16)).astype(np.float64) + FP32_TOLERANCE * np.maximum(1.0, np.abs(ref))
    error = np.abs(got.astype(np.float64) - ref)
    print(f"{what}: max error / allowed {np.max(error / allowed):.2f}, equal to numpy's fp16 "
          f"{np.mean(got == ref16):.4f}")
    assert np.all(error <= allowed), f"{what}: {np.sum(error > allowed)} values off by more than allowed"


def random_pcm(rng, n_samples: int, dtype) -> np.ndarray:
    """Noise + a tone + a silent stretch (exercises the log floor); never all zeros."""
    t = np.arange(n_samples) / frontend.SAMPLE_RATE
    signal = 0.1 * rng.standard_normal(n_samples) + 0.3 * np.sin(2 * np.pi * rng.uniform(80, 4000) * t)
    silent = rng.integers(0, n_samples // 2)
    signal[silent:silent + 1200] = 0.0
    if dtype == np.int16:
        return np.clip(signal * 32767, -32768, 32767).astype(np.int16)
    return signal.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Build


def test_library_is_built_with_cuda_when_nvcc_is_present(lib):
    info = kernels.build_info()
    print(f"library {kernels.library_path()}: {info}")
    assert kernels.library_path().is_file()
    if shutil.which("nvcc"):
        assert kernels.built_with_cuda(), f"nvcc is on PATH but the library has no CUDA code: {info}"
        assert "architectures" in info


def test_importing_kernels_never_imports_torch():
    code = "import sys, edge_ladder.kernels as k; k.is_built(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------------------------------
# Log-mel


@pytest.mark.parametrize("pcm_dtype", [np.int16, np.float32])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_log_mel_host_matches_numpy(lib, pcm_dtype, out_dtype):
    rng = np.random.default_rng()
    pcm = random_pcm(rng, frontend.SAMPLE_RATE + 37, pcm_dtype)          # 1 s + 37 samples
    ref = frontend.log_mel(pcm).astype(np.float64)
    got = kernels.log_mel(pcm, dtype=out_dtype)
    assert got.shape == ref.shape == (98, frontend.N_MELS)
    assert np.any(ref < np.log(frontend.LOG_FLOOR) + 1e-3), "the silent stretch should reach the floor"
    if out_dtype == np.float32:
        assert_fp32_close(got, ref, f"log-mel {np.dtype(pcm_dtype)} -> fp32")
    else:
        assert_fp16_within_one_ulp(got, ref, f"log-mel {np.dtype(pcm_dtype)} -> fp16")


def test_log_mel_other_frame_sizes(lib):
    """Not tied to the model's 400/160/512/80: another power-of-two FFT, odd win and hop."""
    spec = frontend.AudioSpec(win=255, hop=97, n_fft=256, n_mels=40)
    rng = np.random.default_rng()
    pcm = random_pcm(rng, 5003, np.float32)
    ref = frontend.log_mel(pcm, spec).astype(np.float64)
    got = kernels.log_mel(pcm, spec=spec)
    assert got.shape == ref.shape == (1 + (5003 - 255) // 97, 40)
    assert_fp32_close(got, ref, "log-mel n_fft 256, win 255, hop 97")


def test_log_mel_uses_the_filterbank_it_is_given(lib):
    """The C side takes the filterbank as an argument: an all-zero filter gives log(floor), a
    scaled one shifts by log(scale)."""
    rng = np.random.default_rng()
    pcm = random_pcm(rng, 4000 + 37, np.float32)
    filterbank = frontend.mel_filterbank().copy()
    filterbank[3] = 0.0
    filterbank[50] *= 4.0
    out = np.empty((frontend.n_audio_frames(pcm.size), 80), np.float32)
    status = lib.elk_log_mel_host(pcm.ctypes.data, 1, pcm.size, 400, 160, 512, 80, filterbank.ctypes.data,
                                  1e-10, out.ctypes.data, 0, 80, 0, out.shape[0])
    assert status == kernels.OK, lib.elk_last_error()
    ref = frontend.log_mel(pcm).astype(np.float64)
    np.testing.assert_allclose(out[:, 3], np.log(np.float32(1e-10)), rtol=1e-6)
    loud = ref[:, 50] > np.log(1e-10) + 5
    np.testing.assert_allclose(out[loud, 50], ref[loud, 50] + np.log(4.0), atol=1e-4)
    keep = np.ones(80, bool)
    keep[[3, 50]] = False
    assert_fp32_close(out[:, keep], ref[:, keep], "other filters")


@pytest.mark.parametrize("n_samples, n_frames", [(0, 0), (399, 0), (400, 1), (559, 1), (560, 2)])
def test_log_mel_frame_count_edges(lib, n_samples, n_frames):
    pcm = np.random.default_rng().standard_normal(n_samples).astype(np.float32)
    got = kernels.log_mel(pcm)
    assert got.shape == (n_frames, frontend.N_MELS)
    assert lib.elk_log_mel_frame_count(n_samples, frontend.WIN, frontend.HOP) == n_frames
    if n_frames:
        assert_fp32_close(got, frontend.log_mel(pcm).astype(np.float64), f"{n_samples} samples")


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_log_mel_writes_into_a_batch_slot_of_the_engine_input(lib, dtype):
    """audio input (B, T_max, 80): only rows [offset, offset + T) of slot b change."""
    rng = np.random.default_rng()
    audio = rng.standard_normal((3, 131, frontend.N_MELS)).astype(dtype)
    before = audio.copy()
    pcm = random_pcm(rng, 16000 + 37, np.int16)
    rows = kernels.log_mel(pcm, out=audio[1], time_offset=7)
    assert rows.shape == (98, frontend.N_MELS) and np.shares_memory(rows, audio)
    ref = frontend.log_mel(pcm).astype(np.float64)
    if dtype == np.float32:
        assert_fp32_close(audio[1, 7:105], ref, "slot rows")
    else:
        assert_fp16_within_one_ulp(audio[1, 7:105], ref, "slot rows")
    changed = np.ones(audio.shape, bool)
    changed[1, 7:105] = False
    np.testing.assert_array_equal(audio[changed], before[changed])


def test_log_mel_into_strided_rows(lib):
    """Row stride > n_mels (a column window of a wider buffer) is honoured."""
    rng = np.random.default_rng()
    wide = rng.standard_normal((60, 97)).astype(np.float32)
    before = wide.copy()
    pcm = random_pcm(rng, 8000 + 11, np.float32)
    kernels.log_mel(pcm, out=wide[:, 5:85], time_offset=3)
    n_frames = frontend.n_audio_frames(pcm.size)
    assert_fp32_close(wide[3:3 + n_frames, 5:85], frontend.log_mel(pcm).astype(np.float64), "strided rows")
    np.testing.assert_array_equal(wide[:, :5], before[:, :5])
    np.testing.assert_array_equal(wide[:, 85:], before[:, 85:])
    np.testing.assert_array_equal(wide[:3], before[:3])


# ---------------------------------------------------------------------------------------------
# Face crops


def camera_frame(rng, height=1081, width=1921, pad=9):
    """A pitched (H, W, 3) view: rows of a wider buffer, so row pitch != 3 * width."""
    parent = rng.integers(0, 256, (height, width + pad, 3), dtype=np.uint8)
    frame = parent[:, :width]
    assert frame.strides[0] == 3 * (width + pad)
    return frame


def face_boxes(frame_shape):
    """4 squared boxes: inside, partly off the top-left, partly off the bottom-right, tiny."""
    detections = [(700.3, 300.7, 181.0, 203.5), (-60.2, -41.7, 150.0, 133.3),
                  (1840.5, 1010.25, 170.0, 160.0), (900.0, 600.0, 13.3, 11.1)]
    return np.array([frontend.square_box(box, frame_shape) for box in detections], np.float32)




@pytest.mark.parametrize("channel_order", ["bgr", "rgb"])
@pytest.mark.parametrize("out_dtype", [np.float32, np.float16])
def test_face_crops_host_match_numpy(lib, channel_order, out_dtype):
    rng = np.random.default_rng()
    frame = camera_frame(rng)
    boxes = face_boxes(frame.shape)
    ref = np.stack([frontend.face_crop(frame, box, 48, channel_order) for box in boxes]).astype(np.float64)
    got = kernels.face_crops(frame, boxes, channel_order=channel_order, dtype=out_dtype)
    assert got.shape == (4, 48, 48)
    if out_dtype == np.float32:
        assert_fp32_close(got, ref, f"face crops {channel_order} fp32")
    else:
        assert_fp16_within_one_ulp(got, ref, f"face crops {channel_order} fp16")


def test_face_crops_channel_order_matters(lib):
    rng = np.random.default_rng()
    frame = camera_frame(rng, 97, 131)
    boxes = np.array([[10.5, 7.25, 60.0, 60.0]], np.float32)
    bgr = kernels.face_crops(frame, boxes, channel_order="bgr")
    rgb = kernels.face_crops(frame, boxes, channel_order="rgb")
    assert np.abs(bgr - rgb).max() > 1e-2


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_face_crops_write_their_slots_of_the_engine_input(lib, dtype):
    rng = np.random.default_rng()
    frame = camera_frame(rng)
    boxes = face_boxes(frame.shape)
    face = rng.standard_normal((2, 5, 1, 48, 48)).astype(dtype)
    before = face.copy()
    slots = np.array([[0, 3], [1, 0], [1, 4], [0, 0]])
    assert kernels.face_crops(frame, boxes, out=face, slots=slots, channel_order="rgb") is face
    written = np.zeros((2, 5), bool)
    for box, (b, t) in zip(boxes, slots):
        written[b, t] = True
        ref = frontend.face_crop(frame, box, 48, "rgb").astype(np.float64)
        if dtype == np.float32:
            assert_fp32_close(face[b, t, 0], ref, f"slot {(b, t)}")
        else:
            assert_fp16_within_one_ulp(face[b, t, 0], ref, f"slot {(b, t)}")
    np.testing.assert_array_equal(face[~written], before[~written])


def test_face_crops_other_size_and_flat_crop(lib):
    """S = 37; a flat region (std 0) stays finite, as numpy's (crop - mean) / (0 + eps)."""
    rng = np.random.default_rng()
    frame = camera_frame(rng, 301, 403)
    frame[100:200, 100:200] = (17, 200, 90)
    boxes = np.array([[5.5, 9.0, 77.7, 77.7], [120.0, 120.0, 50.0, 50.0]], np.float32)
    ref = np.stack([frontend.face_crop(frame, box, 37) for box in boxes]).astype(np.float64)
    got = kernels.face_crops(frame, boxes, size=37)
    assert np.all(np.isfinite(got))
    assert_fp32_close(got, ref, "size 37 + flat crop")


# ---------------------------------------------------------------------------------------------
# fp16 rounding


def test_float_to_half_is_bit_exact_with_numpy(lib):
    rng = np.random.default_rng()
    random = (rng.standard_normal(20000) * np.exp2(rng.uniform(-30, 17, 20000))).astype(np.float32)
    halves = np.arange(0, 0x7c00, dtype=np.uint16).view(np.float16).astype(np.float32)
    ties = ((halves[:-1].astype(np.float64) + halves[1:]) / 2).astype(np.float32)   # exact midpoints
    special = np.array([0.0, -0.0, 65504, 65519.99, 65520, 7e4, np.inf, -np.inf, 2 ** -25, 2 ** -24,
                        1.5 * 2 ** -24, 2 ** -14, 2 ** -14 - 2 ** -30, 1e-30, -1e-8], np.float32)
    values = np.concatenate([random, -random, halves, ties, -ties, special])
    got = kernels.float_to_half(values)
    with np.errstate(over="ignore"):                                # 7e4 -> inf is intended
        want = values.astype(np.float16)
    mismatch = np.flatnonzero(got.view(np.uint16) != want.view(np.uint16))
    assert mismatch.size == 0, f"{mismatch.size} differ, e.g. {values[mismatch[:5]]}"
    assert np.isnan(kernels.float_to_half(np.array([np.nan], np.float32))[0])


# ---------------------------------------------------------------------------------------------
# Errors: the C side names the wrong argument; Python rejects bad shapes and dtypes.


def _log_mel_call(lib, **changes):
    rng = np.random.default_rng()
    pcm = rng.standard_normal(4000).astype(np.float32)
    filterbank = frontend.mel_filterbank()
    out = np.empty((50, 80), np.float32)
    args = dict(pcm=pcm.ctypes.data, pcm_format=1, n_samples=pcm.size, win=400, hop=160, n_fft=512,
                n_mels=80, mel_filterbank=filterbank.ctypes.data, log_floor=1e-10, out=out.ctypes.data,
                out_dtype=0, out_row_stride=80, out_time_offset=0, out_time_capacity=50)
    args.update(changes)
    status = lib.elk_log_mel_host(*args.values())
    return status, lib.elk_last_error().decode()


@pytest.mark.parametrize("changes, named", [
    (dict(n_fft=500), "n_fft"), (dict(win=600), "win"), (dict(hop=0), "hop"),
    (dict(pcm_format=7), "pcm_format"), (dict(out_dtype=5), "out_dtype"),
    (dict(out_time_capacity=20), "out_time_capacity"), (dict(out_row_stride=79), "out_row_stride"),
    (dict(mel_filterbank=None), "mel_filterbank"), (dict(log_floor=0.0), "log_floor"),
    (dict(n_mels=0), "n_mels"), (dict(out_time_offset=-1), "out_time_offset"),
    (dict(pcm=None), "pcm"), (dict(n_samples=-5), "n_samples"),
])
def test_c_log_mel_names_the_wrong_argument(lib, changes, named):
    ok_status, _ = _log_mel_call(lib)
    assert ok_status == kernels.OK
    status, message = _log_mel_call(lib, **changes)
    assert status == kernels.ERROR_INVALID_ARGUMENT
    assert message.startswith(named), message


def _face_call(lib, **changes):
    rng = np.random.default_rng()
    frame = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    boxes = np.array([[1, 2, 20, 20], [5, 5, 30, 30], [10, 10, 9, 9]], np.float32)
    boxes_changes = changes.pop("box", None)
    if boxes_changes:
        boxes[boxes_changes[0], boxes_changes[1]] = boxes_changes[2]
    slots = np.array([[0, 0], [0, 1], [1, 1]], np.int32)
    if "slot" in changes:
        slots[2] = changes.pop("slot")
    out = np.empty((2, 2, 1, 48, 48), np.float32)
    args = dict(frame=frame.ctypes.data, height=40, width=50, row_pitch=150, channel_order=0,
                boxes=boxes.ctypes.data, slots=slots.ctypes.data, n_boxes=3, size=48, out=out.ctypes.data,
                out_dtype=0, out_batch=2, out_time=2)
    args.update(changes)
    status = lib.elk_face_crops_host(*args.values())
    return status, lib.elk_last_error().decode()


@pytest.mark.parametrize("changes, named", [
    (dict(row_pitch=149), "row_pitch"), (dict(channel_order=3), "channel_order"),
    (dict(size=200), "size"), (dict(out_dtype=2), "out_dtype"), (dict(height=0), "frame size"),
    (dict(box=(1, 2, 0.0)), "boxes[1]"), (dict(box=(0, 0, np.nan)), "boxes[0].x"),
    (dict(box=(2, 3, -4.0)), "boxes[2]"), (dict(slot=(2, 0)), "slots[2] batch"),
    (dict(slot=(1, 2)), "slots[2] time"), (dict(frame=None), "frame"), (dict(out=None), "out"),
    (dict(out_batch=0), "out_batch"),
])
def test_c_face_crops_names_the_wrong_argument(lib, changes, named):
    assert _face_call(lib)[0] == kernels.OK
    status, message = _face_call(lib, **changes)
    assert status == kernels.ERROR_INVALID_ARGUMENT
    assert message.startswith(named), message


def test_cuda_entry_points_refuse_clearly(lib):
    """Without a GPU (here) the CUDA path says why; with one, a host pointer is refused by name."""
    pcm = np.random.default_rng().standard_normal(4000).astype(np.float32)
    filterbank = frontend.mel_filterbank()
    out = np.empty((50, 80), np.float32)
    status = lib.elk_log_mel_cuda(pcm.ctypes.data, 1, pcm.size, 400, 160, 512, 80, filterbank.ctypes.data,
                                  1e-10, out.ctypes.data, 0, 80, 0, 50, None)
    message = lib.elk_last_error().decode()
    print(message)
    assert status != kernels.OK and message.startswith("elk_log_mel_cuda")
    if kernels.has_cuda():
        assert status == kernels.ERROR_INVALID_ARGUMENT and "pcm" in message and "host memory" in message
    elif not kernels.built_with_cuda():
        assert status == kernels.ERROR_NO_CUDA
    else:
        assert status == kernels.ERROR_CUDA and "CUDA error" in message
        with pytest.raises(KernelError, match="no usable CUDA device"):
            kernels.log_mel(pcm, device="cuda")


@pytest.mark.parametrize("call, match", [
    (lambda: kernels.log_mel(np.ones(1000, np.int32)), "int16 or float"),
    (lambda: kernels.log_mel(np.ones((1000, 2), np.float32)), "mono"),
    (lambda: kernels.log_mel(np.ones(1000, np.float32), dtype=np.float64), "float32 or float16"),
    (lambda: kernels.log_mel(np.ones(1000, np.float32), device="gpu"), "device must be"),
    (lambda: kernels.log_mel(np.ones(1000, np.float32), out=np.empty((2, 80), np.float32)), "needs >= 4 rows"),
    (lambda: kernels.log_mel(np.ones(1000, np.float32), out=np.empty((9, 64), np.float32)), r"\(T_capacity, 80\)"),
    (lambda: kernels.log_mel(np.ones(1000, np.float32), out=np.empty((9, 80), np.float16),
                             dtype=np.float32), "out is float16"),
    (lambda: kernels.face_crops(np.ones((9, 9, 3), np.float32), [[0, 0, 4, 4]]), "uint8"),
    (lambda: kernels.face_crops(np.ones((9, 9, 3), np.uint8), [0, 0, 4, 4]), r"\(N, 4\)"),
    (lambda: kernels.face_crops(np.ones((9, 9, 3), np.uint8), [[0, 0, 4, 4]], channel_order="bgra"), "channel_order"),
    (lambda: kernels.face_crops(np.ones((9, 9, 3), np.uint8), [[0, 0, 4, 4]] * 2,
                                out=np.empty((1, 2, 1, 48, 48), np.float32), slots=[[0, 1], [0, 1]]), "distinct"),
    (lambda: kernels.face_crops(np.ones((9, 9, 3), np.uint8), [[0, 0, 4, 4]],
                                out=np.empty((1, 2, 1, 48, 48), np.float32)), "needs slots"),
    (lambda: kernels.face_crops(np.ones((9, 9, 3), np.uint8), [[0, 0, 4, 4]],
                                out=np.empty((1, 2, 48, 48), np.float32), slots=[[0, 0]]), r"\(B, T_v, 1"),
    (lambda: kernels.face_crops(np.ones((9, 9, 3), np.uint8), [[0, 0, 4, 4]],
                                out=np.empty((1, 2, 1, 48, 48), np.float32), slots=[[0, 2]]), "slots"),
])
def test_python_rejects_bad_inputs(lib, call, match):
    with pytest.raises(KernelError, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Finding the library; numpy fallback


@pytest.fixture
def unbuilt(monkeypatch, tmp_path):
    """The module as on a machine where `make kernels` never ran."""
    monkeypatch.delenv(kernels.LIBRARY_ENV, raising=False)
    monkeypatch.setattr(kernels, "library_candidates", lambda: [tmp_path / "libedge_ladder_kernels.so"])
    kernels._reset_library_cache()
    yield
    monkeypatch.undo()
    kernels._reset_library_cache()


def test_fallback_to_numpy_when_not_built(unbuilt):
    assert not kernels.is_built() and not kernels.has_cuda()
    rng = np.random.default_rng()
    pcm = random_pcm(rng, 8000 + 37, np.int16)
    with pytest.warns(kernels.KernelsFallbackWarning, match="make kernels") as record:
        got = kernels.log_mel(pcm)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    np.testing.assert_array_equal(got, frontend.log_mel(pcm))
    frame = camera_frame(rng, 97, 131)
    boxes = np.array([[3.5, 4.5, 50.0, 50.0]], np.float32)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                              # the notice comes once only
        crops = kernels.face_crops(frame, boxes, dtype=np.float16)
    np.testing.assert_array_equal(crops[0], frontend.face_crop(frame, boxes[0]).astype(np.float16))
    with pytest.raises(KernelError, match="not built") as error:
        kernels.log_mel(pcm, device="cuda")
    assert error.value.code == kernels.ERROR_NO_CUDA


def test_env_var_selects_the_library_and_must_exist(monkeypatch, tmp_path, lib):
    built = kernels.library_path()
    monkeypatch.setenv(kernels.LIBRARY_ENV, str(built))
    kernels._reset_library_cache()
    assert kernels.library_path() == built and kernels.is_built()
    monkeypatch.setenv(kernels.LIBRARY_ENV, str(tmp_path / "nowhere.so"))
    kernels._reset_library_cache()
    with pytest.raises(KernelError, match="does not exist"):
        kernels.is_built()
    monkeypatch.undo()
    kernels._reset_library_cache()
    assert kernels.is_built()


def test_host_only_build_from_the_same_sources(tmp_path):
    """CMake with EDGE_LADDER_WITH_CUDA=OFF (a machine without nvcc) builds the host library; its
    CUDA entry points say so."""
    if shutil.which("cmake") is None:
        pytest.fail("cmake is needed to build kernels/ (apt install cmake)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", root, "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                                "-DEDGE_LADDER_WITH_CUDA=OFF"], capture_output=True, text=True)
    assert configure.returncode == 0, configure.stdout + configure.stderr
    assert "host implementation only" in configure.stdout
    compile_ = subprocess.run(["cmake", "--build", str(build), "--parallel", "2"], capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stdout + compile_.stderr
    host_only = ctypes.CDLL(str(build / "libedge_ladder_kernels.so"))
    host_only.elk_built_with_cuda.restype = ctypes.c_int
    host_only.elk_last_error.restype = ctypes.c_char_p
    assert host_only.elk_built_with_cuda() == 0
    count = ctypes.c_int(-1)
    assert host_only.elk_cuda_device_count(ctypes.byref(count)) == kernels.ERROR_NO_CUDA
    assert b"built without CUDA" in host_only.elk_last_error()


def test_cmake_clamps_cuda_architectures_to_nvcc(tmp_path, monkeypatch):
    """EDGE_LADDER_CUDA_ARCHITECTURES from the environment; sm_72 (gone in CUDA 13) is dropped
    with a message when the found nvcc cannot target it; nothing left is a configure error."""
    nvcc = shutil.which("nvcc")
    if nvcc is None or shutil.which("cmake") is None:
        pytest.skip("needs nvcc and cmake on PATH (CI has both)")
    listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True).stdout
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("EDGE_LADDER_CUDA_ARCHITECTURES", "72,87")
    done = subprocess.run(["cmake", "-S", root, "-B", str(tmp_path / "b1")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "from the EDGE_LADDER_CUDA_ARCHITECTURES environment variable: 72,87" in done.stdout
    if "compute_72" in listed:
        assert "architectures: 72;87" in done.stdout
    else:
        assert "dropping CUDA architecture 72" in done.stdout and "architectures: 87" in done.stdout
    done = subprocess.run(["cmake", "-S", root, "-B", str(tmp_path / "b2"), "-DEDGE_LADDER_CUDA_ARCHITECTURES=12"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "none of the CUDA architectures '12'" in done.stdout + done.stderr
