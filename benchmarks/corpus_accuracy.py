"""How hard is `make-corpus --difficulty crema`? The default model, one modality at a time, on K actor folds.

    python benchmarks/corpus_accuracy.py --out corpus_accuracy_out                 # generate + prepare + train
    python benchmarks/corpus_accuracy.py --features FEATURES_DIR --out OUT --folds 3

Steps (each resumable: a finished stage or run is re-used, not redone):
    1. a crema corpus (--corpus DIR if given and present; else generated into OUT/corpus)
    2. prepared features (--features DIR if given; else `prepare` into OUT/features)
    3. `edge-ladder train` with its defaults and `--modalities audio|video|av --fold K` for
       K = 0 .. --folds - 1 (the test fold; the next fold is dev), into OUT/runs/MODALITY-foldK
    4. per modality: test accuracy and macro-F1, mean +- 95 % CI (Student t over the folds), printed
       and written to OUT/corpus_accuracy.json with the machine and library versions.

Targets of issue 11 (every clip labelled, 5 folds): audio 0.55-0.62, video 0.60-0.70, av 0.70-0.82.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TARGETS = {"audio": (0.55, 0.62), "video": (0.60, 0.70), "av": (0.70, 0.82)}
MODALITIES = ("audio", "video", "av")


def mean_ci(values) -> dict:
    """ablate.describe (n, mean, std, 95 % Student-t ci95 [low, high] or None) plus the values."""
    from edge_ladder.ablate import describe
    return {**describe(values), "values": [round(float(v), 4) for v in values]}


def ensure_features(args) -> Path:
    """Steps 1-2: the features directory to train on."""
    from edge_ladder import corpus_crema, prepare
    out = Path(args.out)
    if args.features and (Path(args.features) / "manifest.json").exists():
        return Path(args.features)
    corpus_dir = Path(args.corpus) if args.corpus else out / "corpus"
    record = corpus_dir / "corpus.json"
    if not (record.exists() and json.loads(record.read_text()).get("done")):
        print(f"=== make-corpus --difficulty crema: {args.actors} actors x {args.clips_per_actor} clips -> {corpus_dir}",
              flush=True)
        corpus_crema.make_corpus(corpus_dir, actors=args.actors, clips_per_actor=args.clips_per_actor, seed=args.seed,
                                 workers=args.workers, progress=True)
    features_dir = Path(args.features) if args.features else out / "features"
    print(f"=== prepare {corpus_dir} -> {features_dir}", flush=True)
    summary = prepare.prepare(corpus_dir, features_dir, workers=args.workers, seed=args.seed, progress=True)
    print(prepare.format_summary(summary), flush=True)
    return features_dir


def run_one(features_dir: Path, run_dir: Path, modality: str, fold: int, args) -> dict:
    """Step 3 for one (modality, fold): train with train's defaults (re-used when metrics.json is there)."""
    from edge_ladder import train
    metrics_path = run_dir / "metrics.json"
    overrides = {"epochs": args.epochs} if args.epochs else {}
    wanted = {"modalities": modality, "fold": fold, "seed": args.seed,
              "epochs": args.epochs or train.TrainConfig().epochs}
    if metrics_path.exists():          # re-used only when it ran with these settings
        saved = json.loads(metrics_path.read_text()).get("train_config", {})
        if any(saved.get(key) != value for key, value in wanted.items()):
            print(f"  {run_dir.name}: ran with other settings ({ {k: saved.get(k) for k in wanted} }): again", flush=True)
            metrics_path.unlink()
    if not metrics_path.exists():
        config = train.TrainConfig(features_dir=str(features_dir), out_dir=str(run_dir), modalities=modality,
                                   fold=fold, seed=args.seed, progress=False, force=True, **overrides)
        start = time.perf_counter()
        train.train(config)
        print(f"  {modality}-fold{fold}: {time.perf_counter() - start:.0f} s", flush=True)
    metrics = json.loads(metrics_path.read_text())
    return {"modality": modality, "fold": fold, "accuracy": metrics["test"]["accuracy"],
            "macro_f1": metrics["test"]["macro_f1"], "epochs": metrics["train_config"]["epochs"],
            "train_seconds": metrics.get("train_seconds"), "test_clips": int(np.sum(metrics["test"]["confusion"])),
            "test_actors": metrics.get("data", {}).get("actors", {}).get("test")}


def summarise(rows: list, modalities) -> dict:
    """Per modality: accuracy and macro-F1 mean +- 95 % CI over the finished folds."""
    summary = {}
    for modality in modalities:
        mine = [r for r in rows if r["modality"] == modality]
        if mine:
            summary[modality] = {"accuracy": mean_ci([r["accuracy"] for r in mine]),
                                 "macro_f1": mean_ci([r["macro_f1"] for r in mine]),
                                 "target_accuracy": TARGETS[modality]}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory (runs/, corpus_accuracy.json)")
    parser.add_argument("--features", default=None, help="prepared features of a crema corpus (used if present)")
    parser.add_argument("--corpus", default=None, help="a crema corpus directory (generated there if absent)")
    parser.add_argument("--actors", type=int, default=30, help="actors of a generated corpus (default 30)")
    parser.add_argument("--clips-per-actor", type=int, default=40, help="clips per actor (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="corpus, fold and training seed (default 0)")
    parser.add_argument("--folds", type=int, default=5, help="test folds 0..N-1 to run (default 5)")
    parser.add_argument("--modalities", default=",".join(MODALITIES), help="comma list of audio, video, av")
    parser.add_argument("--epochs", type=int, default=0, help="training epochs (default: train's default)")
    parser.add_argument("--workers", type=int, default=None, help="processes for make-corpus/prepare")
    args = parser.parse_args(argv)
    modalities = [m for m in args.modalities.split(",") if m]
    if not modalities or set(modalities) - set(MODALITIES):
        parser.error(f"--modalities: a comma list of {', '.join(MODALITIES)}; got {args.modalities!r}")
    if args.folds < 1:
        parser.error(f"--folds must be >= 1; got {args.folds}")

    from edge_ladder.benchenv import capture_environment
    from edge_ladder.features import atomic_write_json
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    features_dir = ensure_features(args)
    k = json.loads((features_dir / "splits.json").read_text())["k"]
    if args.folds > k:
        parser.error(f"--folds {args.folds}: {features_dir} has {k} actor folds")
    manifest = json.loads((features_dir / "manifest.json").read_text())
    path, rows = out / "corpus_accuracy.json", []
    environment = capture_environment()
    for fold in range(args.folds):          # fold-major: an interrupted run still has every modality of fold 0
        for modality in modalities:
            rows.append(run_one(features_dir, out / "runs" / f"{modality}-fold{fold}", modality, fold, args))
            # written after every run, so a benchmark stopped part-way still reports what it measured
            atomic_write_json(path, {"features": str(features_dir), "source": manifest.get("source"),
                                     "clips": len(manifest["clips"]), "folds_run": args.folds, "k": k,
                                     "complete": len(rows) == args.folds * len(modalities), "runs": rows,
                                     "summary": summarise(rows, modalities), "environment": environment})
    print(f"\n{features_dir}: default model, {args.folds} of {k} actor folds")
    for modality, s in summarise(rows, modalities).items():
        acc, f1, (low, high) = s["accuracy"], s["macro_f1"], s["target_accuracy"]
        inside = "inside" if low <= acc["mean"] <= high else "outside"
        interval = lambda m: "" if m["ci95"] is None else f" [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"  # noqa: E731
        print(f"  {modality:5s} accuracy {acc['mean']:.3f}{interval(acc)}  macro-F1 {f1['mean']:.3f}{interval(f1)}  "
              f"(target {low:.2f}-{high:.2f}: {inside})")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
