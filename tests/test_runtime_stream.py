"""Streaming: a generated corpus clip fed as live audio chunks + camera frames gives, per
window, exactly the offline path's features and prediction on the same samples and frames."""
from __future__ import annotations

import threading
import time

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


def feed_live(stream, pcm, frames, times, seed, audio_dtype=np.int16, t_offset=0.0, frame_delay=0.0,
              max_chunk=3000, flush=False, audio_t=False, arrivals=None):
    """Interleave random-size audio chunks and camera frames in arrival order (a chunk arrives
    when its last sample is recorded, a frame frame_delay after its timestamp); collect the
    Predictions of both kinds of feed call (and of flush()); `arrivals` gets (arrival time,
    kind of call) per Prediction."""
    rng = np.random.default_rng(seed)
    events, pos = [], 0
    samples = pcm if audio_dtype == np.int16 else pcm.astype(np.float32) / 32768.0
    while pos < len(pcm):
        n = int(rng.integers(1, max_chunk))
        events.append(((pos + n) / frontend.SAMPLE_RATE, 1, (pos, samples[pos:pos + n])))
        pos += n
    events += [(t + frame_delay, 0, (t, frame)) for t, frame in zip(times, frames)]
    predictions = []
    for arrival, kind, item in sorted(events, key=lambda e: (e[0], e[1])):
        if kind:
            start, chunk = item
            t = t_offset + start / frontend.SAMPLE_RATE if audio_t else None
            out = stream.feed_audio(chunk, t=t)
        else:
            out = stream.feed_frame(item[1], item[0] + t_offset)
        predictions += out
        if arrivals is not None:
            arrivals += [(arrival, "audio" if kind else "frame")] * len(out)
    if flush:
        predictions += stream.flush()
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


@pytest.mark.parametrize("window_s, hop_s, seed, max_chunk", [
    (2.0, 0.5, 0, 3000), (1.0, 0.3, 1, 3000), (0.7, 0.2, 2, 3000),
    (1.3, 0.7, 3, 97), (0.9, 0.9, 4, 7919), (2.1, 0.1, 5, 400)])
def test_stream_windows_equal_the_offline_path(model, clip, monkeypatch, window_s, hop_s, seed, max_chunk):
    """Every window (and the last, partial one from flush()) has exactly the features and the
    prediction of the offline path on the whole recording, sliced to the window; each log-mel
    frame and each face crop is computed once, however many windows share it."""
    from edge_ladder.faces import FaceDetector
    pcm, raw, times, frames10 = clip
    crops = []
    original_crop = frontend.face_crop
    monkeypatch.setattr(frontend, "face_crop", lambda *a, **k: crops.append(1) or original_crop(*a, **k))
    stream = Stream(model, window_s=window_s, hop_s=hop_s, smoothing=0.0, silence_dbfs=None, keep_inputs=True)
    predictions = feed_live(stream, pcm, raw, times, seed, max_chunk=max_chunk, flush=True)
    monkeypatch.undo()
    duration = min(len(pcm) / frontend.SAMPLE_RATE, len(frames10) / frontend.VIDEO_FPS)
    full = int((len(pcm) - stream.window_samples) // stream.hop_samples) + 1 if len(pcm) >= stream.window_samples else 0
    has_tail = len(pcm) > (full - 1) * stream.hop_samples + stream.window_samples if full else True
    assert len(predictions) == full + has_tail >= 2
    assert [p.partial for p in predictions] == [False] * full + [True] * has_tail
    compared = 0
    whole = offline_clip(pcm, frames10, FaceDetector())
    for p in predictions:
        if not p.partial:
            assert p.t_end - p.t_start == pytest.approx(window_s)
        else:
            assert p.t_end == pytest.approx(len(pcm) / frontend.SAMPLE_RATE) and p.t_end - p.t_start < window_s
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
    # per-hop work: each frame / tick once, not once per window that holds it
    stats = stream.stats()
    last = predictions[-1]
    frames_used = set()
    for p in predictions:
        s0, s1 = round(p.t_start * frontend.SAMPLE_RATE), round(p.t_end * frontend.SAMPLE_RATE)
        frames_used.update(range(s0 // frontend.HOP, s0 // frontend.HOP + frontend.n_audio_frames(s1 - s0)))
    assert stats["log_mel_frames"] == len(frames_used)
    ticks_used = int(np.ceil(last.t_end * frontend.VIDEO_FPS - 1e-9))
    assert stats["face_ticks"] >= len(crops) >= ticks_used - 2 >= 1
    if hop_s < window_s:                                                  # windows share ticks: fewer crops
        assert stats["face_ticks"] > len(crops)
    assert len(crops) <= ticks_used + 3                                   # ticks decided ahead of the audio
    assert stats["tracker"]["region"] > stats["tracker"]["full"] >= 1


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


# ---------------------------------------------------------------------------------------------
# late frames, clocks and units, channel orders, threads


def _face_tick_share(predictions):
    masks = np.concatenate([p.inputs["face_mask"].ravel() for p in predictions])
    return float(masks.mean())


@pytest.mark.parametrize("delay, bound", [(0.3, None), (0.5, 0.5)])
def test_late_frames_are_waited_for_up_to_video_latency(model, clip, delay, bound):
    """Frames arriving 0.3 s (USB camera + decoding) or 0.5 s after their capture give the same
    windows as frames on time: a window waits for them (default bound 0.3 s; 0.5 s set), and is
    never later than its end + the bound in audio time. Without waiting (bound 0, the old
    behaviour) the late ticks have no face."""
    pcm, raw, times, _ = clip
    settings = dict(window_s=1.0, hop_s=0.5, smoothing=0.0, silence_dbfs=None, keep_inputs=True)
    on_time = feed_live(Stream(model, **settings), pcm, raw, times, seed=10, flush=True)
    arrivals = []
    options = {} if bound is None else {"video_latency_s": bound}
    stream = Stream(model, **settings, **options)
    assert stream.video_latency_s == (0.3 if bound is None else bound)
    late = feed_live(stream, pcm, raw, times, seed=10, frame_delay=delay, flush=True, arrivals=arrivals)
    assert len(late) == len(on_time) >= 3
    for a, b in zip(on_time, late):
        for name in a.inputs:
            np.testing.assert_array_equal(a.inputs[name], b.inputs[name], err_msg=f"{name} at {a.t_start}")
    assert _face_tick_share(late) == _face_tick_share(on_time) == 1.0
    waited = [kind for kind in arrivals if kind[1] == "frame"]
    assert waited, "some windows were completed by a late frame"
    for (arrival, _), p in zip(arrivals, late):
        assert arrival <= p.t_end + stream.video_latency_s + 3000 / frontend.SAMPLE_RATE
    no_wait = feed_live(Stream(model, **settings, video_latency_s=0.0), pcm, raw, times, seed=10, frame_delay=delay)
    print(f"frames {delay} s late: valid face ticks {100 * _face_tick_share(late):.0f} % with the bound, "
          f"{100 * _face_tick_share(no_wait):.0f} % without waiting")
    assert _face_tick_share(no_wait) < 0.9


def test_frames_later_than_the_bound_are_not_waited_for(model, clip):
    pcm, raw, times, _ = clip
    arrivals = []
    stream = Stream(model, window_s=1.0, hop_s=0.5, silence_dbfs=None, keep_inputs=True, video_latency_s=0.2)
    late = feed_live(stream, pcm, raw, times, seed=11, frame_delay=0.6, arrivals=arrivals, max_chunk=400)
    audio_end = len(pcm) / frontend.SAMPLE_RATE
    decided_by_audio = [(arrival, kind, p) for (arrival, kind), p in zip(arrivals, late) if p.t_end + 0.2 <= audio_end]
    assert len(decided_by_audio) >= 2
    for arrival, kind, p in decided_by_audio:       # due when the audio clock passed its end + 0.2 s
        assert kind == "audio" and p.t_end + 0.2 <= arrival + 1e-9 <= p.t_end + 0.2 + 400 / frontend.SAMPLE_RATE
    assert 0.0 < _face_tick_share(late) < 1.0


def test_no_camera_means_no_waiting(model):
    stream = Stream(model, window_s=1.0, hop_s=0.5, video_latency_s=2.0)
    rng = np.random.default_rng(12)
    assert len(stream.feed_audio(rng.normal(0, 2000, 16000).astype(np.int16))) == 1


def _monotonic_like_stream(model, t0=12345.0):
    stream = Stream(model, window_s=1.0, hop_s=0.5)
    stream.feed_audio(np.full(1600, 300, np.int16), t=t0)
    return stream


def test_frame_clock_mistakes_are_refused_quickly_naming_both_clocks(model):
    frame = np.zeros((48, 64, 3), np.uint8)
    stream = _monotonic_like_stream(model)
    start = time.perf_counter()
    with pytest.raises(StreamError) as info:
        stream.feed_frame(frame, 1.7e9 + 5.0)                  # time.time() against time.monotonic() audio
    assert time.perf_counter() - start < 0.5                    # no loop over 1e10 ticks
    message = str(info.value)
    assert "1.7e+09" in message and "12345.1" in message and "max_clock_skew_s=60" in message
    assert "time.time()" in message and "time.monotonic()" in message
    with pytest.raises(StreamError, match="milliseconds: pass seconds \\(t_ms / 1000\\)"):
        stream.feed_frame(frame, 12345.1 * 1000)               # milliseconds of the same clock
    stream.feed_frame(frame, 12345.1, boxes=[])                  # the right clock still works
    # audio fed without t counts from the first feed: frames on time.monotonic() do not match it
    untimed = Stream(model)
    untimed.feed_audio(np.full(1600, 300, np.int16))
    with pytest.raises(StreamError, match="audio fed without t counts from the first feed"):
        untimed.feed_frame(frame, 86400.0)
    # no audio yet: a frame far from the previous frame
    frames_only = Stream(model)
    frames_only.feed_frame(frame, 100.0, boxes=[])
    with pytest.raises(StreamError, match="the previous frame"):
        frames_only.feed_frame(frame, 100.0 + 1e6, boxes=[])
    assert Stream(model, max_clock_skew_s=None).feed_frame(frame, 5.0, boxes=[]) == []


def test_audio_clock_mistakes_are_refused(model):
    chunk = np.full(320, 300, np.int16)
    stream = Stream(model)
    stream.feed_audio(chunk, t=0.0)
    with pytest.raises(StreamError, match="look like milliseconds: pass t in seconds \\(t_ms / 1000\\)"):
        stream.feed_audio(chunk, t=20.0)                        # 20 ms later, in milliseconds
    stream = _monotonic_like_stream(model)
    with pytest.raises(StreamError, match="audio chunk time t=5 s is .* from the end of the previous chunk"):
        stream.feed_audio(chunk, t=5.0)
    with pytest.raises(StreamError, match="time went backwards"):
        stream.feed_audio(chunk, t=12345.05)
    frames_first = Stream(model)
    frames_first.feed_frame(np.zeros((48, 64, 3), np.uint8), 1.7e9, boxes=[])
    with pytest.raises(StreamError, match="first audio chunk's time .* time.time\\(\\)"):
        frames_first.feed_audio(chunk, t=12345.0)
    with pytest.raises(StreamError, match="finite"):
        Stream(model).feed_audio(chunk, t=float("nan"))


def test_a_forward_audio_jump_skips_to_the_latest_window(model):
    """600 s of missing audio (the audio thread stalled) costs no catch-up work: the windows
    inside the gap are skipped and the next Prediction says how many."""
    rng = np.random.default_rng(13)
    speech = lambda seconds: rng.normal(0, 3000, int(seconds * 16000)).astype(np.int16)
    stream = Stream(model, window_s=2.0, hop_s=0.5, keep_inputs=True)
    before = stream.feed_audio(speech(2.2), t=0.0)
    assert [p.t_start for p in before] == [0.0]
    start = time.perf_counter()
    after = stream.feed_audio(speech(0.6), t=600.0)
    assert time.perf_counter() - start < 1.0
    # windows 1 .. 1196 (ending 2.5 .. 600.0 s) are skipped; window 1197 is 1.5 s of silence + 0.5 s of speech
    assert [(p.t_start, p.t_end, p.skipped) for p in after] == [(598.5, 600.5, 1196)]
    window = after[0].inputs["audio"][0]
    np.testing.assert_array_equal(window[:148], frontend.log_mel(np.zeros(24000 + 240, np.int16))[:148])
    (p,) = stream.feed_audio(speech(0.5), t=600.6)
    assert (p.t_start, p.skipped) == (599.0, 0)
    assert stream.stats()["skipped"] == 1196


def test_float_audio_outside_minus_one_to_one_is_refused_with_the_fix(model):
    stream = Stream(model)
    with pytest.raises(StreamError, match="must lie in \\[-1, 1\\]; this chunk peaks at 3000 \\(int16 values stored "
                                          "as float\\?\\).*divide them by 32768"):
        stream.feed_audio(np.full(100, 3000.0, np.float32))
    assert stream.feed_audio(np.full(100, 1.0, np.float32)) == []       # full scale is fine


def test_rgb_and_gray_frames(model, clip):
    """channel_order="rgb": the same windows as the BGR frames (crops equal to float rounding);
    "gray": exactly the offline path on gray frames (tracking and crops on the gray image)."""
    cv2 = pytest.importorskip("cv2")
    from edge_ladder.faces import FaceDetector
    pcm, raw, times, frames10 = clip
    settings = dict(window_s=1.0, hop_s=0.5, smoothing=0.0, silence_dbfs=None, keep_inputs=True)
    bgr = feed_live(Stream(model, **settings), pcm, raw, times, seed=14)
    rgb = feed_live(Stream(model, **settings, channel_order="rgb"), pcm, [f[:, :, ::-1].copy() for f in raw],
                    times, seed=14)
    assert len(rgb) == len(bgr) >= 3
    for a, b in zip(bgr, rgb):
        for name in ("audio", "audio_mask", "face_mask", "presence"):
            np.testing.assert_array_equal(a.inputs[name], b.inputs[name])
        np.testing.assert_allclose(a.inputs["face"], b.inputs["face"], atol=1e-5)
    gray_raw = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in raw]
    gray = feed_live(Stream(model, **settings, channel_order="gray"), pcm, gray_raw, times, seed=14, flush=True)
    gray10 = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames10]
    boxes = FaceDetector().track(gray10, channel_order="gray")
    crops = np.array([frontend.face_crop(f, frontend.square_box(b, f.shape), channel_order="gray") if b is not None
                      else np.zeros((48, 48), np.float32) for f, b in zip(gray10, boxes)])
    whole = (frontend.log_mel(pcm), crops, np.array([b is not None for b in boxes]))
    duration = len(frames10) / frontend.VIDEO_FPS
    compared = [p for p in gray if p.t_end <= duration + 1e-9]
    assert compared
    for p in compared:
        for name, value in offline_window(whole, p.t_start, p.t_end).items():
            np.testing.assert_array_equal(p.inputs[name], value, err_msg=name)
    with pytest.raises(StreamError, match="uint8 \\(H, W\\) gray \\(Stream channel_order='gray'\\)"):
        Stream(model, channel_order="gray").feed_frame(raw[0], 0.0)
    with pytest.raises(StreamError, match="channel_order='gray'"):
        Stream(model).feed_frame(gray_raw[0], 0.0)
    with pytest.raises(StreamError, match="channel_order must be one of bgr, rgb, gray"):
        Stream(model, channel_order="yuv")


def test_two_feeding_threads_emit_every_window_once_in_order(model, clip):
    """A microphone thread and a camera thread: every window comes back exactly once (from one
    of the two threads), with the single-threaded features."""
    pcm, raw, times, _ = clip
    settings = dict(window_s=1.0, hop_s=0.3, smoothing=0.0, silence_dbfs=None, keep_inputs=True,
                    video_latency_s=10.0)                      # windows wait for their frames
    reference = feed_live(Stream(model, **settings), pcm, raw, times, seed=15, flush=True)
    stream = Stream(model, **settings)
    got = {"audio": [], "frame": []}
    barrier = threading.Barrier(2)

    def microphone():
        barrier.wait()
        for start in range(0, len(pcm), 500):
            got["audio"] += stream.feed_audio(pcm[start:start + 500])

    def camera():
        barrier.wait()
        for t, frame in zip(times, raw):
            got["frame"] += stream.feed_frame(frame, t)

    threads = [threading.Thread(target=microphone), threading.Thread(target=camera)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tail = stream.flush()
    emitted = sorted(got["audio"] + got["frame"], key=lambda p: p.t_start) + tail
    assert [p.t_start for p in emitted] == [p.t_start for p in reference]
    for a, b in zip(reference, emitted):
        for name in a.inputs:
            np.testing.assert_array_equal(a.inputs[name], b.inputs[name], err_msg=name)
    for kind in got.values():
        assert [p.t_start for p in kind] == sorted(p.t_start for p in kind)


def test_stats_say_where_the_cpu_went(model, clip):
    pcm, raw, times, _ = clip
    stream = Stream(model, window_s=1.0, hop_s=0.5)
    predictions = feed_live(stream, pcm, raw, times, seed=16)
    stats = stream.stats()
    from edge_ladder.runtime.stream import STAGES
    assert list(stats["cpu_s"]) == list(STAGES) and stats["windows"] == len(predictions)
    assert all(stats["cpu_s"][stage] > 0 for stage in ("audio framing", "log-mel", "detection", "crops", "model"))
    assert stats["face_windows"] == len(predictions) and stats["tracker"]["found"] > 0
    assert all(p.timings["latency"] >= p.timings["latency_cpu"] * 0.5 >= 0 for p in predictions)


def test_the_cuda_frontend_path_gets_each_ticks_frame_and_box(model, clip, monkeypatch):
    """frontend="kernels-cuda" hands GpuFrontEnd.run the window's PCM and, per tick, the frame and
    square box the numpy path crops (gray frames as BGR, since the kernels crop colour frames).
    A numpy stand-in for GpuFrontEnd (the CUDA kernels are tested against numpy on GPU hosts)
    then gives the numpy stream's inputs exactly."""
    cv2 = pytest.importorskip("cv2")
    from edge_ladder.runtime import gpu_frontend, stream as stream_module
    runs = []

    class NumpyGpuFrontEnd:
        def __init__(self, model):
            self.model = model

        def run(self, pcm, ticks, audio_present=None, keep_inputs=False, channel_order="bgr"):
            runs.append(channel_order)
            assert all(frame is None or frame.ndim == 3 for frame, _ in ticks)
            face = np.array([frontend.face_crop(frame, box, channel_order=channel_order) if box is not None
                             else np.zeros((48, 48), np.float32) for frame, box in ticks])
            valid = [box is not None for _, box in ticks]
            feeds = batch_inputs([frontend.log_mel(pcm)], [face], [valid], audio_present=[audio_present])
            return self.model.predict(feeds), feeds

        def close(self):
            pass

    monkeypatch.setattr(stream_module, "choose_frontend", lambda model, requested: ("kernels-cuda", "stand-in"))
    monkeypatch.setattr(gpu_frontend, "GpuFrontEnd", NumpyGpuFrontEnd)
    pcm, raw, times, _ = clip
    settings = dict(window_s=1.0, hop_s=0.5, smoothing=0.0, silence_dbfs=None, keep_inputs=True)
    for order, frames in (("bgr", raw), ("gray", [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in raw])):
        got = feed_live(Stream(model, **settings, frontend="kernels", channel_order=order), pcm, frames, times,
                        seed=17, flush=True)
        monkeypatch.undo()
        want = feed_live(Stream(model, **settings, channel_order=order), pcm, frames, times, seed=17, flush=True)
        monkeypatch.setattr(stream_module, "choose_frontend", lambda model, requested: ("kernels-cuda", "stand-in"))
        monkeypatch.setattr(gpu_frontend, "GpuFrontEnd", NumpyGpuFrontEnd)
        assert len(got) == len(want) >= 3 and all(p.frontend == "kernels-cuda" for p in got)
        for g, w in zip(got, want):
            for name in w.inputs:
                if order == "gray" and name == "face":       # luma of (v, v, v) is v to float rounding
                    np.testing.assert_allclose(g.inputs[name], w.inputs[name], atol=1e-4)
                else:
                    np.testing.assert_array_equal(g.inputs[name], w.inputs[name], err_msg=name)
    assert set(runs) == {"bgr"}
