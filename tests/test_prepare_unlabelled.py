"""prepare --unlabelled: any folder of recordings -> unlabelled clips (features.py's contract)."""
import json
import os

import numpy as np
import pytest

from edge_ladder import cli, corpus, features, frontend, media
from edge_ladder import prepare_unlabelled as unl
from edge_ladder.faces import FaceDetector

av = pytest.importorskip("av")
LFS_STUB = (b"version https://git-lfs.github.com/spec/v1\n"
            b"oid sha256:0f3c1d6e0a9cbd5b7f53a1c2a6e1d3b0b4f1f0c9d8e7a6b5c4d3e2f1a0b9c8d7\nsize 77526\n")


def talk(seconds: float, seed: int):
    """A generated speaker (corpus.py) talking for `seconds`: (pcm int16 (n,) at 16 kHz, frames
    (N, H, W, 3) uint8 BGR at corpus.CORPUS_FPS)."""
    rng = np.random.default_rng(seed)
    actor = corpus.make_actor(1001 + seed, seed)
    n = int(round(seconds * corpus.SAMPLE_RATE))
    pieces, onsets, length = [], [], 0.2
    while sum(p.size for p in pieces) < n:
        emotion = corpus.EMOTIONS[len(pieces) % 6]
        pcm, piece_onsets, length, _ = corpus.synth_audio(actor, corpus.VOICES[emotion], 1.0, 6, rng)
        onsets += list(piece_onsets + sum(p.size for p in pieces) / corpus.SAMPLE_RATE)
        pieces.append(pcm)
    frames = corpus.render_video(actor, corpus.FACES["HAP"], 1.0, onsets, length, seconds, rng)
    return np.concatenate(pieces)[:n], frames


def write_av(path, frames, fps, tone_hz=None, rate=48000, seconds=None):
    """Frames (+ a stereo tone at `rate` Hz, AAC) -> a video file written by PyAV (MPEG-4 part 2)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=int(fps))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        audio = None
        if tone_hz is not None:
            audio = container.add_stream("aac", rate=rate)
            audio.layout = "stereo"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is not None:
            t = np.arange(int(seconds * rate)) / rate
            tone = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate = rate
            for packet in list(audio.encode(frame)) + list(audio.encode()):
                container.mux(packet)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """A robot's folder: a WAV+FLV pair (7.5 s), an MP4 with AAC audio (4.2 s), an audio-only
    WAV (3.2 s), and one recording of each kind of damage."""
    root = tmp_path_factory.mktemp("recordings")
    (root / "day1").mkdir()
    (root / "day 2").mkdir()
    pcm, frames = talk(7.5, 0)
    (root / "day1" / "kitchen.wav").write_bytes(corpus.wav_bytes(pcm))
    corpus.write_flv(root / "day1" / "kitchen.flv", frames)
    _, frames = talk(4.2, 1)
    write_av(root / "day 2" / "hall way.mp4", frames, corpus.CORPUS_FPS, tone_hz=440.0, seconds=4.2)
    write_av(root / "day 2" / "silent.mkv", frames[:30], corpus.CORPUS_FPS)           # no audio track
    memo, _ = talk(3.2, 2)
    (root / "memo.wav").write_bytes(corpus.wav_bytes(memo))
    (root / "empty.wav").write_bytes(corpus.wav_bytes(np.zeros(0, np.int16)))
    (root / "short.wav").write_bytes(corpus.wav_bytes(memo[:16000]))                     # 1 s < 3 s / 2
    (root / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (root / "stub.flv").write_bytes(LFS_STUB)
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.wav").write_bytes(corpus.wav_bytes(memo))
    return root


EXPECTED_SKIPS = {"day 2/silent": unl.NO_AUDIO, "empty": unl.BAD_AUDIO, "short": unl.TOO_SHORT,
                  "broken": unl.BAD_VIDEO, "stub": unl.LFS}


@pytest.fixture(scope="module")
def prepared(recordings, tmp_path_factory):
    out = tmp_path_factory.mktemp("unlabelled")
    summary = unl.prepare_unlabelled(recordings, out, workers=2)
    return out, summary


def test_recordings_become_clips_by_the_rule(recordings, prepared):
    out, summary = prepared
    manifest = features.read_manifest(out)
    assert manifest["unlabelled"] is True and not (out / "splits.json").exists()
    by_actor = {}
    for entry in manifest["clips"]:
        by_actor.setdefault(entry["actor"], []).append(entry)
        assert entry["label"] == features.UNLABELLED == -1
        assert (out / entry["file"]).exists() and entry["file"] == f"clips/{entry['id']}.npz"
    # 7.5 s / 3 s: two full clips and the 1.5 s tail (= half a clip: kept); 4.2 s: one clip, a 1.2 s tail dropped
    assert sorted(by_actor) == ["day 2/hall way", "day1/kitchen", "memo"]
    kitchen = by_actor["day1/kitchen"]
    assert [e["id"] for e in kitchen] == ["day1_kitchen_00000", "day1_kitchen_00001", "day1_kitchen_00002"]
    assert [e["start_s"] for e in kitchen] == [0.0, 3.0, 6.0] and kitchen[-1]["seconds"] == pytest.approx(1.5)
    assert [e["audio_frames"] for e in kitchen] == [frontend.n_audio_frames(n) for n in (48000, 48000, 24000)]
    assert [e["video_frames"] for e in kitchen] == [30, 30, 15]
    assert kitchen[0]["source"] == "day1/kitchen.flv" and kitchen[0]["audio_source"] == "day1/kitchen.wav"
    hall = by_actor["day 2/hall way"]
    assert [e["id"] for e in hall] == ["day_2_hall_way_00000"] and hall[0]["source"] == "day 2/hall way.mp4"
    assert "audio_source" not in hall[0] and hall[0]["video_frames"] == 30
    memo = by_actor["memo"]           # a WAV alone: audio only, no face frames
    assert len(memo) == 1 and memo[0]["video_frames"] == 0 and memo[0]["audio_frames"] == 298
    assert summary["face_detected_fraction"] > 0.8          # the generated faces are found
    assert summary["kept"] == 5 and summary["recordings_kept"] == 3 and summary["resumed"] == 0
    assert summary["warnings"] == []
    skipped = {s["id"]: s for s in summary["skipped"]}
    assert {k: v["category"] for k, v in skipped.items()} == EXPECTED_SKIPS
    assert "NAME.wav" in skipped["day 2/silent"]["reason"] and "no audio track" in skipped["day 2/silent"]["reason"]
    assert "git lfs pull" in skipped["stub"]["reason"] and "--clip-seconds" in skipped["short"]["reason"]
    assert summary["dropped_seconds"] == pytest.approx(1.2 + 0.2, abs=0.1)   # hall way's tail (+ AAC priming) + memo's
    report = json.loads((out / "prepare_report.json").read_text())
    assert report["kept"] == 5 and len(report["skipped"]) == len(EXPECTED_SKIPS)
    text = unl.format_summary(summary)
    assert "kept 5 unlabelled clips" in text and "skipped 5 recordings" in text and "day 2/silent" in text


def test_load_unlabelled_reads_the_output(prepared):
    out, _ = prepared
    clips = features.load_unlabelled(out)
    assert len(clips) == 5 and {c.label for c in clips} == {-1}
    memo = next(c for c in clips if c.actor == "memo")
    assert memo.face.shape == (0, frontend.FACE_SIZE, frontend.FACE_SIZE) and not memo.face_valid.any()
    batch = features.batch_clips(clips)
    assert batch["presence"][:, 0].all() and batch["presence"][[c.actor == "memo" for c in clips], 1].sum() == 0
    with pytest.raises(features.FeaturesError, match="--unlabelled"):
        features.load_split(out, "train")


def test_clip_features_equal_the_labelled_front_end(recordings, prepared):
    """Clip 1 of the pair and clip 2 (the partial tail) equal prepare's front-end (log_mel of the
    same samples, face crops of the same 10 fps frames with a fresh tracker) on the whole file."""
    out, _ = prepared
    pcm, _ = media.read_wav(recordings / "day1" / "kitchen.wav")
    frames, _ = media.read_video(recordings / "day1" / "kitchen.flv")
    detector = FaceDetector()
    for index, (a0, a1, v0, v1) in ((1, (48000, 96000, 30, 60)), (2, (96000, 120000, 60, 75))):
        face, face_valid = media.face_features(frames[v0:v1], detector.track(frames[v0:v1]))
        with np.load(out / "clips" / f"day1_kitchen_{index:05d}.npz") as data:
            np.testing.assert_array_equal(data["audio"], frontend.log_mel(pcm[a0:a1]))
            np.testing.assert_array_equal(data["face_valid"], face_valid)
            np.testing.assert_allclose(data["face"], face, atol=2e-3 * np.abs(face).max())   # stored as float16
            assert face_valid.mean() > 0.8
    # the MP4's own AAC track, decoded and resampled by PyAV, is the clip's audio
    samples = media.read_audio(recordings / "day 2" / "hall way.mp4")
    with np.load(out / "clips" / "day_2_hall_way_00000.npz") as data:
        np.testing.assert_array_equal(data["audio"], frontend.log_mel(samples[:48000]))


def test_audio_track_is_resampled_to_16k_mono_and_streamed(recordings):
    """48 kHz stereo AAC -> 16 kHz mono: the 440 Hz tone stays at 440 Hz; chunks are bounded."""
    chunks = list(media.audio_chunks(recordings / "day 2" / "hall way.mp4", chunk_samples=4000))
    samples = np.concatenate(chunks)
    assert samples.dtype == np.int16 and abs(samples.size - 4.2 * 16000) < 0.1 * 16000
    assert max(c.size for c in chunks) < 4000 + 2048 and len(chunks) > 10     # streamed, not whole
    spectrum = np.abs(np.fft.rfft(samples[8000:40000].astype(np.float64)))
    assert np.fft.rfftfreq(32000, 1 / 16000)[spectrum.argmax()] == pytest.approx(440.0, abs=1.0)
    wav = recordings / "memo.wav"                # a 16 kHz mono WAV passes through unchanged
    np.testing.assert_array_equal(media.read_audio(wav), media.read_wav(wav)[0])
    flv = recordings / "day1" / "kitchen.flv"    # the streamed frames are read_video's
    np.testing.assert_array_equal(np.stack(list(media.video_ticks(flv))), media.read_video(flv)[0])
    with pytest.raises(media.NoAudioTrackError, match="no audio track"):
        media.read_audio(recordings / "day 2" / "silent.mkv")


def test_long_recordings_are_never_read_whole(recordings, tmp_path, monkeypatch):
    def whole(*args, **kwargs):
        raise AssertionError("prepare --unlabelled must stream, not read a whole recording")
    for name in ("read_video", "read_wav", "read_audio", "audio_features", "clip_features"):
        monkeypatch.setattr(media, name, whole)
    summary = unl.prepare_unlabelled(recordings / "day1", tmp_path / "out", workers=1, clip_seconds=2.5)
    assert summary["kept"] == 3 and summary["dropped_seconds"] == 0       # 7.5 s = 3 x 2.5 s


def test_resume_reuses_clips(recordings, prepared, tmp_path):
    import shutil
    out = tmp_path / "again"
    shutil.copytree(prepared[0], out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    summary = unl.prepare_unlabelled(recordings, out, workers=1)
    assert summary["kept"] == summary["resumed"] == 5
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == mtimes
    # an interrupted recording (its index and one clip missing): decoded again, the other clips reused
    (out / "recordings" / "day1_kitchen.json").unlink()
    (out / "clips" / "day1_kitchen_00001.npz").unlink()
    summary = unl.prepare_unlabelled(recordings, out, workers=1)
    assert summary["kept"] == 5 and summary["resumed"] == 4
    for name, mtime in mtimes.items():
        if name != "day1_kitchen_00001.npz":
            assert (out / "clips" / name).stat().st_mtime_ns == mtime
    assert (out / "clips" / "day1_kitchen_00001.npz").exists()
    assert not [p for p in (out / "clips").iterdir() if p.name.startswith(".")]
    assert features.read_manifest(out)["clips"] == features.read_manifest(prepared[0])["clips"]


def test_cli_flags(recordings, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["prepare", str(recordings), "--out", out, "--unlabelled", "--folds", "3", "--labels",
                     "voice"]) == 2
    err = capsys.readouterr().err
    assert "--folds, --labels do not apply to --unlabelled" in err and "no actor splits" in err
    assert cli.main(["prepare", str(recordings), "--out", out, "--unlabelled", "--clip-seconds", "0.05"]) == 2
    assert "--clip-seconds" in capsys.readouterr().err
    assert cli.main(["prepare", str(recordings), "--out", out, "--clip-seconds", "3"]) == 2
    assert "Add --unlabelled" in capsys.readouterr().err
    with pytest.raises(unl.EdgeLadderError, match="does not exist"):
        unl.prepare_unlabelled(tmp_path / "nowhere", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(unl.EdgeLadderError, match="no recordings under"):
        unl.prepare_unlabelled(tmp_path / "empty", out)
    assert not os.path.exists(out)


def test_names_are_safe_and_distinct(tmp_path):
    for name in ("a b.wav", "a_b.wav", "x/clip.mp4", "x/clip.mkv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "y").mkdir()
    for name in ("y/take.wav", "y/take.mp4", "y/take.flv"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "out" / "clips").mkdir(parents=True)       # --out inside DIR: never a recording
    (tmp_path / "out" / "clips" / "old.wav").write_bytes(b"")
    recordings, skipped = unl.find_recordings(tmp_path, tmp_path / "out")
    ids = {r["name"]: r["id"] for r in recordings}
    assert len(set(ids.values())) == len(ids) and all(unl.safe_name(i) == i for i in ids.values())
    assert ids["a b"].startswith("a_b-") and ids["a_b"].startswith("a_b-")
    assert set(ids) == {"a b", "a_b", "x/clip.mp4", "x/clip.mkv"}
    assert [(s["id"], s["category"]) for s in skipped] == [("y/take", unl.AMBIGUOUS)]


def test_truncated_recording_keeps_the_clips_before_the_damage(tmp_path):
    """A recorder killed mid-file: the clips that decode are kept and the report says where it stopped."""
    root = tmp_path / "rec"
    root.mkdir()
    pcm, frames = talk(7.5, 3)
    (root / "cut.wav").write_bytes(corpus.wav_bytes(pcm))
    corpus.write_flv(root / "cut.flv", frames)
    data = (root / "cut.flv").read_bytes()
    (root / "cut.flv").write_bytes(data[: len(data) * 45 // 100])
    decodable = 0
    try:
        for _ in media.video_ticks(root / "cut.flv"):
            decodable += 1
    except media.TruncatedVideoError:
        pass
    summary = unl.prepare_unlabelled(root, tmp_path / "out", workers=1)
    assert 30 <= decodable < 60 and summary["kept"] == 1          # 3-6 s of video decode: one full clip
    assert len(summary["warnings"]) == 1 and "truncated" in summary["warnings"][0]
    assert f"after {decodable / 10:.1f} s" in summary["warnings"][0]


def test_streams_of_different_lengths_are_cut_to_the_shorter_and_said(tmp_path):
    root = tmp_path / "rec"
    root.mkdir()
    pcm, frames = talk(7.5, 4)
    (root / "take.wav").write_bytes(corpus.wav_bytes(pcm))
    corpus.write_flv(root / "take.flv", frames[:60])              # 4 s of video beside 7.5 s of audio
    summary = unl.prepare_unlabelled(root, tmp_path / "out", workers=1)
    assert summary["kept"] == 1 and summary["dropped_seconds"] == pytest.approx(1.0)
    assert len(summary["warnings"]) == 1 and "the audio goes on at least 1 s past the end of the video (4.0 s)" \
        in summary["warnings"][0]
