"""The numpy front-ends against independent oracles: librosa for log-mel, cv2/np.pad for crops."""
import numpy as np
import pytest

from edge_ladder import frontend

librosa = pytest.importorskip("librosa", reason="librosa is the log-mel oracle (pip install librosa)")


def speech_like(rng, n_samples):
    """Harmonics with a moving pitch, bursts of noise and silences: wide dynamic range."""
    t = np.arange(n_samples) / frontend.SAMPLE_RATE
    f0 = 120 + 60 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6))
    phase = 2 * np.pi * np.cumsum(f0) / frontend.SAMPLE_RATE
    voiced = sum(np.sin(h * phase) / h for h in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 3.7 * t + rng.uniform(0, 6)), 0, None)
    signal = envelope * voiced * 0.1 + rng.normal(0, 0.01, n_samples) * (envelope < 0.1)
    return signal.astype(np.float32)


def librosa_log_mel(samples):
    # librosa centres the 400-sample window inside the 512-sample frame: pad 56 zeros each side
    mel = librosa.feature.melspectrogram(
        y=np.pad(samples.astype(np.float32), 56), sr=16000, n_fft=512, win_length=400, hop_length=160,
        n_mels=80, fmin=0, fmax=8000, htk=False, norm="slaney", center=False, power=2.0)
    return mel.T                                                            # (T, 80)


@pytest.mark.parametrize("n_samples", [16000 + 97, 400, 559, 37_123])
def test_log_mel_matches_librosa(n_samples):
    rng = np.random.default_rng(n_samples)
    samples = speech_like(rng, n_samples)
    ours = frontend.log_mel(samples)
    reference = librosa_log_mel(samples)
    assert ours.shape == reference.shape == (frontend.n_audio_frames(n_samples), 80)
    assert ours.dtype == np.float32
    audible = reference > 1e-6
    assert audible.mean() > 0.5
    error = np.abs(ours - np.log(np.maximum(reference, frontend.LOG_FLOOR)))[audible]
    print(f"log-mel vs librosa, n={n_samples}: max abs {error.max():.2e}, mean {error.mean():.2e}")
    assert error.max() < 1e-3


def test_log_mel_of_int16_equals_log_mel_of_scaled_float():
    rng = np.random.default_rng(1)
    pcm = (speech_like(rng, 8097) * 30000).astype(np.int16)
    np.testing.assert_allclose(frontend.log_mel(pcm), frontend.log_mel(pcm.astype(np.float32) / 32768.0),
                               atol=1e-5)


def test_filterbank_and_window_match_librosa_and_scipy():
    ours = frontend.mel_filterbank()
    reference = librosa.filters.mel(sr=16000, n_fft=512, n_mels=80, fmin=0, fmax=8000, htk=False, norm="slaney")
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-7)
    scipy_signal = pytest.importorskip("scipy.signal")
    np.testing.assert_allclose(frontend.hann_window(400), scipy_signal.get_window("hann", 400), atol=1e-7)


def test_log_mel_edge_cases_and_errors():
    assert frontend.log_mel(np.ones(399, np.float32)).shape == (0, 80)
    silence = frontend.log_mel(np.zeros(1000, np.float32))
    np.testing.assert_allclose(silence, np.log(frontend.LOG_FLOOR), rtol=1e-6)
    with pytest.raises(ValueError, match="mono"):
        frontend.log_mel(np.ones((1000, 2), np.float32))
    with pytest.raises(TypeError, match="int16 or float"):
        frontend.log_mel(np.ones(1000, np.int32))


def standardised(gray):
    gray = gray.astype(np.float32)
    return (gray - gray.mean()) / (gray.std() + frontend.FACE_STD_EPS)


def luma_bgr(frame):
    return frame[..., 0] * 0.114 + frame[..., 1] * 0.587 + frame[..., 2] * 0.299


def test_face_crop_at_scale_one_is_the_standardised_luma_of_the_region():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    crop = frontend.face_crop(frame, (17, 29, 48, 48))
    expected = standardised(luma_bgr(frame[29:77, 17:65].astype(np.float32)) / 255.0)
    np.testing.assert_allclose(crop, expected, atol=1e-4)
    assert crop.shape == (48, 48) and crop.dtype == np.float32


def test_face_crop_downscale_matches_opencv_bilinear():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    x, y, side = 23, 11, 96
    crop = frontend.face_crop(frame, (x, y, side, side))
    gray = luma_bgr(frame[y:y + side, x:x + side].astype(np.float32)) / 255.0
    reference = standardised(cv2.resize(gray, (48, 48), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_allclose(crop, reference, atol=2e-3)


def test_face_crop_clamps_at_frame_edges_like_edge_padding():
    rng = np.random.default_rng(4)
    frame = rng.integers(0, 256, (61, 83, 3), dtype=np.uint8)
    box = (-10.5, -7.25, 70.0, 70.0)                    # sticks out of the top-left corner
    pad = 40
    padded = np.pad(frame, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    crop = frontend.face_crop(frame, box)
    reference = frontend.face_crop(padded, (box[0] + pad, box[1] + pad, box[2], box[3]))
    np.testing.assert_allclose(crop, reference, atol=1e-4)


def test_face_crop_channel_order_flat_crops_and_errors():
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    box = (3.3, 2.7, 41.0, 37.0)
    np.testing.assert_allclose(frontend.face_crop(frame, box, channel_order="bgr"),
                               frontend.face_crop(frame[..., ::-1].copy(), box, channel_order="rgb"), atol=1e-5)
    flat = frontend.face_crop(np.full((50, 70, 3), 117, np.uint8), box)
    assert np.isfinite(flat).all() and np.abs(flat).max() < 1e-3
    with pytest.raises(ValueError, match="uint8"):
        frontend.face_crop(frame.astype(np.float32), box)
    with pytest.raises(ValueError, match="positive"):
        frontend.face_crop(frame, (1, 1, 0, 10))
    with pytest.raises(ValueError, match="channel_order"):
        frontend.face_crop(frame, box, channel_order="yuv")


def test_square_box_keeps_centre_and_grows_the_longer_side():
    x, y, w, h = frontend.square_box((10, 20, 40, 60), (120, 160, 3), scale=1.25)
    assert w == h == 75.0
    assert (x + w / 2, y + h / 2) == (30.0, 50.0)
