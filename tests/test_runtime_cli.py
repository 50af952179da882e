"""`edge-ladder infer` and examples/robot_loop.py on generated recordings (WAV + FLV)."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
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
    (["--audio", "a.wav", "--csv", "x.csv"], "--csv needs --input"),
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
    assert len(lines) == (len(pcm) - 16000) // 8000 + 1 >= 2
    assert [line["t_start"] for line in lines] == [0.5 * i for i in range(len(lines))]
    assert all(line["label"] in EMOTIONS and line["audio"] and line["face"] for line in lines)
