"""Streaming: a generated corpus clip fed as live audio chunks + camera frames gives, per
window, exactly the offline path's features and prediction on the same samples and frames."""
from __future__ import annotations

import numpy as np
import pytest

from _runtime_standin import make_standin_onnx
from edge_ladder import frontend, media, runtime
from edge_ladder.faces import track_boxes
from edge_ladder.features import batch_inputs
from edge_ladder.runtime.stream import AudioRing, Stream, StreamError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from edge_ladder.corpus import make_corpus
    return make_corpus(tmp_path_factory.mktemp("corpus"), actors=1, clips_per_actor=2, seed=3, workers=1)


@pytest.fixture(scope="module")
def clip(corpus):
    """(pcm int16, camera frames at the file's rate, their times, model-rate frames) of one clip."""
    cv2 = pytest.importorskip("cv2")
    wav = sorted((corpus / "AudioWAV").glob("*.wav"))[0]
    flv = corpus / "VideoFlash" / (wav.stem + ".flv")
    pcm, rate = media.read_wav(wav)
    assert rate == frontend.SAMPLE_RATE
    capture = cv2.VideoCapture(str(flv))
    fps = capture.get(cv2.CAP_PROP_FPS)
    raw = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        raw.append(frame)
    capture.release()
    frames10, _ = media.read_video(flv)
    return pcm, raw, np.arange(len(raw)) / fps, frames10


@pytest.fixture(scope="module")
def model(tiny_export):
    return runtime.load(tiny_export / "model.onnx", intra_op_threads=1)


def feed_live(stream, pcm, frames, times, seed, audio_dtype=np.int16, t_offset=0.0):
    """Interleave random-size audio chunks and camera frames in arrival order (a chunk arrives
    when its last sample is recorded, a frame at its timestamp)."""
    rng = np.random.default_rng(seed)
    events, pos = [], 0
    samples = pcm if audio_dtype == np.int16 else pcm.astype(np.float32) / 32768.0
    while pos < len(pcm):
        n = int(rng.integers(1, 3000))
        events.append(((pos + n) / frontend.SAMPLE_RATE, 1, samples[pos:pos + n]))
        pos += n
    events += [(t, 0, frame) for t, frame in zip(times, frames)]
    predictions = []
    for t, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
        if kind:
            predictions += stream.feed_audio(item)
        else:
            stream.feed_frame(item, t + t_offset)
    return predictions


def offline_clip(pcm, frames10, detector):
    """The offline path on the whole recording, as prepare and infer compute it: log-mel of all
    samples, the tracking rule over all model-rate frames, their crops."""
    face, valid = media.face_features(frames10, detector.track(frames10))
    return frontend.log_mel(pcm), face, valid


def offline_window(offline, t_start, t_end):
    """The offline features' slice for window [t_start, t_end): audio frames of samples
    [s0, s1), ticks k with t_start <= k / 10 < t_end."""
    audio, face, valid = offline
    s0, s1 = round(t_start * frontend.SAMPLE_RATE), round(t_end * frontend.SAMPLE_RATE)
    f0, n = s0 // frontend.HOP, frontend.n_audio_frames(s1 - s0)
    k0, k1 = round(t_start * frontend.VIDEO_FPS), int(np.ceil(t_end * frontend.VIDEO_FPS - 1e-9))
    return batch_inputs([audio[f0:f0 + n]], [face[k0:k1]], [valid[k0:k1]])


@pytest.mark.parametrize("window_s, hop_s, seed", [(2.0, 0.5, 0), (1.0, 0.3, 1), (0.7, 0.2, 2)])
def test_stream_windows_equal_the_offline_path(model, clip, window_s, hop_s, seed):
    from edge_ladder.faces import FaceDetector
    pcm, raw, times, frames10 = clip
    stream = Stream(model, window_s=window_s, hop_s=hop_s, smoothing=0.0, silence_dbfs=None, keep_inputs=True)
    predictions = feed_live(stream, pcm, raw, times, seed)
    duration = min(len(pcm) / frontend.SAMPLE_RATE, len(frames10) / frontend.VIDEO_FPS)
    expected_windows = int((len(pcm) - stream.window_samples) // stream.hop_samples) + 1
    assert len(predictions) == expected_windows >= 1
    compared = 0
    whole = offline_clip(pcm, frames10, FaceDetector())
    for p in predictions:
        assert p.t_end - p.t_start == pytest.approx(window_s)
        if p.t_end > duration + 1e-9:
            continue
        feeds = offline_window(whole, p.t_start, p.t_end)
        s0, s1 = round(p.t_start * frontend.SAMPLE_RATE), round(p.t_end * frontend.SAMPLE_RATE)
        np.testing.assert_array_equal(feeds["audio"][0], frontend.log_mel(pcm[s0:s1]))
        for name, value in feeds.items():
            np.testing.assert_array_equal(p.inputs[name], value, err_msg=f"{name} at t={p.t_start}")
        assert p.inputs["face_mask"].sum() > 0, "the generated clip shows a face"
        offline = model.predict(feeds)
        np.testing.assert_array_equal(p.probs, offline.probs[0])
        assert p.label == offline.labels[0]
        compared += 1
    assert compared == len([p for p in predictions if p.t_end <= duration + 1e-9]) >= 1
    assert [p.t_start for p in predictions] == pytest.approx([i * hop_s for i in range(len(predictions))])


def test_float_audio_and_a_clock_offset_give_the_same_windows(model, clip):
    pcm, raw, times, _ = clip
    base = feed_live(Stream(model, 1.0, 0.5, silence_dbfs=None), pcm, raw, times, seed=4)
    stream = Stream(model, 1.0, 0.5, silence_dbfs=None)
    stream.feed_frame(raw[0], 1000.0)                      # first feed sets the origin
    shifted = feed_live(stream, pcm, raw[1:], times[1:], seed=5, audio_dtype=np.float32, t_offset=1000.0)
    assert len(shifted) == len(base)
    for a, b in zip(base, shifted):
        assert b.t_start == pytest.approx(1000.0 + a.t_start)
        np.testing.assert_allclose(a.probs, b.probs, rtol=1e-6)


def test_silence_and_no_face_set_presence_instead_of_failing(model):
    rng = np.random.default_rng(0)
    stream = Stream(model, window_s=1.0, hop_s=0.5, silence_dbfs=-60.0, keep_inputs=True)
    # 1.5 s of near-silence (about -80 dBFS), camera frames of a blank wall with no boxes
    for i in range(15):
        stream.feed_frame(np.full((60, 80, 3), 90, np.uint8), i / 10, boxes=[])
    quiet = (rng.normal(0, 3, 24000)).astype(np.int16)
    predictions = stream.feed_audio(quiet)
    assert len(predictions) == 2
    for p in predictions:
        assert p.presence == (False, False)
        assert p.inputs["presence"].tolist() == [[0.0, 0.0]]
        assert np.isfinite(p.probs).all()
    # speech-level noise with a face box: both present
    stream.reset()
    frame = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    for i in range(11):
        stream.feed_frame(frame, i / 10, boxes=[(10, 10, 20, 24), (0, 0, 5, 5)])
    loud = rng.normal(0, 3000, 16000).astype(np.int16)
    (p,) = stream.feed_audio(loud)
    assert p.presence == (True, True) and p.inputs["face_mask"].sum() == 10
    expected = frontend.face_crop(frame, frontend.square_box((10, 10, 20, 24), frame.shape))
    np.testing.assert_array_equal(p.inputs["face"][0, 3, 0], expected)   # the largest box is used


def test_smoothing_is_an_exponential_moving_average(tiny_export, tmp_path):
    model = runtime.load(make_standin_onnx(tmp_path / "s.onnx", seed=1), intra_op_threads=1)
    rng = np.random.default_rng(1)
    stream = Stream(model, window_s=0.5, hop_s=0.5, smoothing=0.75)
    predictions = stream.feed_audio(rng.normal(0, 2000, 8000 * 3).astype(np.int16) * np.repeat([1, 3, 8], 8000).astype(np.int16))
    assert len(predictions) == 3
    expected = predictions[0].probs
    np.testing.assert_allclose(predictions[0].smoothed_probs, expected)
    for p in predictions[1:]:
        expected = 0.75 * expected + 0.25 * p.probs
        np.testing.assert_allclose(p.smoothed_probs, expected, rtol=1e-6)
        assert not np.allclose(p.probs, predictions[0].probs)


def test_stream_rejects_bad_input_clearly(model):
    with pytest.raises(StreamError, match="multiple of 1/VIDEO_FPS"):
        Stream(model, window_s=1.05)
    with pytest.raises(StreamError, match="must not exceed window_s"):
        Stream(model, window_s=1.0, hop_s=2.0)
    with pytest.raises(StreamError, match="16000 Hz"):
        Stream(model, sample_rate=44100)
    stream = Stream(model)
    with pytest.raises(StreamError, match="mono"):
        stream.feed_audio(np.zeros((100, 2), np.int16))
    with pytest.raises(StreamError, match="int16 or float"):
        stream.feed_audio(np.arange(100, dtype=np.int32))
    with pytest.raises(StreamError, match="uint8 \\(H, W, 3\\)"):
        stream.feed_frame(np.zeros((10, 10), np.uint8), 0.0)
    stream.feed_audio(np.ones(1600, np.int16), t=0.0)
    with pytest.raises(StreamError, match="time went backwards"):
        stream.feed_audio(np.ones(100, np.int16), t=0.05)
    stream.feed_frame(np.zeros((10, 10, 3), np.uint8), 0.5, boxes=[])
    with pytest.raises(StreamError, match="time order"):
        stream.feed_frame(np.zeros((10, 10, 3), np.uint8), 0.4, boxes=[])


def test_audio_gap_is_filled_with_silence(model):
    """A chunk timestamped after the expected time (dropped samples) is placed at its time."""
    rng = np.random.default_rng(3)
    chunks = [rng.normal(0, 2000, 4000).astype(np.int16) for _ in range(3)]
    stream = Stream(model, window_s=1.0, hop_s=1.0, silence_dbfs=None, keep_inputs=True)
    assert stream.feed_audio(chunks[0], t=0.0) == []
    assert stream.feed_audio(chunks[1], t=0.5) == []               # 0.25 s of samples were dropped
    (p,) = stream.feed_audio(chunks[2], t=0.75)
    joined = np.concatenate([chunks[0], np.zeros(4000, np.int16), chunks[1], chunks[2]])
    assert (p.t_start, p.t_end) == (0.0, 1.0)
    np.testing.assert_array_equal(p.inputs["audio"][0], frontend.log_mel(joined))


def test_ring_and_tracking_helpers():
    ring = AudioRing(10)
    ring.write(np.arange(7, dtype=np.float32))
    ring.write(np.arange(7, 13, dtype=np.float32))
    np.testing.assert_array_equal(ring.read(5, 13), np.arange(5, 13))
    with pytest.raises(StreamError):
        ring.read(2, 6)                                            # overwritten
    boxes = [None, (1, 1, 2, 2), None, None, None, (3, 3, 2, 2), None]
    assert track_boxes(boxes, 2) == [None, (1, 1, 2, 2), (1, 1, 2, 2), (1, 1, 2, 2), None, (3, 3, 2, 2), (3, 3, 2, 2)]
    assert track_boxes(boxes, 0) == boxes


# ---------------------------------------------------------------------------------------------
# front-end choice: numpy (the definition), the kernels' host path, errors for what cannot run

def _spy(monkeypatch, module, name, calls):
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)


def test_kernels_frontend_on_onnx_matches_numpy(model, clip, monkeypatch):
    from edge_ladder import kernels
    if not kernels.is_built():
        pytest.skip(f"kernels library not built ({kernels.BUILD_COMMAND})")
    calls = []
    _spy(monkeypatch, kernels, "log_mel", calls)
    _spy(monkeypatch, kernels, "face_crops", calls)
    pcm, raw, times, _ = clip
    reference = Stream(model, window_s=1.0, hop_s=0.3, smoothing=0.0, silence_dbfs=None, keep_inputs=True)
    stream = Stream(model, window_s=1.0, hop_s=0.3, smoothing=0.0, silence_dbfs=None, keep_inputs=True,
                    frontend="kernels")
    assert (reference.frontend, stream.frontend) == ("numpy", "kernels-host")
    assert "kernels-host" in stream.describe() and "numpy" in reference.describe()
    want = feed_live(reference, pcm, raw, times, seed=7)
    assert not calls, "the numpy front-end must not call the kernels"
    got = feed_live(stream, pcm, raw, times, seed=7)
    assert len(got) == len(want) >= 3
    assert calls.count("log_mel") == len(got) and calls.count("face_crops") > 0
    worst = {}
    for g, w in zip(got, want):
        assert g.frontend == "kernels-host" and w.frontend == "numpy"
        for name in ("audio_mask", "face_mask", "presence"):
            np.testing.assert_array_equal(g.inputs[name], w.inputs[name], err_msg=name)
        for name in ("audio", "face"):
            scale = np.abs(w.inputs[name]).max()
            np.testing.assert_allclose(g.inputs[name], w.inputs[name], rtol=1e-4, atol=1e-4 * scale, err_msg=name)
            worst[name] = max(worst.get(name, 0.0), float(np.abs(g.inputs[name] - w.inputs[name]).max() / scale))
        np.testing.assert_allclose(g.probs, w.probs, rtol=1e-4, atol=1e-6)
        assert g.label == w.label
    print(f"kernels-host vs numpy, max |diff| / max |value|: {worst}")


def test_frontend_choice_errors_are_clear(model, tmp_path, monkeypatch):
    from edge_ladder import kernels
    from edge_ladder.runtime.stream import choose_frontend
    with pytest.raises(StreamError, match="frontend must be one of numpy, kernels, auto"):
        Stream(model, frontend="cuda")
    auto = Stream(model, frontend="auto")              # ONNX Runtime model: no device buffers to write
    assert auto.frontend == "numpy" and "auto" in auto.frontend_reason and "onnxruntime model" in auto.describe()

    class EngineLike:                                  # what choose_frontend looks at in a TensorRT model
        backend, path = "tensorrt", tmp_path / "m.engine"

        def device_inputs(self, shapes):
            raise AssertionError("not called while choosing")
    if kernels.is_built() and not kernels.has_cuda():
        with pytest.raises(StreamError, match="TensorRT model: .*CUDA"):
            choose_frontend(EngineLike(), "kernels")
        assert choose_frontend(EngineLike(), "auto")[0] == "numpy"
    # the library not built: an error naming `make kernels`, never a silent numpy fallback
    monkeypatch.setattr(kernels, "library_candidates", lambda: [tmp_path / "missing" / "libedge_ladder_kernels.so"])
    monkeypatch.delenv(kernels.LIBRARY_ENV, raising=False)
    kernels._reset_library_cache()
    try:
        with pytest.raises(StreamError, match="make kernels"):
            Stream(model, frontend="kernels")
        assert Stream(model, frontend="auto").frontend == "numpy"
    finally:
        monkeypatch.undo()
        kernels._reset_library_cache()
