"""One presence rule (edge_ladder.presence) for `edge-ladder infer` and Stream: the issue's silent WAV
+ black video was "audio present" offline (SAD 0.76) and "audio absent" in the stream (NEU)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge_ladder import presence, runtime
from edge_ladder.cli import main
from edge_ladder.corpus import wav_bytes, write_flv
from edge_ladder.runtime.stream import Stream

SECONDS = 2.0


def recording(directory, level_dbfs: float, seed: int = 0):
    """A 2 s clip: white noise at level_dbfs RMS (-inf: digital silence) + a black 10 fps video."""
    directory.mkdir(parents=True, exist_ok=True)
    n = int(SECONDS * 16000)
    noise = np.random.default_rng(seed).standard_normal(n) * 32768 * 10 ** (level_dbfs / 20)
    pcm = np.zeros(n, np.int16) if level_dbfs == -np.inf else np.clip(np.round(noise), -32768, 32767).astype(np.int16)
    wav, flv = directory / "clip.wav", directory / "clip.flv"
    wav.write_bytes(wav_bytes(pcm))
    frames = np.zeros((int(SECONDS * 10), 120, 160, 3), np.uint8)
    write_flv(flv, frames, fps=10.0)
    return wav, flv, pcm, frames


def stream_window(model, pcm, frames):
    """The stream's one 2 s window over the same samples and frames (detector on the frames)."""
    stream = Stream(model, window_s=SECONDS, hop_s=SECONDS, smoothing=0.0)
    for i, frame in enumerate(frames):
        stream.feed_frame(frame, i / 10)
    (prediction,) = stream.feed_audio(pcm, t=0.0)
    return prediction


@pytest.mark.parametrize("level, audio", [(-np.inf, False), (-70.0, False), (-45.0, True)])
def test_infer_and_stream_decide_presence_alike(tiny_export, tmp_path, capsys, level, audio):
    wav, flv, pcm, frames = recording(tmp_path, level)
    model_path = tiny_export / "model.onnx"
    assert main(["infer", str(model_path), "--audio", str(wav), "--video", str(flv), "--json"]) == 0
    offline = json.loads(capsys.readouterr().out)
    live = stream_window(runtime.load(model_path), pcm, frames)
    assert offline["presence"] == {"audio": audio, "face": False}       # was: audio True for silence
    assert live.presence == (audio, False)
    assert offline["evidence"] == live.evidence == ("audio" if audio else "none")
    # same flags, same features: the same answer
    assert offline["label"] == live.label
    np.testing.assert_allclose([offline["probs"][c] for c in offline["probs"]], live.probs, atol=1e-5)


def test_no_evidence_is_said_in_json_csv_and_printed_output(tiny_export, tmp_path, capsys):
    wav, flv, _, _ = recording(tmp_path / "clips", -np.inf)
    model_path = str(tiny_export / "model.onnx")
    assert main(["infer", model_path, "--audio", str(wav), "--video", str(flv)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("no evidence: the audio is silent or missing and no frame has a face")
    assert main(["infer", model_path, "--input", str(tmp_path / "clips"), "--csv", str(tmp_path / "out.csv")]) == 0
    assert "1 with no evidence, neither audio nor a face: clip" in capsys.readouterr().out
    (row,) = csv.DictReader((tmp_path / "out.csv").open())
    assert (row["evidence"], row["audio_present"], row["face_present"]) == ("none", "0", "0")


def test_the_rule_itself():
    assert presence.rms_dbfs(np.zeros(100, np.int16)) == -np.inf
    assert presence.rms_dbfs(np.full(100, 0.5, np.float32)) == pytest.approx(-6.0206, abs=1e-3)
    assert presence.rms_dbfs(np.full(100, 16384, np.int16)) == pytest.approx(-6.0206, abs=1e-3)   # int16 scaled
    assert not presence.audio_present(np.zeros(0, np.float32))
    assert presence.audio_present(np.full(10, 1e-4, np.float32), silence_dbfs=None)
    assert not presence.audio_present(np.full(10, 1e-4, np.float32))                            # -80 dBFS
    assert presence.face_present([False, True]) and not presence.face_present([])
    assert [presence.evidence(a, f) for a, f in ((1, 1), (1, 0), (0, 1), (0, 0))] == \
        ["audio+face", "audio", "face", "none"]
