"""`edge-ladder demo` end to end at a tiny size: every stage's file lands where other tools look,
a second run with the same settings redoes nothing, and one with other settings redoes exactly
what they change (issue 14 item 1)."""
import json
import shutil

import pytest

from edge_ladder.demo import run_demo
from edge_ladder.errors import EdgeLadderError

SETTINGS = dict(actors=6, clips_per_actor=6, epochs=2, bench_seconds=0.3, workers=1)
STAGES = ("corpus", "prepare", "train", "evaluate", "export", "bench")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """The demo at SETTINGS, its int8 accuracy gate switched off: the stages and their files are the
    subject here, and a 2-epoch model of 36 clips fails that gate (measured: max probability error
    0.305, 8 of its 10 decisive test clips keep their class; test_export_pipeline checks the gate on
    a model that passes it, and `make demo`'s 12-epoch model does: 2.0e-2, 96 of 96)."""
    from edge_ladder.export import parity
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parity, "check_int8", lambda report, what: None)
        # and fp16's absolute bar raised: with the 2 x 2 face grid this 2-epoch model's fp16 file is
        # 1.14e-2 from fp32 at most (> 1e-2) while within 3x torch .half()'s own error, the check that
        # stays; `make demo`'s 12-epoch model passes the 1e-2 bar (README)
        patch.setattr(parity, "FP16_MAX_PROB_ERROR", 2e-2)
        run_demo(out, **SETTINGS)
    return out


def copy_of(demo_dir, tmp_path):
    copy = tmp_path / "demo"
    shutil.copytree(demo_dir, copy)
    return copy


def stamps(root):
    """{relative path: mtime_ns} of every file the stages wrote."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for name in ("corpus", "features", "run", "export", "bench")
            for p in (root / name).rglob("*") if p.is_file()}


def test_demo_writes_every_stage_in_the_documented_layout(demo_dir):
    for path in ("corpus/AudioWAV", "corpus/VideoFlash", "corpus/processedResults/summaryTable.csv",
                 "features/manifest.json", "features/splits.json", "run/checkpoint.pt", "run/metrics.json",
                 "export/model.onnx", "export/model.fp16.onnx", "export/model.int8.onnx", "export/export.json",
                 "bench/compare.json", "bench/compare.md", "bench/latency.png", "summary.json", "stages.json"):
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
    export = json.loads((demo_dir / "export/export.json").read_text())
    evaluation, fp16 = export["evaluation"], export["parity"]["fp16"]
    assert f1["onnx_fp16"] == evaluation["onnx_fp16"]["macro_f1"]
    # fp16 may flip near-ties (export/parity.py; 1 of 18 samples on the CI's CPU, none here): its
    # accuracy differs from the fp32 file's by at most the held-out clips that flipped
    assert fp16["held_out_samples"] == evaluation["onnx_fp32"]["n"] > 0
    gap = abs(evaluation["onnx_fp16"]["accuracy"] - evaluation["onnx_fp32"]["accuracy"]) * evaluation["onnx_fp32"]["n"]
    assert gap <= fp16["held_out_flips"] + 1e-9
    assert f1["onnx_int8"] == evaluation["onnx_int8"]["macro_f1"]     # its accuracy: see demo_dir
    assert summary["params"]["inference"] < summary["params"]["training"]


def test_demo_rerun_with_equal_settings_redoes_nothing(demo_dir, capsys):
    """It used to skip training only: evaluate, export and bench ran again (11 of 16 s)."""
    before = stamps(demo_dir)
    summary = json.loads((demo_dir / "summary.json").read_text())
    capsys.readouterr()
    again = run_demo(demo_dir, **SETTINGS)
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"{stage}: up to date (same settings, inputs and outputs as recorded in" in out, stage
    assert "6 actors" in out and "pruned:" not in out and "=== 6/6" in out
    assert stamps(demo_dir) == before                                   # no file rewritten
    assert again["test_macro_f1"] == summary["test_macro_f1"] and again["speedup"] == summary["speedup"]


def test_demo_with_other_settings_redoes_what_they_change(demo_dir, tmp_path, capsys):
    """`demo --actors 6 --epochs 2` then `--actors 8 --epochs 4` printed "4 epochs", skipped training and
    scored the 2-epoch model, trained on other splits, on the new split with the old metrics.json."""
    import torch
    from edge_ladder.features import read_manifest
    from edge_ladder.runtime.sidecar import sha256_file
    from edge_ladder.train import features_identity
    copy = copy_of(demo_dir, tmp_path)
    capsys.readouterr()
    result = run_demo(copy, **{**SETTINGS, "actors": 8, "epochs": 4})
    out = capsys.readouterr().out
    assert "corpus: changed since stages.json: settings.actors 6 -> 8" in out
    assert "settings.epochs 2 -> 4" in out and "skipping training" not in out and "up to date" not in out
    assert len({clip["actor"] for clip in read_manifest(copy / "features")["clips"]}) == 8
    checkpoint = torch.load(copy / "run/checkpoint.pt", weights_only=True)
    assert checkpoint["train_config"]["epochs"] == 4
    assert checkpoint["data"]["features"] == features_identity(copy / "features")   # trained on the new splits
    metrics = json.loads((copy / "run/metrics.json").read_text())
    assert len(metrics["history"]) == 4
    assert result["test_macro_f1"]["pytorch_av"] == metrics["test"]["macro_f1"]
    exported = json.loads((copy / "export/export.json").read_text())
    assert exported["checkpoint"]["sha256"] == sha256_file(copy / "run/checkpoint.pt")
    assert exported["evaluation"]["torch"]["n"] == sum(c["actor"] in checkpoint["data"]["actors"]["test"]
                                                      for c in read_manifest(copy / "features")["clips"])
    compare = json.loads((copy / "bench/compare.json").read_text())
    assert compare["runs"][0]["model"] == str(copy / "run/checkpoint.pt")
    # only the bench's own setting changed: only the bench runs again
    before = stamps(copy)
    run_demo(copy, **{**SETTINGS, "actors": 8, "epochs": 4, "bench_seconds": 0.2})
    out = capsys.readouterr().out
    assert "bench: changed since stages.json: settings.bench_seconds 0.3 -> 0.2" in out
    assert all(f"{stage}: up to date" in out for stage in STAGES[:-1])
    changed = {path for path, stamp in stamps(copy).items() if before.get(path) != stamp}
    assert changed == {"bench/compare.json", "bench/compare.md", "bench/latency.png"}


def test_demo_resumes_an_interrupted_stage_and_refuses_what_it_did_not_record(demo_dir, tmp_path, capsys):
    copy = copy_of(demo_dir, tmp_path)
    stages = json.loads((copy / "stages.json").read_text())
    stages["train"]["done"] = False                      # as a Ctrl-C during training leaves it
    (copy / "stages.json").write_text(json.dumps(stages))
    checkpoint = (copy / "run/checkpoint.pt").read_bytes()
    capsys.readouterr()
    run_demo(copy, **SETTINGS)
    out = capsys.readouterr().out
    assert "train: resuming an interrupted run with the same settings" in out
    assert (copy / "run/checkpoint.pt").read_bytes() == checkpoint          # last.pt: 2 of 2 epochs done
    assert "export: up to date" in out
    # a directory stages.json has no record of (an older demo) is not mixed in
    (copy / "stages.json").unlink()
    with pytest.raises(EdgeLadderError, match=r"corpus exists but .*stages.json has no record.*--force"):
        run_demo(copy, **SETTINGS)
    # an output changed behind the demo's back is made again
    (copy / "stages.json").write_text(json.dumps(stages))
    shutil.rmtree(copy / "bench")
    run_demo(copy, **SETTINGS)
    assert "bench: its outputs are not those recorded" in capsys.readouterr().out
    assert (copy / "bench/compare.json").exists()


def test_demo_without_an_int8_file_says_why(demo_dir, tmp_path, monkeypatch, capsys):
    """export refuses int8 (here: an impossible accuracy bar): the demo benches the other three and
    summary.json records why there is no int8 file."""
    from edge_ladder.export import parity
    copy = copy_of(demo_dir, tmp_path)
    shutil.rmtree(copy / "export")                       # export runs again (its outputs are gone)
    monkeypatch.setattr(parity, "INT8_MAX_PROB_ERROR", 0.0)
    monkeypatch.setattr(parity, "FP16_MAX_PROB_ERROR", 2e-2)   # as in demo_dir: fp16 is not the subject
    run_demo(copy, **SETTINGS)
    assert "model.int8.onnx  not written: ParityError" in capsys.readouterr().out
    assert not (copy / "export/model.int8.onnx").exists()
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["test_macro_f1"]["onnx_int8"] is None and "max prob error" in summary["int8"]["rejected"]
    compare = json.loads((copy / "bench/compare.json").read_text())
    assert [run["model"].rsplit("/", 1)[-1] for run in compare["runs"]] == ["checkpoint.pt", "model.onnx",
                                                                           "model.fp16.onnx"]
