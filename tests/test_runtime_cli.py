"""`edge-ladder infer` and examples/robot_loop.py on generated recordings (WAV + FLV)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_ladder import EMOTIONS, media, runtime
from edge_ladder.cli import main
from edge_ladder.features import batch_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from edge_ladder.corpus import make_corpus
    return make_corpus(tmp_path_factory.mktemp("corpus"), actors=1, clips_per_actor=3, seed=5, workers=1)


def _clip(corpus, index=0):
    wav = sorted((corpus / "AudioWAV").glob("*.wav"))[index]
    return wav, corpus / "VideoFlash" / (wav.stem + ".flv")


def _longest_clip(corpus):
    wav = max((corpus / "AudioWAV").glob("*.wav"), key=lambda path: path.stat().st_size)
    return wav, corpus / "VideoFlash" / (wav.stem + ".flv")


def test_infer_one_clip_prints_the_offline_prediction_as_json(tiny_export, corpus, capsys):
    wav, flv = _clip(corpus)
    model_path = tiny_export / "model.onnx"
    assert main(["infer", str(model_path), "--audio", str(wav), "--video", str(flv), "--json", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    audio, face, valid = media.clip_features(wav, flv)
    expected = runtime.load(model_path, intra_op_threads=1).predict(batch_inputs([audio], [face], [valid]))
    assert out["label"] == expected.labels[0]
    np.testing.assert_allclose([out["probs"][c] for c in EMOTIONS], expected.probs[0], rtol=1e-5)
    assert out["presence"] == {"audio": True, "face": True}
    assert out["frames"]["audio"] == audio.shape[0] and out["frames"]["face_valid"] == int(valid.sum())
    assert {"preprocess", "compute", "total"} <= set(out["timings_ms"])


def test_infer_directory_writes_a_csv_for_both_layouts(tiny_export, corpus, tmp_path, capsys):
    model_path = str(tiny_export / "model.onnx")
    out_csv = tmp_path / "crema.csv"
    assert main(["infer", model_path, "--input", str(corpus), "--csv", str(out_csv), "--threads", "1"]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["id"] for r in rows] == sorted(p.stem for p in (corpus / "AudioWAV").glob("*.wav"))
    assert all(r["true"] == r["id"].split("_")[2] and r["label"] in EMOTIONS for r in rows)
    assert "accuracy vs file-name labels" in capsys.readouterr().out
    flat = tmp_path / "flat"
    flat.mkdir()
    wav, flv = _clip(corpus, 1)
    (flat / "robot_take1.wav").write_bytes(wav.read_bytes())
    (flat / "robot_take1.flv").write_bytes(flv.read_bytes())
    (flat / "camera_only.flv").write_bytes(flv.read_bytes())
    flat_csv = tmp_path / "flat.csv"
    assert main(["infer", model_path, "--input", str(flat), "--csv", str(flat_csv)]) == 0
    flat_rows = {r["id"]: r for r in csv.DictReader(flat_csv.open())}
    assert set(flat_rows) == {"robot_take1", "camera_only"}
    assert flat_rows["camera_only"]["audio_present"] == "0" and flat_rows["camera_only"]["true"] == ""
    by_id = {r["id"]: r for r in rows}
    assert flat_rows["robot_take1"]["ANG"] == by_id[wav.stem]["ANG"]


@pytest.mark.parametrize("argv, message", [
    (["--audio", "a.wav", "--input", "."], "either --input DIR or --audio/--video"),
    ([], "nothing to run"),
    (["--audio", "a.wav", "--use-cuda-graph"], "--use-cuda-graph apply to TensorRT engines"),
])
def test_infer_refuses_bad_flag_combinations(tiny_export, argv, message, capsys):
    assert main(["infer", str(tiny_export / "model.onnx"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_robot_loop_replays_recorded_files_like_the_stream(tiny_export, corpus):
    """examples/robot_loop.py --from-files prints one JSON line per hop with both modalities."""
    wav, flv = _clip(corpus, 2)
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "robot_loop.py"), str(tiny_export / "model.onnx"),
                           "--from-files", str(wav), str(flv), "--window", "1.0", "--hop", "0.5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    pcm, _ = media.read_wav(wav)
    full = (len(pcm) - 16000) // 8000 + 1
    tail = len(pcm) > (full - 1) * 8000 + 16000
    assert len(lines) == full + tail >= 2
    assert [line["t_start"] for line in lines] == [0.5 * i for i in range(len(lines))]
    assert all(line["label"] in EMOTIONS and line["audio"] and line["face"] for line in lines)
    assert [line.get("partial", False) for line in lines] == [False] * full + [True] * tail
    if tail:                                     # the last, partial window ends with the recording
        assert lines[-1]["t_end"] == round(len(pcm) / 16000, 3)


def test_robot_loop_never_runs_inference_in_the_audio_callback(tiny_export, corpus, monkeypatch):
    """StreamWorker: audio()/frame() (the driver's callback, the camera loop) only queue; the
    stream is fed and flushed in the worker's own thread."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("robot_loop", ROOT / "examples" / "robot_loop.py")
    robot_loop = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(robot_loop)
    calls = []

    class Recorder:
        def feed_audio(self, block, t):
            calls.append(("audio", threading.current_thread().name))
            return []

        def feed_frame(self, frame, t):
            calls.append(("frame", threading.current_thread().name))
            return []

        def flush(self):
            calls.append(("flush", threading.current_thread().name))
            return []

    worker = robot_loop.StreamWorker(Recorder(), drop_frames=False)
    worker.start()
    for i in range(5):
        worker.audio(np.zeros(1024, np.int16), i * 0.064)       # returns at once: nothing fed here
        worker.frame(np.zeros((8, 8, 3), np.uint8), i * 0.033)
    worker.finish()
    assert [kind for kind, _ in calls] == ["audio", "frame"] * 5 + ["flush"]
    assert {thread for _, thread in calls} == {"edge-ladder-stream"}


# ---------------------------------------------------------------------------------------------
# infer --window: predictions over time, the Stream run offline


def _offline_windows(model, wav, flv, window_s, hop_s):
    """The offline path on the whole recording, sliced per window as the Stream frames it:
    full windows k * hop .. k * hop + window, then the partial one up to the audio's end."""
    from edge_ladder import frontend
    from edge_ladder.faces import FaceDetector
    pcm, _ = media.read_wav(wav)
    frames, _ = media.read_video(flv)
    audio = frontend.log_mel(pcm)
    face, valid = media.face_features(frames, FaceDetector().track(frames))
    n, window, hop = len(pcm), round(window_s * 16000), round(hop_s * 16000)
    spans = [(s0, s0 + window) for s0 in range(0, n - window + 1, hop)]
    if not spans or n > spans[-1][1]:
        spans.append((len(spans) * hop, n))
    rows = []
    for s0, s1 in spans:
        k0, k1 = s0 // 1600, -(-s1 // 1600)
        feeds = batch_inputs([audio[s0 // 160:s0 // 160 + frontend.n_audio_frames(s1 - s0)]], [face[k0:k1]],
                             [valid[k0:k1]])
        rows.append((s0 / 16000, s1 / 16000, model.predict(feeds).probs[0], k1 <= len(frames)))
    return rows


@pytest.mark.parametrize("window, hop", [("2.0", "0.5"), ("1.0", "0.3")])
def test_infer_window_rows_equal_the_offline_path_with_a_last_partial_window(tiny_export, corpus, tmp_path,
                                                                               capsys, window, hop):
    wav, flv = _longest_clip(corpus)
    model_path = tiny_export / "model.onnx"
    out_csv = tmp_path / "windows.csv"
    assert main(["infer", str(model_path), "--audio", str(wav), "--video", str(flv), "--window", window,
                 "--hop", hop, "--csv", str(out_csv), "--threads", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    rows = list(csv.DictReader(out_csv.open()))
    expected = _offline_windows(runtime.load(model_path, intra_op_threads=1), wav, flv, float(window), float(hop))
    assert len(rows) == len(expected) >= 2
    assert [r["partial"] for r in rows] == ["0"] * (len(rows) - 1) + ["1"]
    for row, (t0, t1, probs, inside_video) in zip(rows, expected):
        assert (float(row["t_start"]), float(row["t_end"])) == pytest.approx((t0, t1), abs=1e-4)
        if inside_video:
            np.testing.assert_allclose([float(row[c]) for c in EMOTIONS], probs, atol=2e-6)
            assert row["label"] == EMOTIONS[int(np.argmax(probs))]
        assert row["audio_present"] == "1" and row["face_present"] == "1"
    assert main(["infer", str(model_path), "--audio", str(wav), "--video", str(flv), "--window", window,
                 "--hop", hop, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [w["t_start"] for w in out["windows"]] == [float(r["t_start"]) for r in rows]
    assert out["windows"][-1]["partial"] is True and out["hop_s"] == float(hop)


def test_infer_window_over_a_directory_and_audio_only(tiny_export, corpus, tmp_path, capsys):
    out_csv = tmp_path / "all.csv"
    assert main(["infer", str(tiny_export / "model.onnx"), "--input", str(corpus), "--window", "1.0",
                 "--csv", str(out_csv)]) == 0
    assert "windows of 3 recordings; wrote" in capsys.readouterr().out
    rows = list(csv.DictReader(out_csv.open()))
    ids = sorted(p.stem for p in (corpus / "AudioWAV").glob("*.wav"))
    assert sorted(set(r["id"] for r in rows)) == ids
    assert all(float(r["t_end"]) - float(r["t_start"]) <= 1.0 + 1e-6 for r in rows)
    for clip_id in ids:                  # hop defaults to 0.5 s
        starts = [float(r["t_start"]) for r in rows if r["id"] == clip_id]
        assert starts == [0.5 * i for i in range(len(starts))]
    wav, _ = _clip(corpus, 0)
    assert main(["infer", str(tiny_export / "model.onnx"), "--audio", str(wav), "--window", "1.0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert all("  A-  " in line for line in lines[:-1])        # audio present, no face (no video)
    assert "(partial)" in lines[-2] and "windows of 1 recording" in lines[-1]


def test_infer_plot_draws_probabilities_over_time(tiny_export, corpus, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    wav, flv = _clip(corpus, 2)
    png = tmp_path / "probs.png"
    args = ["infer", str(tiny_export / "model.onnx"), "--audio", str(wav), "--video", str(flv), "--window", "1.0",
            "--hop", "0.3", "--plot", str(png)]
    assert main(args) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    monkeypatch.setitem(sys.modules, "matplotlib", None)         # matplotlib not installed
    png.unlink()
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "'matplotlib'" in err and "pip install matplotlib" in err and not png.exists()


@pytest.mark.parametrize("argv, message", [
    (["--audio", "a.wav", "--hop", "0.5"], "--hop needs --window S"),
    (["--audio", "a.wav", "--plot", "p.png"], "--plot needs --window S"),
    (["--input", ".", "--window", "2", "--plot", "p.png"], "--plot draws one recording"),
    (["--audio", "a.wav", "--window", "2", "--plot", "p.jpg"], "--plot writes a PNG"),
    (["--audio", "a.wav", "--csv", "x.csv"], "--csv needs --input DIR (it writes one row per clip) or --window"),
])
def test_infer_window_flags_are_checked(tiny_export, argv, message, capsys):
    assert main(["infer", str(tiny_export / "model.onnx"), *argv]) == 2
    assert message in capsys.readouterr().err


def test_infer_window_settings_come_from_the_stream(tiny_export, corpus, capsys):
    wav, flv = _clip(corpus, 0)
    assert main(["infer", str(tiny_export / "model.onnx"), "--audio", str(wav), "--window", "1.05"]) == 2
    assert "window_s must be a positive multiple of 1/VIDEO_FPS" in capsys.readouterr().err
