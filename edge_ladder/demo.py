"""`edge-ladder demo --out DIR`: the whole chain on generated data, on the CPU, in minutes.

    make-corpus -> prepare -> train -> evaluate -> export (ONNX fp32 + fp16 + int8) -> ONNX Runtime
    evaluation -> latency comparison

Layout (other tools read these names):
    DIR/corpus/    CREMA-D layout (AudioWAV/, VideoFlash/, CSVs)
    DIR/features/  prepared features (manifest.json, splits.json, clips/)
    DIR/run/       checkpoint.pt, metrics.json, confusion PNGs
    DIR/export/    model.onnx, model.fp16.onnx, model.int8.onnx, export.json
    DIR/bench/     compare.json, compare.md, latency.png
    DIR/stages.json  per stage: the settings and input digests it ran with, digests of its outputs
    DIR/summary.json

Re-running the demo re-uses a stage only when it would make the same thing: its settings, the
digests of its inputs (the upstream stage's outputs) and of its own outputs all match
stages.json. A stage whose settings or inputs changed says which, deletes its directory and
runs again, and so does every stage downstream of it (their inputs changed); an interrupted
stage with the same settings resumes (corpus and prepare keep finished clips, train continues
last.pt). A directory stages.json knows nothing about (an older demo, files put there by hand)
is refused rather than mixed in. --force deletes everything and starts over.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from .argtypes import NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Range
from .errors import EdgeLadderError
from .features import atomic_write_json
from .runtime.sidecar import sha256_file

ACTORS = Range(int, minimum=5, why="5 actor folds: train, dev and test each get an actor")
STAGE_DIRS = {"corpus": "corpus", "prepare": "features", "train": "run", "export": "export", "bench": "bench"}


def _stage(title: str):
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def tree_digest(root: Path, names=None) -> str | None:
    """sha256 over the relative paths and contents of the files under `root` (only `names`, files
    or folders directly under it, when given); None when one of them is missing."""
    root = Path(root)
    tops = [root / name for name in names] if names is not None else [root]
    if not all(top.exists() for top in tops):
        return None
    digest = hashlib.sha256()
    for top in tops:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            digest.update(str(path.relative_to(root)).encode() + b"\0" + sha256_file(path).encode() + b"\0")
    return digest.hexdigest()


def _differences(old, new, prefix: str = "") -> list:
    """['settings.actors 6 -> 8', ...] between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
        return out
    if old == new:
        return []
    short = lambda v: v[:12] if isinstance(v, str) and len(v) == 64 else v  # noqa: E731 - sha256 -> 12 digits
    return [f"{prefix} {short(old)} -> {short(new)}"]


class Stages:
    """DIR/stages.json: what each stage ran with (settings + input digests) and what it wrote."""

    def __init__(self, out: Path):
        self.out, self.path = out, out / "stages.json"
        self.records = json.loads(self.path.read_text()) if self.path.exists() else {}

    def plan(self, name: str, settings: dict, inputs: dict, outputs) -> str:
        """'skip' (up to date), 'resume' (same settings, interrupted) or 'run' (from scratch; the
        stage's directory is deleted first). `outputs()` -> the digests of what the stage writes.
        Prints why."""
        key = {"settings": settings, "inputs": inputs}
        record = self.records.get(name)
        folder = self.out / STAGE_DIRS[name] if name in STAGE_DIRS else None
        if record is None:
            if folder is not None and folder.exists() and any(folder.iterdir()):
                raise EdgeLadderError(f"{folder} exists but {self.path} has no record of how it was made (an older "
                                      f"edge-ladder demo, or files put there by hand), so it could mix with this "
                                      f"run's settings. Start over with --force, or use another --out.")
            return "run"
        if record["key"] != key:
            changed = _differences(record["key"], key)
            print(f"{name}: changed since {self.path.name}: {'; '.join(changed)}: "
                  f"{'deleting ' + str(folder) + ' and ' if folder is not None and folder.exists() else ''}running again",
                  flush=True)
            self._clear(name, folder)
            return "run"
        if not record.get("done"):
            print(f"{name}: resuming an interrupted run with the same settings", flush=True)
            return "resume"
        now = outputs()
        if now != record.get("outputs"):
            changed = [f"{item.split(' ')[0]} changed or missing" for item in _differences(record.get("outputs"), now)]
            print(f"{name}: its outputs are not those recorded ({'; '.join(changed)}): running again", flush=True)
            self._clear(name, folder)
            return "run"
        print(f"{name}: up to date (same settings, inputs and outputs as recorded in {self.path}): skipped",
              flush=True)
        return "skip"

    def started(self, name: str, settings: dict, inputs: dict) -> None:
        self.records[name] = {"key": {"settings": settings, "inputs": inputs}, "done": False}
        atomic_write_json(self.path, self.records)

    def finished(self, name: str, outputs: dict, seconds: float, result=None) -> None:
        self.records[name].update(done=True, outputs=outputs, seconds=round(seconds, 1), result=result)
        atomic_write_json(self.path, self.records)

    def result(self, name: str):
        return self.records[name].get("result")

    def _clear(self, name: str, folder) -> None:
        if folder is not None and folder.exists():
            shutil.rmtree(folder)
        self.records.pop(name, None)
        atomic_write_json(self.path, self.records)


def run_demo(out, actors: int = 16, clips_per_actor: int = 24, epochs: int = 12, seed: int = 0,
             bench_seconds: float = 3.0, force: bool = False, workers: int | None = None,
             difficulty: str = "easy") -> dict:
    """Run the chain into `out`; returns the summary written to out/summary.json. difficulty: the
    corpus (make-corpus --difficulty: easy, the fast default, or crema, edge_ladder.corpus_crema)."""
    from . import bench, corpus, prepare, train
    from .evaluate import evaluate
    from .export import export_checkpoint

    out = Path(out)
    ACTORS.check("--actors", actors)
    generate = corpus.generator(difficulty)
    if force and out.exists():
        for name in (*STAGE_DIRS.values(), "stages.json", "summary.json"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    dirs = {name: out / name for name in ("corpus", "features", "run", "export", "bench")}
    checkpoint = dirs["run"] / "checkpoint.pt"
    stages = Stages(out)
    seconds: dict[str, float] = {}

    def stage(name: str, settings: dict, inputs: dict, outputs, work, keep_result: bool = False) -> None:
        """Run `work(resume)` unless stages.json says its outputs are already there; with
        keep_result, what it returns is recorded (stages.result(name))."""
        start = time.perf_counter()
        decision = stages.plan(name, settings, inputs, outputs)
        if decision != "skip":
            stages.started(name, settings, inputs)
            result = work(decision == "resume")
            stages.finished(name, outputs(), time.perf_counter() - start, result if keep_result else None)
        seconds[name] = time.perf_counter() - start

    def make_corpus(resume):            # clips already on disk (same settings: an interrupted run) are kept
        generate(dirs["corpus"], actors=actors, clips_per_actor=clips_per_actor, seed=seed, workers=workers,
                 progress=True)

    def run_train(resume):
        resume = resume and (dirs["run"] / "last.pt").exists()
        train.train(train.TrainConfig(features_dir=str(dirs["features"]), out_dir=str(dirs["run"]), epochs=epochs,
                                      model_size="small", seed=seed, resume=resume, force=not resume))

    def run_export(resume):
        export_checkpoint(checkpoint, dirs["export"], features_dir=dirs["features"], split="test")

    def export_digest():
        return {name: sha256_file(dirs["export"] / name) for name in
                ("export.json", "model.onnx", "model.fp16.onnx", "model.int8.onnx") if (dirs["export"] / name).exists()}

    def features_digest():             # manifest.json + splits.json + clips/, not prepare_report.json's timing
        return tree_digest(dirs["features"], ("manifest.json", "splits.json", "clips"))

    _stage(f"1/6 make-corpus: {actors} actors x {clips_per_actor} clips (CREMA-D layout, --difficulty {difficulty})")
    # the easy corpus' settings stay as before, so demo directories made before --difficulty are still up to date
    corpus_settings = {"actors": actors, "clips_per_actor": clips_per_actor, "seed": seed,
                       **({"difficulty": difficulty} if difficulty != "easy" else {})}
    stage("corpus", corpus_settings, {},
          lambda: {"corpus": tree_digest(dirs["corpus"])}, make_corpus)

    _stage("2/6 prepare: log-mel + Haar face crops, actor-grouped folds")
    stage("prepare", {"seed": seed}, stages.records["corpus"]["outputs"], lambda: {"features": features_digest()},
          lambda resume: prepare.prepare(dirs["corpus"], dirs["features"], workers=workers, seed=seed, progress=True),
          keep_result=True)
    summary = stages.result("prepare")
    print(prepare.format_summary(summary))
    features = stages.records["prepare"]["outputs"]

    _stage(f"3/6 train: cross-modal ladder network, {epochs} epochs")
    stage("train", {"epochs": epochs, "model_size": "small", "seed": seed}, features,
          lambda: {"checkpoint.pt": tree_digest(dirs["run"], ["checkpoint.pt"]),
                   "metrics.json": tree_digest(dirs["run"], ["metrics.json"])}, run_train)
    trained = {**features, "checkpoint.pt": stages.records["train"]["outputs"]["checkpoint.pt"]}

    _stage("4/6 evaluate on held-out actors (test split): both modalities, then one at a time")
    stage("evaluate", {"split": "test", "presence": ["audio", "video"]}, trained, lambda: {},
          lambda resume: {mode: evaluate(checkpoint, dirs["features"], "test", presence=mode)
                          for mode in ("audio", "video")}, keep_result=True)
    # both modalities: train already evaluated the best checkpoint on the test split
    metrics = {"av": json.loads((dirs["run"] / "metrics.json").read_text())["test"], **stages.result("evaluate")}
    for mode, report in metrics.items():
        print(f"  {mode:5s}  macro-F1 {report['macro_f1']:.3f}  accuracy {report['accuracy']:.3f}")

    _stage("5/6 export: prune decoders, fold BN, ONNX fp32 + fp16 + int8, parity")
    stage("export", {"split": "test", "int8": True}, trained, export_digest, run_export)
    exported = json.loads((dirs["export"] / "export.json").read_text())
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

    _stage("6/6 latency: PyTorch eager checkpoint vs pruned ONNX Runtime fp32 / fp16 / int8 "
           "(batch 1, 2 s window, 1 thread each, interleaved)")

    def run_bench(resume):
        # One thread each: on a small CPU two libraries' thread pools fight for the cores and the
        # figure would measure the fight, not the models.
        report = bench.compare([str(checkpoint)] + [str(dirs["export"] / name) for name, _ in onnx_files],
                               duration_s=bench_seconds, threads=1)
        dirs["bench"].mkdir(parents=True, exist_ok=True)
        bench.write_json(dirs["bench"] / "compare.json", report)
        bench.write_markdown(dirs["bench"] / "compare.md", report)
        bench.write_histogram(dirs["bench"] / "latency.png", report)

    stage("bench", {"bench_seconds": bench_seconds, "threads": 1},
          {"checkpoint.pt": trained["checkpoint.pt"], **stages.records["export"]["outputs"]},
          lambda: {name: tree_digest(dirs["bench"], [name]) for name in ("compare.json", "compare.md", "latency.png")},
          run_bench)
    report = json.loads((dirs["bench"] / "compare.json").read_text())
    print(bench.markdown_table(report))

    result = {
        "out": str(out),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "stage_seconds_when_run": {k: v.get("seconds") for k, v in stages.records.items()},
        "clips": {"kept": summary["kept"], "skipped": len(summary["skipped"])},
        "test_macro_f1": {"pytorch_av": metrics["av"]["macro_f1"], "pytorch_audio_only": metrics["audio"]["macro_f1"],
                          "pytorch_video_only": metrics["video"]["macro_f1"],
                          "onnx_fp32": evaluation["onnx_fp32"]["macro_f1"],
                          "onnx_fp16": evaluation["onnx_fp16"]["macro_f1"],
                          "onnx_int8": evaluation["onnx_int8"]["macro_f1"] if "onnx_int8" in evaluation else None},
        "int8": int8_file,
        "params": params, "flops": flops, "parity": exported.get("parity"),
        "chance_level": exported.get("chance_level"),
        "speedup": report.get("speedup"),
        "speedup_definition": report.get("speedup_definition"),
    }
    atomic_write_json(out / "summary.json", result)
    print(f"\ndone in {sum(seconds.values()):.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    print(f"summary: {out / 'summary.json'}")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    parser.add_argument("--actors", type=ACTORS, default=16,
                        help="actors in the generated corpus, >= 5 so train/dev/test each get one (default 16)")
    parser.add_argument("--clips-per-actor", type=POSITIVE_INT, default=24, help="clips per actor (default 24)")
    parser.add_argument("--epochs", type=POSITIVE_INT, default=12, help="training epochs (default 12)")
    parser.add_argument("--bench-seconds", type=POSITIVE, default=3.0, help="timed seconds per model (default 3)")
    parser.add_argument("--workers", type=POSITIVE_INT, default=None,
                        help="processes for corpus/prepare (default: all cores)")
    parser.add_argument("--seed", type=NON_NEGATIVE_INT, default=0,
                        help="seed of the corpus, splits and training (default 0)")
    parser.add_argument("--force", action="store_true", help="delete previous demo outputs and start over")
    parser.add_argument("--difficulty", choices=("easy", "crema"), default="easy",
                        help="the generated corpus: easy (fast, default) or crema (CREMA-D-like, 480x360@30 fps, "
                             "both modalities carry arousal and valence; make-corpus --difficulty crema)")


def run(args: argparse.Namespace) -> int:
    run_demo(args.out, actors=args.actors, clips_per_actor=args.clips_per_actor, epochs=args.epochs,
             seed=args.seed, bench_seconds=args.bench_seconds, force=args.force, workers=args.workers,
             difficulty=args.difficulty)
    return 0
