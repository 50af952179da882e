"""edge_ladder.ablate: the paired statistics (against scipy), the grid's argument checks, and real
tiny ablations: every run trained once, skipped when finished, resumed when interrupted."""
import json

import numpy as np
import pytest

from edge_ladder import ablate as ablate_module
from edge_ladder.ablate import (AblationConfig, Key, ablate, cores, paired_difference, paired_stats, run_config,
                                run_name, summarise)
from edge_ladder.cli import main as cli_main
from edge_ladder.errors import EdgeLadderError

stats = pytest.importorskip("scipy.stats")


def rows_of(values: dict, fraction=0.1, fold=0):
    """Hand-made ablation rows: {ladder: [macro-F1 per seed]}; accuracy = F1 + 0.1."""
    return [{"ladder": ladder, "labelled_fraction": fraction, "seed": seed, "fold": fold,
             "test_macro_f1": f1, "test_accuracy": f1 + 0.1}
            for ladder, per_seed in values.items() for seed, f1 in enumerate(per_seed)]


# ---------------------------------------------------------------------------------------------
# statistics


def test_paired_difference_matches_scipy():
    none = [0.40, 0.52, 0.47, 0.45, 0.50]
    within = [0.46, 0.52, 0.55, 0.44, 0.58]            # +0.06, tie, +0.08, -0.01, +0.08
    entry = paired_difference(rows_of({"none": none, "within": within}), "within", "none", 0.1)
    f1 = entry["macro_f1"]
    expected = stats.ttest_rel(within, none).confidence_interval(0.95)
    assert entry["pairs"] == 5 and entry["unpaired"] == []
    assert f1["mean"] == pytest.approx(np.mean(np.subtract(within, none)))
    assert f1["ci95"] == pytest.approx([expected.low, expected.high])
    assert f1["ci95"][0] < f1["mean"] < f1["ci95"][1]
    assert (f1["wins"], f1["ties"], f1["losses"], f1["total"]) == (3, 1, 1, 5)
    assert f1["verdict"] == "no difference" and f1["ci95"][0] < 0 < f1["ci95"][1]
    # accuracy is F1 + 0.1 in both modes: the same differences
    assert entry["accuracy"]["mean"] == pytest.approx(f1["mean"])


def test_clear_differences_have_a_sign():
    none = [0.40, 0.52, 0.47, 0.45]
    better = paired_stats(np.add([0.05, 0.06, 0.04, 0.05], 0))
    assert better["verdict"] == "better" and better["ci95"][0] > 0 and better["wins"] == 4
    worse = paired_difference(rows_of({"none": none, "cross": [x - 0.1 for x in none]}), "cross", "none", 0.1)
    assert worse["macro_f1"]["verdict"] == "worse" and worse["macro_f1"]["losses"] == 4
    assert worse["macro_f1"]["ci95"] == pytest.approx([-0.1, -0.1])     # no spread: the interval is the mean
    one = paired_stats([0.03])
    assert one["ci95"] is None and one["verdict"] == "too few pairs"


def test_unpaired_rows_are_reported_not_matched():
    rows = rows_of({"none": [0.40, 0.52, 0.47], "within": [0.46, 0.50, 0.55]})
    rows = [r for r in rows if not (r["ladder"] == "none" and r["seed"] == 2)]   # its partner has not finished
    rows += rows_of({"within": [0.9]}, fold=3)                                   # another fold: no partner either
    entry = paired_difference(rows, "within", "none", 0.1)
    assert entry["pairs"] == 2
    assert entry["unpaired"] == [{"ladder": "within", "seed": 0, "fold": 3}, {"ladder": "within", "seed": 2, "fold": 0}]
    assert entry["macro_f1"]["mean"] == pytest.approx(np.mean([0.06, -0.02]))
    with pytest.raises(EdgeLadderError, match="two results for within_f0.1_s0_k0"):
        paired_difference(rows + rows_of({"within": [0.3]}), "within", "none", 0.1)


def test_summary_compares_every_mode_with_none_and_within():
    rows = rows_of({"none": [0.4, 0.5], "within": [0.45, 0.52], "cross": [0.47, 0.5]}) + \
        rows_of({"none": [0.6, 0.7], "within": [0.6, 0.72], "cross": [0.61, 0.69]}, fraction=1.0)
    summary = summarise(rows, ("none", "within", "cross"), (0.1, 1.0))
    assert [(e["ladder"], e["baseline"], e["labelled_fraction"]) for e in summary["paired_differences"]] == [
        ("within", "none", 0.1), ("within", "none", 1.0), ("cross", "none", 0.1), ("cross", "none", 1.0),
        ("cross", "within", 0.1), ("cross", "within", 1.0)]
    mode = next(m for m in summary["modes"] if m["ladder"] == "cross" and m["labelled_fraction"] == 1.0)
    assert mode["runs"] == 2 and mode["macro_f1"]["mean"] == pytest.approx(0.65)
    interval = stats.t.interval(0.95, 1, loc=0.65, scale=stats.sem([0.61, 0.69]))
    assert mode["macro_f1"]["ci95"] == pytest.approx(list(interval))


# ---------------------------------------------------------------------------------------------
# arguments


@pytest.mark.parametrize("flags, message", [
    (["--ladder", "none,sideways"],
     "argument --ladder: expected none, within or cross; got 'sideways' in 'none,sideways'"),
    (["--ladder", ""], "argument --ladder: expected a comma-separated list of ladder modes; got '' (an empty list)"),
    (["--ladder", "none,,within"], "(an empty item)"),
    (["--ladder", "none,within,none"], "argument --ladder: none given more than once in 'none,within,none'"),
    (["--labelled-fraction", "0,0.1"], "argument --labelled-fraction: expected a number in (0, 1]; got '0' in '0,0.1'"),
    (["--labelled-fraction", "1.5"], "expected a number in (0, 1]; got '1.5'"),
    (["--labelled-fraction", "0.1,0.10"], "0.1 given more than once"),
    (["--seeds", "0,-1"], "argument --seeds: expected an integer >= 0; got '-1'"),
    (["--folds", "0,x"], "argument --folds: expected an integer >= 0; got 'x'"),
    (["--workers", "0"], "argument --workers: expected an integer >= 1"),
])
def test_bad_grid_is_a_usage_error(flags, message, tmp_path, capsys):
    assert cli_main(["ablate", str(tmp_path), "--out", str(tmp_path / "ab"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "edge-ladder ablate --help" in err
    assert not (tmp_path / "ab").exists()


def test_folds_outside_the_prepared_k_and_too_many_workers(tiny_features, tmp_path, capsys):
    out = tmp_path / "ab"
    assert cli_main(["ablate", str(tiny_features), "--out", str(out), "--folds", "0,5,7"]) == 2
    err = capsys.readouterr().err
    assert "was prepared with k = 5 actor folds" in err and "got 5,7" in err and "prepare --folds K" in err
    assert cli_main(["ablate", str(tiny_features), "--out", str(out), "--workers", str(cores() + 1)]) == 2
    assert f"pass --workers {cores()} or fewer" in capsys.readouterr().err
    assert cli_main(["ablate", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "not a features directory" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(EdgeLadderError, match="--folds: -1 .* cannot be mixed"):
        AblationConfig(features_dir=str(tiny_features), folds=(-1, 0))
    with pytest.raises(EdgeLadderError, match="ablate sets seed per run"):
        AblationConfig(features_dir=str(tiny_features), train={"seed": 3})
    with pytest.raises(EdgeLadderError, match="--seeds: expected at least one value"):
        AblationConfig(features_dir=str(tiny_features), seeds=())


# ---------------------------------------------------------------------------------------------
# real tiny ablations


@pytest.fixture(scope="module")
def ablation_features(tmp_path_factory):
    """6 actors x 12 clips in 5 actor folds (one of two actors): seconds per tiny epoch."""
    from edge_ladder.synthetic import make_features
    return make_features(tmp_path_factory.mktemp("ablation_features"), actors=6, clips_per_actor=12, seed=0)


def grid(features, out, **overrides):
    settings = dict(features_dir=str(features), out_dir=str(out), ladders=("none", "within"),
                    labelled_fractions=(0.5, 1.0), seeds=(0, 1), train={"epochs": 1, "model_size": "tiny"})
    return AblationConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def finished_ablation(ablation_features, tmp_path_factory):
    """2 modes x 2 fractions x 2 seeds x the prepared fold, 1 tiny epoch each, on 2 worker
    processes where there are 2 cores -> (config, summary, printed output)."""
    import contextlib
    import io
    out = tmp_path_factory.mktemp("ablation")
    config = grid(ablation_features, out, workers=min(2, cores()))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = ablate(config)
    return config, summary, printed.getvalue()


@pytest.mark.slow
def test_ablation_trains_every_run_and_summarises_them(finished_ablation):
    config, summary, printed = finished_ablation
    out = ablate_module.Path(config.out_dir)
    from edge_ladder.features import read_manifest, read_splits
    train_actors = set(read_splits(config.features_dir)["train"])
    n_train = sum(c["actor"] in train_actors for c in read_manifest(config.features_dir)["clips"])
    on_disk = json.loads((out / "ablation.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert summary["runs_planned"] == summary["runs_finished"] == 8 and summary["complete"]
    assert sorted((r["ladder"], r["labelled_fraction"], r["seed"], r["fold"]) for r in summary["rows"]) == sorted(
        (m, f, s, -1) for m in ("none", "within") for f in (0.5, 1.0) for s in (0, 1))
    for row in summary["rows"]:
        run_dir = out / row["run_dir"]
        assert run_dir.name == run_name(Key(row["ladder"], row["labelled_fraction"], row["seed"], row["fold"]))
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert row["test_macro_f1"] == metrics["test"]["macro_f1"]
        assert row["test_accuracy"] == metrics["test"]["accuracy"]
        from edge_ladder.metrics import chance_level
        assert row["test_at_chance"] == chance_level(metrics["test"]["confusion"])["at_chance"]
        assert metrics["train_config"]["ladder"] == row["ladder"] and metrics["train_config"]["seed"] == row["seed"]
        assert metrics["train_config"]["labelled_fraction"] == row["labelled_fraction"]
        assert metrics["train_config"]["epochs"] == 1 and metrics["train_config"]["model_size"] == "tiny"
        assert row["labelled_clips"] == metrics["labelled"]["train"]["count"]
        assert row["labelled_clips"] + row["unlabelled_clips"] == n_train
        assert row["labelled_clips"] == round(row["labelled_fraction"] * n_train)
        assert "epoch   1/1" in (run_dir / "train.log").read_text()      # the run's output went to its log
    paired = summary["paired_differences"]
    assert [(e["ladder"], e["baseline"], e["labelled_fraction"], e["pairs"]) for e in paired] == [
        ("within", "none", 0.5, 2), ("within", "none", 1.0, 2)]
    rows = {(r["ladder"], r["labelled_fraction"], r["seed"]): r for r in summary["rows"]}
    differences = [rows["within", 1.0, s]["test_macro_f1"] - rows["none", 1.0, s]["test_macro_f1"] for s in (0, 1)]
    assert paired[1]["macro_f1"]["mean"] == pytest.approx(np.mean(differences))
    assert printed.count("test macro-F1") == 8 and "0 left" in printed and "8 to train" in printed
    markdown = (out / "ablation.md").read_text()
    assert "| within - none | 0.5 | 2 |" in markdown and "is \"no difference\"" in markdown
    at_chance = sum(r["test_at_chance"] for r in summary["rows"])
    assert (f"WARNING: {at_chance} of 8 runs are at chance level" in markdown) == (at_chance > 0)
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_finished_runs_are_skipped(finished_ablation, monkeypatch, capsys):
    config, summary, _ = finished_ablation
    out = ablate_module.Path(config.out_dir)
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.json")}
    calls = []
    monkeypatch.setattr("edge_ladder.train.train", lambda c: calls.append(c))
    again = ablate(grid(config.features_dir, out))
    assert calls == [] and "8 finished, 0 to resume, 0 to train" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.json")} == mtimes
    assert again["rows"] == summary["rows"]
    # other settings are refused before anything trains, naming the difference and --force
    with pytest.raises(EdgeLadderError, match=r"8 run directories .* hold runs with other settings .* epochs 1 "
                                              r"\(this ablation: 2\).* --force"):
        ablate(grid(config.features_dir, out, train={"epochs": 2, "model_size": "tiny"}))
    assert calls == []


@pytest.mark.slow
def test_interrupted_ablation_resumes(ablation_features, tmp_path, monkeypatch, capsys):
    from edge_ladder import train as train_module
    real_train = train_module.train
    calls = []

    def ctrl_c_in_second_run(config):   # the second run saves epoch 1 of 2, then Ctrl-C
        calls.append(config)
        if len(calls) == 2:
            real_train(ablate_module.replace(config, stop_after_epoch=1))
            raise KeyboardInterrupt
        return real_train(config)

    monkeypatch.setattr("edge_ladder.train.train", ctrl_c_in_second_run)
    command = ["ablate", str(ablation_features), "--out", str(tmp_path), "--ladder", "none,within",
               "--labelled-fraction", "1", "--seeds", "0", "--folds", "1", "--epochs", "2", "--model-size", "tiny"]
    assert cli_main(command) == 130
    err = capsys.readouterr().err
    assert "interrupted; 1 of 2 runs finished" in err and "Re-run the same command to continue" in err
    assert json.loads((tmp_path / "ablation.json").read_text())["runs_finished"] == 1
    interrupted = ablate_module.Path(calls[1].out_dir)
    assert calls[1].ladder == "within" and not (interrupted / "metrics.json").exists()
    import torch
    saved_epoch_1 = torch.load(interrupted / "last.pt", weights_only=True)["history"][0]

    assert cli_main(command) == 0
    out = capsys.readouterr().out
    assert "1 finished, 1 to resume, 0 to train" in out
    assert len(calls) == 3 and calls[2].resume and calls[2].ladder == "within"
    metrics = json.loads((interrupted / "metrics.json").read_text())
    assert metrics["history"][0] == saved_epoch_1 and len(metrics["history"]) == 2   # continued, not retrained
    summary = json.loads((tmp_path / "ablation.json").read_text())
    assert summary["complete"] and summary["paired_differences"][0]["pairs"] == 1
    # --folds 1: actor fold 1 of splits.json's k and seed, not the prepared fold 0
    from edge_ladder.features import actor_folds, read_manifest, read_splits
    splits = read_splits(ablation_features)
    fold_1 = actor_folds({c["actor"] for c in read_manifest(ablation_features)["clips"]}, k=splits["k"], fold=1,
                         seed=splits["seed"])
    assert fold_1["test"] != splits["test"]
    for row in summary["rows"]:
        assert row["fold"] == 1 and row["run_dir"].endswith("_k1")
        assert json.loads((tmp_path / row["run_dir"] / "metrics.json").read_text())["data"]["actors"]["test"] == \
            fold_1["test"]


def test_run_config_is_the_grid_point(ablation_features, tmp_path):
    config = grid(ablation_features, tmp_path, train={"epochs": 3, "model_size": "tiny", "lambdas": (0.5,),
                                                      "unlabelled": (str(ablation_features),)})
    run = run_config(config, Key("within", 0.05, 2, -1))
    assert (run.ladder, run.labelled_fraction, run.seed, run.fold, run.epochs, run.lambdas) == \
        ("within", 0.05, 2, -1, 3, (0.5,))
    assert run.out_dir == str(tmp_path / "runs" / "within_f0.05_s2_kprepared") and not run.progress
    assert run.unlabelled == (str(ablation_features.resolve()),)


@pytest.mark.slow
def test_unlabelled_directories_pass_through_and_resolve(ablation_features, tmp_path, monkeypatch, capsys):
    from edge_ladder.synthetic import make_features
    make_features(tmp_path / "robot", actors=3, clips_per_actor=6, seed=5)
    monkeypatch.chdir(tmp_path)                       # a relative --unlabelled path
    command = ["ablate", str(ablation_features), "--out", "ab", "--ladder", "within", "--labelled-fraction", "0.5",
               "--seeds", "0", "--epochs", "1", "--model-size", "tiny", "--unlabelled", "robot", "--epoch-steps", "2"]
    assert cli_main(command) == 0
    row, = json.loads((tmp_path / "ab" / "ablation.json").read_text())["rows"]
    metrics = json.loads((tmp_path / "ab" / row["run_dir"] / "metrics.json").read_text())
    assert metrics["train_config"]["epoch_steps"] == 2 and metrics["epoch_plan"]["steps"] == 2
    assert "epoch_steps 2" in (tmp_path / "ab" / "ablation.md").read_text()
    assert metrics["train_config"]["unlabelled"] == [str(tmp_path / "robot")]
    assert row["unlabelled_clips"] == metrics["labelled"]["train"]["of"] - row["labelled_clips"] + 18
    capsys.readouterr()
    assert cli_main(command) == 0                     # the same relative path: the same run, skipped
    assert "1 finished, 0 to resume, 0 to train" in capsys.readouterr().out


@pytest.mark.slow
def test_force_retrains_runs_with_other_settings(finished_ablation, tmp_path):
    import shutil
    config, summary, _ = finished_ablation
    name = "none_f0.5_s0_kprepared"
    shutil.copytree(ablate_module.Path(config.out_dir) / "runs" / name, tmp_path / "runs" / name)
    two_epochs = dict(ladders=("none",), labelled_fractions=(0.5,), seeds=(0,),
                      train={"epochs": 2, "model_size": "tiny"})
    with pytest.raises(EdgeLadderError, match="1 run directory .* epochs 1 \\(this ablation: 2\\)"):
        ablate(grid(config.features_dir, tmp_path, **two_epochs))
    again = ablate(grid(config.features_dir, tmp_path, force=True, **two_epochs))
    metrics = json.loads((tmp_path / "runs" / name / "metrics.json").read_text())
    assert metrics["train_config"]["epochs"] == 2 and len(metrics["history"]) == 2
    assert again["runs_finished"] == 1 and "--force: deleted" in (tmp_path / "runs" / name / "train.log").read_text()


def test_runs_of_the_earlier_labelled_selection_are_not_mixed_in(finished_ablation, tmp_path):
    """select_labelled stratifies by emotion, then actor; a finished run whose record says it kept
    the labels the earlier (emotion, actor) draw chose trained on other labelled clips: refused."""
    import shutil
    config, _, _ = finished_ablation
    name = "none_f0.5_s0_kprepared"
    shutil.copytree(ablate_module.Path(config.out_dir) / "runs" / name, tmp_path / "runs" / name)
    metrics_path = tmp_path / "runs" / name / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    one_run = dict(ladders=("none",), labelled_fractions=(0.5,), seeds=(0,), train={"epochs": 1, "model_size": "tiny"})
    assert ablate(grid(config.features_dir, tmp_path, **one_run))["runs_finished"] == 1     # today's record: kept
    metrics["labelled"]["stratified_by"] = ["emotion", "actor"]
    metrics_path.write_text(json.dumps(metrics))
    with pytest.raises(EdgeLadderError, match="labelled clips stratified by emotion and actor \\(this ablation: by "
                                              "emotion, then actor within emotion\\)"):
        ablate(grid(config.features_dir, tmp_path, **one_run))
