"""`edge-ladder demo` end to end at a tiny size: every stage's file lands where other tools look,
and a second run resumes instead of redoing the work."""
import json

import pytest

from edge_ladder.demo import run_demo


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    run_demo(out, actors=5, clips_per_actor=6, epochs=2, bench_seconds=0.3, workers=1)
    return out


def test_demo_writes_every_stage_in_the_documented_layout(demo_dir):
    for path in ("corpus/AudioWAV", "corpus/VideoFlash", "corpus/processedResults/summaryTable.csv",
                 "features/manifest.json", "features/splits.json", "run/checkpoint.pt", "run/metrics.json",
                 "export/model.onnx", "export/model.fp16.onnx", "export/model.int8.onnx", "export/export.json",
                 "bench/compare.json", "bench/compare.md", "bench/latency.png", "summary.json"):
        assert (demo_dir / path).exists(), path
    metrics = json.loads((demo_dir / "run/metrics.json").read_text())
    for split in ("dev", "test"):
        assert {"macro_precision", "macro_recall", "macro_f1", "accuracy", "per_class", "confusion"} <= set(metrics[split])
    compare = json.loads((demo_dir / "bench/compare.json").read_text())
    assert [run["backend"] for run in compare["runs"]] == ["torch"] + ["onnxruntime"] * 3
    assert [run["model"].rsplit("/", 1)[-1] for run in compare["runs"]] == [
        "checkpoint.pt", "model.onnx", "model.fp16.onnx", "model.int8.onnx"]
    assert len(compare["speedup"]) == 4 and all(value > 0 for value in compare["speedup"].values())
    summary = json.loads((demo_dir / "summary.json").read_text())
    f1 = summary["test_macro_f1"]
    assert f1["onnx_fp32"] == pytest.approx(f1["pytorch_av"], abs=1e-9)
    assert abs(f1["onnx_fp16"] - f1["pytorch_av"]) <= 0.005
    assert abs(f1["onnx_int8"] - f1["pytorch_av"]) <= 0.05
    assert summary["params"]["inference"] < summary["params"]["training"]


def test_demo_resumes_without_retraining(demo_dir, capsys):
    checkpoint = demo_dir / "run/checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    run_demo(demo_dir, actors=5, clips_per_actor=6, epochs=2, bench_seconds=0.2, workers=1)
    assert checkpoint.stat().st_mtime_ns == before
    out = capsys.readouterr().out
    assert "skipping training" in out and "5 actors" in out


def test_demo_without_an_int8_file_says_why(demo_dir, tmp_path, monkeypatch, capsys):
    """export refuses int8 (here: an impossible accuracy bar): the demo benches the other three and
    summary.json records why there is no int8 file."""
    import shutil
    from edge_ladder.export import parity
    copy = tmp_path / "demo"
    shutil.copytree(demo_dir, copy)
    monkeypatch.setattr(parity, "INT8_MAX_PROB_ERROR", 0.0)
    run_demo(copy, actors=5, clips_per_actor=6, epochs=2, bench_seconds=0.2, workers=1)
    assert "model.int8.onnx  not written: ParityError" in capsys.readouterr().out
    assert not (copy / "export/model.int8.onnx").exists()
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["test_macro_f1"]["onnx_int8"] is None and "max prob error" in summary["int8"]["rejected"]
    compare = json.loads((copy / "bench/compare.json").read_text())
    assert [run["model"].rsplit("/", 1)[-1] for run in compare["runs"]] == ["checkpoint.pt", "model.onnx",
                                                                           "model.fp16.onnx"]
