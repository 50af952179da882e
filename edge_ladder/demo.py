"""`edge-ladder demo --out DIR`: the whole chain on generated data, on the CPU, in minutes.

    make-corpus -> prepare -> train -> evaluate -> export (ONNX fp32 + fp16 + int8) -> ONNX Runtime
    evaluation -> latency comparison

Layout (other tools read these names):
    DIR/corpus/    CREMA-D layout (AudioWAV/, VideoFlash/, CSVs)
    DIR/features/  prepared features (manifest.json, splits.json, clips/)
    DIR/run/       checkpoint.pt, metrics.json, confusion PNGs
    DIR/export/    model.onnx, model.fp16.onnx, model.int8.onnx, export.json
    DIR/bench/     compare.json, compare.md, latency.png
    DIR/summary.json

Every stage whose output is already complete is skipped, so an interrupted demo resumes where it
stopped (--force redoes everything).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from .errors import EdgeLadderError
from .features import atomic_write_json


def _stage(title: str):
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run_demo(out, actors: int = 16, clips_per_actor: int = 24, epochs: int = 12, seed: int = 0,
             bench_seconds: float = 3.0, force: bool = False, workers: int | None = None) -> dict:
    """Run the chain into `out`; returns the summary written to out/summary.json."""
    from . import bench, corpus, prepare, train
    from .evaluate import evaluate
    from .export import export_checkpoint

    out = Path(out)
    if force and out.exists():
        for name in ("corpus", "features", "run", "export", "bench", "summary.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    dirs = {name: out / name for name in ("corpus", "features", "run", "export", "bench")}
    seconds: dict[str, float] = {}

    start = _stage(f"1/6 make-corpus: {actors} actors x {clips_per_actor} clips (CREMA-D layout)")
    corpus.make_corpus(dirs["corpus"], actors=actors, clips_per_actor=clips_per_actor, seed=seed,
                       workers=workers, progress=True)  # keeps clips already on disk
    seconds["corpus"] = time.perf_counter() - start

    start = _stage("2/6 prepare: log-mel + Haar face crops, actor-grouped folds")
    summary = prepare.prepare(dirs["corpus"], dirs["features"], workers=workers, seed=seed, progress=True)
    print(prepare.format_summary(summary))
    seconds["prepare"] = time.perf_counter() - start

    start = _stage(f"3/6 train: cross-modal ladder network, {epochs} epochs")
    checkpoint = dirs["run"] / "checkpoint.pt"
    if checkpoint.exists() and (dirs["run"] / "metrics.json").exists():
        print(f"{checkpoint} exists: skipping training (use --force to retrain)")
    else:
        train.train(train.TrainConfig(features_dir=str(dirs["features"]), out_dir=str(dirs["run"]),
                                      epochs=epochs, model_size="small", seed=seed,
                                      resume=(dirs["run"] / "last.pt").exists()))
    seconds["train"] = time.perf_counter() - start

    start = _stage("4/6 evaluate on held-out actors (test split): both modalities, then one at a time")
    # both modalities: train already evaluated the best checkpoint on the test split
    metrics = {"av": json.loads((dirs["run"] / "metrics.json").read_text())["test"]}
    metrics.update({mode: evaluate(checkpoint, dirs["features"], "test", presence=mode) for mode in ("audio", "video")})
    for mode, report in metrics.items():
        print(f"  {mode:5s}  macro-F1 {report['macro_f1']:.3f}  accuracy {report['accuracy']:.3f}")
    seconds["evaluate"] = time.perf_counter() - start

    start = _stage("5/6 export: prune decoders, fold BN, ONNX fp32 + fp16 + int8, parity")
    exported = export_checkpoint(checkpoint, dirs["export"], features_dir=dirs["features"], split="test")
    evaluation = exported["evaluation"]  # macro-F1 of torch and the ONNX files through ONNX Runtime
    torch_f1 = evaluation["torch"]["macro_f1"]
    onnx_files = [("model.onnx", "onnx_fp32"), ("model.fp16.onnx", "onnx_fp16"), ("model.int8.onnx", "onnx_int8")]
    int8_file = exported["files"]["int8"]
    if "path" not in int8_file:           # refused or skipped: export printed why; summary.json says it
        onnx_files.pop()
        print(f"  model.int8.onnx  not written: {int8_file.get('rejected') or int8_file.get('skipped')}")
    for name, key in onnx_files:
        print(f"  {name:16s} macro-F1 {evaluation[key]['macro_f1']:.4f}  (PyTorch {torch_f1:.4f}, "
              f"difference {evaluation[key]['macro_f1'] - torch_f1:+.4f})")
    params, flops = exported["params"], exported.get("flops", {})
    print(f"  parameters: training {params['training']:,} -> inference {params['inference']:,} "
          f"({params['training'] / params['inference']:.1f}x fewer)")
    if flops:
        print(f"  multiply-adds per 2 s window: training forward {flops['training_macs']:,} -> inference "
              f"{flops['inference_macs']:,} ({1 - flops['inference_macs'] / flops['training_macs']:.1%} fewer; "
              f"the backbones, which both run once, dominate)")
    seconds["export"] = time.perf_counter() - start

    start = _stage("6/6 latency: PyTorch eager checkpoint vs pruned ONNX Runtime fp32 / fp16 / int8 "
                   "(batch 1, 2 s window, 1 thread each, interleaved)")
    # One thread each: on a small CPU two libraries' thread pools fight for the cores and the
    # figure would measure the fight, not the models.
    report = bench.compare([str(checkpoint)] + [str(dirs["export"] / name) for name, _ in onnx_files],
                           duration_s=bench_seconds, threads=1)
    dirs["bench"].mkdir(parents=True, exist_ok=True)
    bench.write_json(dirs["bench"] / "compare.json", report)
    table = bench.markdown_table(report)
    bench.write_markdown(dirs["bench"] / "compare.md", report)
    bench.write_histogram(dirs["bench"] / "latency.png", report)
    print(table)
    seconds["bench"] = time.perf_counter() - start

    result = {
        "out": str(out),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "clips": {"kept": summary["kept"], "skipped": len(summary["skipped"])},
        "test_macro_f1": {"pytorch_av": metrics["av"]["macro_f1"], "pytorch_audio_only": metrics["audio"]["macro_f1"],
                          "pytorch_video_only": metrics["video"]["macro_f1"],
                          "onnx_fp32": evaluation["onnx_fp32"]["macro_f1"],
                          "onnx_fp16": evaluation["onnx_fp16"]["macro_f1"],
                          "onnx_int8": evaluation["onnx_int8"]["macro_f1"] if "onnx_int8" in evaluation else None},
        "int8": int8_file,
        "params": params, "flops": flops, "parity": exported.get("parity"),
        "speedup": report.get("speedup"),
        "speedup_definition": report.get("speedup_definition"),
    }
    atomic_write_json(out / "summary.json", result)
    print(f"\ndone in {sum(seconds.values()):.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    print(f"summary: {out / 'summary.json'}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    parser.add_argument("--actors", type=int, default=16, help="actors in the generated corpus (default 16)")
    parser.add_argument("--clips-per-actor", type=int, default=24, help="clips per actor (default 24)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default 12)")
    parser.add_argument("--bench-seconds", type=float, default=3.0, help="timed seconds per model (default 3)")
    parser.add_argument("--workers", type=int, default=None, help="processes for corpus/prepare (default: all cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus, splits and training (default 0)")
    parser.add_argument("--force", action="store_true", help="delete previous demo outputs and start over")


def run(args: argparse.Namespace) -> int:
    if args.actors < 5:
        raise EdgeLadderError(f"--actors must be >= 5 so train/dev/test each get an actor; got {args.actors}")
    run_demo(args.out, actors=args.actors, clips_per_actor=args.clips_per_actor, epochs=args.epochs,
             seed=args.seed, bench_seconds=args.bench_seconds, force=args.force, workers=args.workers)
    return 0
