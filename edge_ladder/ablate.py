"""Does the ladder help? `edge-ladder ablate FEATURES_DIR --out DIR`: train every combination of
--ladder modes x --labelled-fraction x --seeds x --folds with the same other settings, then
compare the modes paired.

    DIR/runs/<ladder>_f<fraction>_s<seed>_k<fold>/   one `edge-ladder train` run each, its output
                                                      in train.log there (k<fold>: kprepared when
                                                      --folds is not given: splits.json as prepared)
    DIR/ablation.json   "rows": one per finished run (ladder, labelled_fraction, seed, fold,
                        test_macro_f1, test_accuracy, test_clips, dev_macro_f1, best_epoch,
                        seconds, run_dir); "modes": mean and 95 % CI per ladder x fraction;
                        "paired_differences": each mode against none and against within;
                        "settings": the grid and the training settings every run shares
    DIR/ablation.md     the same as tables (differences in points: x 100)
    DIR/ablation.png    test macro-F1 against labelled fraction per mode, with 95 % intervals

A pair is two runs with the same seed, fold and labelled fraction: the same labelled clips (the
labelled subset is fixed by the seed), the same test actors, the same initial weights. A paired
difference is mode - baseline over the pairs: mean, 95 % confidence interval (Student t with
pairs - 1 degrees of freedom, scipy.stats), wins / ties / losses. A difference whose interval
contains 0 is "no difference". Runs without a partner (the partner has not finished) are listed
as unpaired and left out of the statistic, never matched to another seed or fold.

Resumable: a run whose metrics.json records this ablation's settings is skipped; one with
last.pt and no metrics.json (interrupted) continues from its last finished epoch (train
--resume); a run directory holding other settings is refused unless --force retrains it. The
summary files are rewritten from every finished run of the grid after each run, so Ctrl-C loses
at most the epochs in progress. `--workers N` trains N runs at once in spawned processes with
cores // N torch threads each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from .argtypes import NON_NEGATIVE_INT, POSITIVE_INT, TORCH_DEVICES, Range, torch_device
from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_png
from .errors import EdgeLadderError
from .train import LABELLED_FRACTION, SELECTIONS

LADDERS = ("none", "within", "cross")
BASELINES = ("none", "within")           # the modes every other mode is compared against
SEED = NON_NEGATIVE_INT
FOLD = NON_NEGATIVE_INT
PREPARED_FOLD = -1                       # TrainConfig.fold: splits.json as prepared
CI_LEVEL = 0.95
TIE = 1e-12                              # |difference| at most this is a tie (same test set: ties are exact)

# TrainConfig fields set per run by the grid, never by the shared settings
PER_RUN = ("features_dir", "out_dir", "ladder", "labelled_fraction", "seed", "fold", "resume", "force", "progress")
# TrainConfig fields that do not change what a run learns: not compared with a run found on disk
NOT_SETTINGS = ("features_dir", "out_dir", "progress", "resume", "force", "device", "stop_after_epoch",
                "eval_batch_size")


class Key(NamedTuple):
    """One run of the grid."""
    ladder: str
    labelled_fraction: float
    seed: int
    fold: int                            # PREPARED_FOLD (-1): splits.json as prepared


def run_name(key: Key) -> str:
    """'within_f0.1_s2_k3' (kprepared for splits.json's own fold)."""
    fold = "prepared" if key.fold == PREPARED_FOLD else str(key.fold)
    return f"{key.ladder}_f{key.labelled_fraction:g}_s{key.seed}_k{fold}"


# ---------------------------------------------------------------------------------------------
# the grid


class CommaList:
    """argparse `type=` of a comma-separated list ('0.05,0.1,1'): a tuple of distinct values, each
    parsed by `item` (a Range) or one of `words`. Empty lists, empty items and repeats are errors."""

    def __init__(self, what: str, item: Range | None = None, words: tuple = ()):
        self.what, self.item, self.words = what, item, words
        self.__name__ = "list"

    def __call__(self, text: str) -> tuple:
        parts = [part.strip() for part in text.split(",")]
        if not text.strip() or "" in parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {self.what}; got {text!r} "
                                             f"(an empty {'list' if not text.strip() else 'item'})")
        values = []
        for part in parts:
            if self.words:
                if part not in self.words:
                    raise argparse.ArgumentTypeError(f"expected {_one_of(self.words)}; got {part!r} in {text!r}")
                values.append(part)
                continue
            try:
                values.append(self.item(part))
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(f"{error} in {text!r}") from None
        check_distinct("", values, text)
        return tuple(values)


def _one_of(words) -> str:
    return " or ".join(words) if len(words) < 3 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_distinct(flag: str, values, text=None) -> None:
    repeated = sorted({v for v in values if list(values).count(v) > 1}, key=str)
    if repeated:
        given = f" in {text!r}" if text is not None else f" ({', '.join(map(str, values))})"
        message = (f"{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in repeated)} given more than "
                   f"once{given}: each value is one set of runs, list it once")
        if flag:
            raise EdgeLadderError(f"{flag}: {message}")
        raise argparse.ArgumentTypeError(message)


def _check_list(flag: str, values, check) -> tuple:
    values = tuple(values)
    if not values:
        raise EdgeLadderError(f"{flag}: expected at least one value; got an empty list")
    for value in values:
        check(value)
    check_distinct(flag, values)
    return values


@dataclass
class AblationConfig:
    features_dir: str = ""
    out_dir: str = "ablation"
    ladders: tuple = LADDERS
    labelled_fractions: tuple = (0.05, 0.1, 1.0)   # issue 11's grid: scarce labels, then every clip labelled
    seeds: tuple = (0, 1, 2)
    folds: tuple = (PREPARED_FOLD,)               # actor folds of splits.json's k; -1 (alone): as prepared
    train: dict = field(default_factory=dict)     # TrainConfig settings every run shares (epochs, model_size, ...)
    workers: int = 1                              # runs at once, each in its own process
    force: bool = False                           # retrain run directories that hold other settings

    def __post_init__(self):
        def ladder(value):
            if value not in LADDERS:
                raise EdgeLadderError(f"--ladder: expected {_one_of(LADDERS)}; got {value!r}")
        self.ladders = _check_list("--ladder", self.ladders, ladder)
        self.labelled_fractions = _check_list(
            "--labelled-fraction", (float(x) for x in self.labelled_fractions),
            lambda x: LABELLED_FRACTION.check("--labelled-fraction", x))
        self.seeds = _check_list("--seeds", self.seeds, lambda x: SEED.check("--seeds", x))
        self.folds = _check_list("--folds", self.folds,
                                 lambda x: None if x == PREPARED_FOLD else FOLD.check("--folds", x))
        if PREPARED_FOLD in self.folds and len(self.folds) > 1:
            raise EdgeLadderError(f"--folds: {PREPARED_FOLD} (splits.json as prepared) cannot be mixed with actor "
                                  f"folds; got {self.folds}")
        POSITIVE_INT.check("--workers", self.workers)
        per_run = sorted(set(self.train) & set(PER_RUN))
        if per_run:
            raise EdgeLadderError(f"ablate sets {', '.join(per_run)} per run (the grid and --out); remove "
                                  f"{'it' if len(per_run) == 1 else 'them'} from the shared training settings")
        from .train import TrainConfig
        unknown = sorted(set(self.train) - {f for f in TrainConfig.__dataclass_fields__})
        if unknown:
            raise EdgeLadderError(f"unknown training settings {unknown}: see `edge-ladder train --help`")
        if "unlabelled" in self.train:   # absolute: the runs' records and the resume check compare them
            self.train["unlabelled"] = tuple(str(Path(p).resolve()) for p in self.train["unlabelled"])
        self.features_dir = str(Path(self.features_dir).resolve())
        TrainConfig(**self.train)        # every shared setting checked once, before any run


def plan(config: AblationConfig) -> list[Key]:
    """Every run of the grid, seeds outermost and modes innermost, so complete pairs finish early."""
    return [Key(ladder, fraction, seed, fold) for seed in config.seeds for fold in config.folds
            for fraction in config.labelled_fractions for ladder in config.ladders]


def run_config(config: AblationConfig, key: Key):
    """The TrainConfig of one run."""
    from .train import TrainConfig
    return TrainConfig(**{**config.train, "features_dir": config.features_dir,
                          "out_dir": str(Path(config.out_dir) / "runs" / run_name(key)), "ladder": key.ladder,
                          "labelled_fraction": key.labelled_fraction, "seed": key.seed, "fold": key.fold,
                          "progress": False})


def check_features(config: AblationConfig) -> dict:
    """The features exist, have splits and enough actor folds for --folds; the --unlabelled
    directories exist -> splits.json."""
    from .features import read_manifest, read_splits
    read_manifest(Path(config.features_dir))
    splits = read_splits(Path(config.features_dir))
    folds = [f for f in config.folds if f != PREPARED_FOLD]
    if folds and ("k" not in splits or "seed" not in splits):
        raise EdgeLadderError(f"--folds: {Path(config.features_dir) / 'splits.json'} does not record the folds' k "
                              f"and seed. Re-run prepare (it writes them), or drop --folds to use the split as "
                              f"prepared.")
    k = int(splits.get("k", 0))
    outside = [f for f in folds if not 0 <= f < k]
    if outside:
        raise EdgeLadderError(
            f"--folds {','.join(map(str, config.folds))}: {config.features_dir} was prepared with k = {k} actor "
            f"folds (splits.json), so a fold is one of 0..{k - 1}; got {','.join(map(str, outside))}. Give folds "
            f"below {k}, or prepare the features with more folds (prepare --folds K, make-features --k K).")
    for directory in config.train.get("unlabelled", ()):
        read_manifest(Path(directory))
    return splits


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def torch_threads(workers: int) -> int:
    """Torch threads per worker so that workers x threads <= cores."""
    available = cores()
    if workers > available:
        raise EdgeLadderError(f"--workers {workers}: this machine gives the process {available} CPU core(s), and "
                              f"each run needs at least one; pass --workers {available} or fewer.")
    return max(1, available // workers)


# ---------------------------------------------------------------------------------------------
# runs on disk


def _settings(train_config) -> dict:
    """What a run learns from: asdict(TrainConfig) less NOT_SETTINGS, tuples as JSON lists."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(train_config).items()
            if k not in NOT_SETTINGS}


def settings_difference(train_config, recorded: dict, recorded_features: dict | None, features: dict) -> list[str]:
    """How a run on disk (its recorded train_config and features identity) differs from the run
    `train_config` asks for: [] when it is the same run. A setting the record lacks (an older
    edge-ladder) counts as that version's default, TrainConfig's."""
    from .train import TrainConfig
    defaults = _settings(TrainConfig())
    differences = [f"{key} {recorded.get(key, defaults.get(key))!r} (this ablation: {value!r})"
                   for key, value in _settings(train_config).items() if recorded.get(key, defaults.get(key)) != value]
    for key in ("manifest_sha256", "splits_sha256"):
        if (recorded_features or {}).get(key) != features[key]:
            differences.append(f"features {key.replace('_sha256', '.json')} sha256 "
                               f"{str((recorded_features or {}).get(key))[:12]} (this ablation: {features[key][:12]})")
    return differences


def selection_difference(train_config, recorded) -> list[str]:
    """[] when a run's labelled clips were chosen as select_labelled chooses them now (or every
    clip is labelled); else what differs (an earlier edge-ladder stratified otherwise)."""
    from .train import STRATIFIED_BY
    if train_config.labelled_fraction >= 1 or recorded == STRATIFIED_BY:
        return []
    return [f"labelled clips stratified by {' and '.join(recorded or ['emotion', 'actor'])} (this ablation: "
            f"by {', then '.join(STRATIFIED_BY)})"]


def run_status(train_config, features: dict) -> tuple[str, list[str]]:
    """(status, differences) of a run directory: "finished" (metrics.json with these settings),
    "resume" (last.pt with these settings, no metrics.json), "restart" (files of a run that saved
    no epoch), "new", or "other" (a run with other settings: `differences` say which)."""
    run_dir = Path(train_config.out_dir)
    metrics_path, last_path = run_dir / "metrics.json", run_dir / "last.pt"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        differences = settings_difference(train_config, metrics.get("train_config", {}),
                                          metrics.get("data", {}).get("features"), features)
        differences += selection_difference(train_config, metrics.get("labelled", {}).get("stratified_by"))
        return ("other" if differences else "finished"), differences
    if last_path.exists():
        from ._deps import require
        state = require("torch").load(last_path, map_location="cpu", weights_only=True)
        differences = settings_difference(train_config, state.get("train_config", {}), state.get("features"),
                                          features)
        differences += selection_difference(train_config, state.get("stratified_by"))
        return ("other" if differences else "resume"), differences
    from .train import RUN_FILES
    if any((run_dir / name).exists() for name in RUN_FILES):
        return "restart", []
    return "new", []


def read_row(key: Key, train_config, out_dir: Path) -> dict:
    """The ablation.json row of a finished run, from its metrics.json."""
    run_dir = Path(train_config.out_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "test" not in metrics:
        raise EdgeLadderError(f"{run_dir / 'metrics.json'} has no test split results: the features' splits.json "
                              f"has no test actors. Prepare the features with actor folds (prepare --folds K).")
    from .metrics import chance_level
    test, labelled = metrics["test"], metrics.get("labelled", {})
    return {**key._asdict(), "test_macro_f1": float(test["macro_f1"]), "test_accuracy": float(test["accuracy"]),
            "test_clips": int(sum(map(sum, test["confusion"]))),
            "test_at_chance": chance_level(test["confusion"])["at_chance"],    # binomial test, metrics.chance_level
            "dev_macro_f1": float(metrics["dev"]["macro_f1"]) if "dev" in metrics else None,
            "labelled_clips": labelled.get("train", {}).get("count"),
            "unlabelled_clips": labelled.get("unlabelled", {}).get("total"),
            "best_epoch": metrics.get("best_epoch"), "seconds": float(metrics.get("train_seconds", 0.0)),
            "run_dir": os.path.relpath(run_dir, out_dir)}


# ---------------------------------------------------------------------------------------------
# workers


def _init_worker(threads: int) -> None:
    """Spawned worker: Ctrl-C goes to the main process, which terminates the pool (every file a
    run writes is atomic, so a killed run keeps its last finished epoch); threads before torch."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def _train_one(task: dict) -> dict:
    """One run, its output appended to RUN_DIR/train.log -> {"name", "wall_seconds"} (+ "error":
    the exception's text when it failed; the traceback is in the log)."""
    import contextlib
    import traceback
    from . import train as train_module
    config = train_module.TrainConfig(**task["config"])
    run_dir = Path(config.out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if task.get("threads"):
        from ._deps import require
        require("torch").set_num_threads(task["threads"])
    started = time.perf_counter()
    result = {"name": task["name"]}
    with open(run_dir / "train.log", "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"--- edge-ladder ablate, {time.strftime('%Y-%m-%d %H:%M:%S')}: {task['status']} {task['name']}",
              flush=True)
        try:
            train_module.train(config)
        except Exception as error:     # the main process stops the ablation and shows this
            traceback.print_exc(file=log)
            result["error"] = str(error) if isinstance(error, EdgeLadderError) else f"{type(error).__name__}: {error}"
    result["wall_seconds"] = time.perf_counter() - started
    return result


def _results(tasks: list[dict], workers: int, threads: int):
    """Yield _train_one's results as runs finish: in this process for one worker, else in a pool
    of spawned processes (spawn, not fork: torch's threads do not survive a fork)."""
    if workers == 1:
        for task in tasks:
            yield _train_one(task)
        return
    import multiprocessing
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(threads,))
    try:
        yield from pool.imap_unordered(_train_one, [{**task, "threads": threads} for task in tasks])
        pool.close()
    except BaseException:              # Ctrl-C, a failed run, or the caller closing this generator
        pool.terminate()
        raise
    finally:
        pool.join()


# ---------------------------------------------------------------------------------------------
# statistics


def t_quantile(dof: int, level: float = CI_LEVEL) -> float:
    from ._deps import require
    require("scipy")
    from scipy.stats import t
    return float(t.ppf(0.5 + level / 2, dof))


def describe(values) -> dict:
    """{"n", "mean", "std", "ci95": [low, high] (Student t; None under 2 values)} of a list of numbers."""
    import numpy as np
    values = np.asarray(list(values), np.float64)
    n = int(values.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95": None}
    mean = float(values.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = float(values.std(ddof=1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def verdict(ci) -> str:
    """'better' / 'worse' when the interval excludes 0, 'no difference' when it contains it."""
    if ci is None:
        return "too few pairs"
    low, high = ci
    return "better" if low > 0 else "worse" if high < 0 else "no difference"


def paired_stats(differences) -> dict:
    """Statistics of paired differences (mode - baseline): describe() + wins / ties / losses /
    total and the verdict of the 95 % interval."""
    differences = [float(d) for d in differences]
    stats = describe(differences)
    wins = sum(d > TIE for d in differences)
    ties = sum(abs(d) <= TIE for d in differences)
    return {**stats, "wins": wins, "ties": ties, "losses": len(differences) - wins - ties,
            "total": len(differences), "verdict": verdict(stats["ci95"])}


def check_unique(rows) -> None:
    """Two rows of one (ladder, labelled_fraction, seed, fold) cannot be told apart in a pair."""
    seen = set()
    for row in rows:
        key = Key(row["ladder"], float(row["labelled_fraction"]), int(row["seed"]), int(row["fold"]))
        if key in seen:
            raise EdgeLadderError(f"two results for {run_name(key)}: each ladder, labelled fraction, seed and fold "
                                  f"must appear once to be paired")
        seen.add(key)


def paired_difference(rows, ladder: str, baseline: str, fraction: float,
                      metrics=("macro_f1", "accuracy")) -> dict:
    """`ladder` - `baseline` at one labelled fraction over the pairs (same seed, same fold).
    Rows of either mode without a partner are listed under "unpaired" and not used."""
    check_unique(rows)
    def by_pair(mode):
        return {(int(r["seed"]), int(r["fold"])): r for r in rows
                if r["ladder"] == mode and float(r["labelled_fraction"]) == float(fraction)}
    mode_rows, base_rows = by_pair(ladder), by_pair(baseline)
    pairs = sorted(set(mode_rows) & set(base_rows))
    unpaired = [{"ladder": mode, "seed": seed, "fold": fold}
                for mode, mine, other in ((ladder, mode_rows, base_rows), (baseline, base_rows, mode_rows))
                for seed, fold in sorted(set(mine) - set(other))]
    entry = {"ladder": ladder, "baseline": baseline, "labelled_fraction": float(fraction), "pairs": len(pairs),
             "unpaired": unpaired}
    for metric in metrics:
        column = f"test_{metric}"
        entry[metric] = paired_stats([mode_rows[p][column] - base_rows[p][column] for p in pairs])
    return entry


def summarise(rows, ladders, fractions) -> dict:
    """{"modes": per ladder x fraction statistics of both metrics, "paired_differences": every
    other mode against none and against within (those in `ladders`), per fraction}."""
    check_unique(rows)
    modes = []
    for fraction in fractions:
        for ladder in ladders:
            mine = [r for r in rows if r["ladder"] == ladder and float(r["labelled_fraction"]) == float(fraction)]
            counts = [r["labelled_clips"] for r in mine if r.get("labelled_clips") is not None]
            modes.append({"ladder": ladder, "labelled_fraction": float(fraction), "runs": len(mine),
                          "labelled_clips": [min(counts), max(counts)] if counts else None,
                          "macro_f1": describe(r["test_macro_f1"] for r in mine),
                          "accuracy": describe(r["test_accuracy"] for r in mine)})
    paired = [paired_difference(rows, ladder, baseline, fraction)
              for baseline in BASELINES if baseline in ladders
              for ladder in ladders if ladder != baseline and not (baseline == "within" and ladder == "none")
              for fraction in fractions]
    return {"modes": modes, "paired_differences": paired}


# ---------------------------------------------------------------------------------------------
# the summary files


def _points(value, signed: bool = False) -> str:
    return "-" if value is None else f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _with_ci(stats: dict, signed: bool = False) -> str:
    if stats["mean"] is None:
        return "-"
    if stats["ci95"] is None:
        return f"{_points(stats['mean'], signed)} (1 run)"
    low, high = stats["ci95"]
    return f"{_points(stats['mean'], signed)} [{_points(low, signed)}, {_points(high, signed)}]"


def _setting(value) -> str:
    if isinstance(value, list):
        return " ".join(f"{x:g}" if isinstance(x, float) else f"`{x}`" for x in value) if value else "none"
    return str(value)


def markdown(summary: dict) -> str:
    settings = summary["settings"]
    train = settings["train"]
    lines = ["# Ablation: does the ladder help?", "",
             f"Features `{settings['features_dir']}`; {summary['runs_finished']} of {summary['runs_planned']} runs "
             f"finished" + ("." if summary["complete"] else " (incomplete: re-run the same `edge-ladder ablate` "
                                                           "command to continue)."),
             f"Grid: ladder {', '.join(settings['ladders'])}; labelled fraction "
             f"{', '.join(f'{f:g}' for f in settings['labelled_fractions'])}; seeds "
             f"{', '.join(map(str, settings['seeds']))}; folds "
             f"{', '.join('as prepared' if f == PREPARED_FOLD else str(f) for f in settings['folds'])}.",
             "Shared training settings: " + ", ".join(
                 f"{k} {_setting(v)}" for k, v in train.items()
                 if k in ("epochs", "epoch_steps", "model_size", "batch_size", "lambdas", "cross_lambda", "select",
                          "unlabelled", "modalities")) + ".",
             "", "## Test macro-F1 and accuracy", "",
             "Mean over seeds x folds [95 % CI, Student t], in points (x 100).", "",
             "| labelled fraction | labelled clips | ladder | runs | macro-F1 | accuracy |",
             "|---|---|---|---|---|---|"]
    for mode in summary["modes"]:
        counts = mode["labelled_clips"]
        counts = "-" if counts is None else str(counts[0]) if counts[0] == counts[1] else f"{counts[0]}-{counts[1]}"
        lines.append(f"| {mode['labelled_fraction']:g} | {counts} | {mode['ladder']} | {mode['runs']} | "
                     f"{_with_ci(mode['macro_f1'])} | {_with_ci(mode['accuracy'])} |")
    lines += ["", "## Paired differences", "",
              "A pair is two runs with the same seed, fold and labelled fraction (the same labelled clips and test "
              "actors). Difference = ladder - baseline in points, mean over the pairs [95 % CI, Student t over "
              "pairs, which counts the pairs of one fold, on the same test actors, as independent]; "
              "wins/ties/total count the pairs where the ladder mode scored higher/equal. A difference whose CI "
              "includes 0 is \"no difference\".", "",
              "| comparison | labelled fraction | pairs | macro-F1 difference | wins/ties/total | "
              "accuracy difference | wins/ties/total | macro-F1 verdict |", "|---|---|---|---|---|---|---|---|"]
    for entry in summary["paired_differences"]:
        f1, acc = entry["macro_f1"], entry["accuracy"]
        lines.append(f"| {entry['ladder']} - {entry['baseline']} | {entry['labelled_fraction']:g} | {entry['pairs']} | "
                     f"{_with_ci(f1, signed=True)} | {f1['wins']}/{f1['ties']}/{f1['total']} | "
                     f"{_with_ci(acc, signed=True)} | {acc['wins']}/{acc['ties']}/{acc['total']} | "
                     f"{f1['verdict'] if f1['total'] else 'no pairs yet'} |")
    unpaired = sum(len(e["unpaired"]) for e in summary["paired_differences"])
    if unpaired:
        lines += ["", f"{unpaired} run(s) have no finished partner yet and are left out of the pairs "
                      f"(ablation.json: paired_differences[].unpaired)."]
    at_chance = [r for r in summary["rows"] if r.get("test_at_chance")]
    if at_chance:
        lines += ["", f"WARNING: {len(at_chance)} of {len(summary['rows'])} runs are at chance level on the test split "
                      f"(binomial test against always answering the most frequent class; rows[].test_at_chance): "
                      f"they have not learned the task, so their differences say nothing about the ladder. Train "
                      f"longer (--epochs) or check the features."]
    clips = [r["test_clips"] for r in summary["rows"]]
    if clips:
        n = sum(clips) / len(clips)
        span = f"{min(clips)}" if min(clips) == max(clips) else f"{min(clips)}-{max(clips)}"
        lines += ["", f"Test set: {span} clips per run; one run's accuracy near 0.5 has a "
                      f"standard error of about {100 * math.sqrt(0.25 / n):.1f} points (binomial), which is why the "
                      f"comparisons are paired over seeds and folds."]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> Path:
    """Test macro-F1 against labelled fraction, one line per mode: mean and 95 % CI, each run a dot."""
    from ._deps import require
    matplotlib = require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    settings = summary["settings"]
    ladders, fractions = settings["ladders"], settings["labelled_fractions"]
    log_x = len(fractions) > 1 and max(fractions) / min(fractions) >= 4
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, ladder in enumerate(ladders):
        shift = 1 + 0.05 * (i - (len(ladders) - 1) / 2)     # side by side, not on top of each other
        offset = (lambda x: x * shift) if log_x else (lambda x: x + (shift - 1) * 0.2)
        modes = [m for m in summary["modes"] if m["ladder"] == ladder and m["macro_f1"]["mean"] is not None]
        xs = [offset(m["labelled_fraction"]) for m in modes]
        means = [m["macro_f1"]["mean"] for m in modes]
        low = [m["macro_f1"]["mean"] - (m["macro_f1"]["ci95"] or [m["macro_f1"]["mean"]])[0] for m in modes]
        high = [(m["macro_f1"]["ci95"] or [0, m["macro_f1"]["mean"]])[1] - m["macro_f1"]["mean"] for m in modes]
        line = ax.errorbar(xs, means, yerr=[low, high], marker="o", capsize=4, label=ladder)
        runs = [r for r in summary["rows"] if r["ladder"] == ladder]
        ax.scatter([offset(r["labelled_fraction"]) for r in runs], [r["test_macro_f1"] for r in runs],
                   s=10, alpha=0.35, color=line[0].get_color())
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("labelled fraction of the train clips")
    ax.set_ylabel("test macro-F1")
    ax.set_title(f"{summary['runs_finished']} of {summary['runs_planned']} runs; mean and 95 % CI over "
                 f"seeds x folds", fontsize=10)
    ax.grid(alpha=0.3)
    if summary["rows"]:
        ax.legend(title="ladder")
    fig.tight_layout()
    return atomic_write_png(path, fig, dpi=110)


def write_summary(config: AblationConfig, keys: list[Key], features: dict) -> dict:
    """ablation.json, .md and .png from every finished run of the grid -> the summary."""
    out_dir = Path(config.out_dir)
    rows, complete = [], True
    for key in keys:
        train_config = run_config(config, key)
        if run_status(train_config, features)[0] == "finished":
            rows.append(read_row(key, train_config, out_dir))
        else:
            complete = False
    shared = {k: v for k, v in _settings(run_config(config, keys[0])).items() if k not in PER_RUN}
    summary = {
        "settings": {"features_dir": config.features_dir, "features": features, "ladders": list(config.ladders),
                     "labelled_fractions": list(config.labelled_fractions), "seeds": list(config.seeds),
                     "folds": list(config.folds), "train": shared, "ci_level": CI_LEVEL,
                     "pairs": "same seed, fold and labelled fraction; difference = ladder - baseline"},
        "runs_planned": len(keys), "runs_finished": len(rows), "complete": complete, "rows": rows,
        **summarise(rows, config.ladders, config.labelled_fractions),
    }
    atomic_write_json(out_dir / "ablation.json", summary)
    atomic_write_bytes(out_dir / "ablation.md", markdown(summary).encode())
    plot(summary, out_dir / "ablation.png")
    return summary


# ---------------------------------------------------------------------------------------------
# the ablation


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 \
        else f"{seconds / 3600:.1f} h"


def ablate(config: AblationConfig) -> dict:
    """Train every run of the grid that has not finished, then write the summary files -> the
    summary (ablation.json's content). Ctrl-C writes the summary of the finished runs and
    re-raises KeyboardInterrupt."""
    from .train import features_identity
    out_dir = Path(config.out_dir)
    check_features(config)
    threads = torch_threads(config.workers)
    features = features_identity(Path(config.features_dir))
    keys = plan(config)
    tasks, others = [], []
    for key in keys:
        train_config = run_config(config, key)
        status, differences = run_status(train_config, features)
        if status == "other":
            if not config.force:
                others.append(f"{run_name(key)}: {'; '.join(differences[:3])}")
                continue
            status = "retrain"
        if status != "finished":
            train_config = replace(train_config, resume=status == "resume", force=status in ("restart", "retrain"))
            tasks.append({"name": run_name(key), "key": key, "status": status, "config": asdict(train_config)})
    if others:
        raise EdgeLadderError(
            f"{len(others)} run director{'y' if len(others) == 1 else 'ies'} in {out_dir / 'runs'} "
            f"{'holds a run' if len(others) == 1 else 'hold runs'} with other settings than this ablation "
            f"({others[0]}{'; ...' if len(others) > 1 else ''}): re-run with the settings they were made with, "
            f"pass --force to retrain them, or use a new --out.")
    counts = {s: sum(t["status"] == s for t in tasks) for s in ("resume", "restart", "retrain", "new")}
    workers = max(1, min(config.workers, len(tasks)))
    threads = max(1, cores() // workers)      # fewer runs left than --workers: more threads each
    print(f"ablate: {len(keys)} runs ({len(config.ladders)} ladder modes x {len(config.labelled_fractions)} labelled "
          f"fractions x {len(config.seeds)} seeds x {len(config.folds)} folds): {len(keys) - len(tasks)} finished, "
          f"{counts['resume']} to resume, {counts['new'] + counts['restart'] + counts['retrain']} to train"
          + (f"; {workers} workers x {threads} torch threads" if workers > 1 else "")
          + f"; logs in {out_dir / 'runs'}/*/train.log", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = write_summary(config, keys, features)
    started, done = time.perf_counter(), 0
    results = _results(tasks, workers, threads)
    try:
        by_name = {t["name"]: t for t in tasks}
        for result in results:
            task = by_name[result["name"]]
            log = Path(task["config"]["out_dir"]) / "train.log"
            if "error" in result:
                raise EdgeLadderError(f"run {result['name']} failed: {result['error']} (traceback in {log}). The "
                                      f"finished runs are kept, and runs in progress their last finished epoch: fix "
                                      f"the cause and re-run the same command to continue.")
            done += 1
            row = read_row(task["key"], run_config(config, task["key"]), out_dir)
            left = len(tasks) - done
            eta = (time.perf_counter() - started) / done * left
            key = task["key"]
            print(f"[{len(keys) - len(tasks) + done}/{len(keys)}] {key.ladder:6s} fraction {key.labelled_fraction:g}  "
                  f"seed {key.seed}  fold {'prepared' if key.fold == PREPARED_FOLD else key.fold}: test macro-F1 "
                  f"{row['test_macro_f1']:.3f} (accuracy {row['test_accuracy']:.3f}"
                  f"{', at chance' if row['test_at_chance'] else ''}) in "
                  f"{_duration(result['wall_seconds'])}; {left} left" + (f", ETA {_duration(eta)}" if left else ""),
                  flush=True)
            summary = write_summary(config, keys, features)
    except KeyboardInterrupt:
        results.close()
        write_summary(config, keys, features)
        raise
    finally:
        results.close()
    return summary


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .train import BATCH_SIZE, EPOCH_STEPS, EPOCHS, LAMBDA, TrainConfig
    defaults, grid = TrainConfig(), AblationConfig.__dataclass_fields__
    parser.add_argument("features_dir", metavar="FEATURES_DIR", help="prepared features with actor folds")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="ablation directory: runs/, ablation.json, ablation.md, ablation.png")
    parser.add_argument("--ladder", type=CommaList("ladder modes", words=LADDERS), default=LADDERS, metavar="MODES",
                        help=f"comma-separated ladder modes (default {','.join(LADDERS)})")
    parser.add_argument("--labelled-fraction", type=CommaList("fractions in (0, 1]", LABELLED_FRACTION),
                        default=grid["labelled_fractions"].default, metavar="FRACTIONS",
                        help="comma-separated fractions of the train clips that keep their labels, in (0, 1] "
                             "(default 0.05,0.1,1)")
    parser.add_argument("--seeds", type=CommaList("seeds >= 0", SEED), default=grid["seeds"].default,
                        help="comma-separated seeds; a seed fixes the labelled subset and the initial weights "
                             "(default 0,1,2)")
    parser.add_argument("--folds", type=CommaList("actor folds >= 0", FOLD), default=None,
                        help="comma-separated actor folds of splits.json's k (test fold; the next is dev); "
                             "default: the split as prepared")
    parser.add_argument("--epochs", type=EPOCHS, default=defaults.epochs, metavar="N",
                        help="epochs per run (default %(default)s)")
    parser.add_argument("--epoch-steps", type=EPOCH_STEPS, default=defaults.epoch_steps, metavar="N",
                        help="steps per epoch, as train --epoch-steps (default 0: one pass over the larger pool)")
    parser.add_argument("--model-size", choices=("tiny", "small"), default=defaults.model_size,
                        help="(default %(default)s)")
    parser.add_argument("--batch-size", type=BATCH_SIZE, default=defaults.batch_size,
                        help="clips per step, >= 2 (default %(default)s)")
    parser.add_argument("--lambdas", type=LAMBDA, nargs="+", default=list(defaults.lambdas),
                        help="denoising weights, as train --lambdas (default "
                             f"{' '.join(f'{x:g}' for x in defaults.lambdas)})")
    parser.add_argument("--cross-lambda", type=LAMBDA, default=defaults.cross_lambda,
                        help="weight of the cross-modal costs (--ladder cross), as train (default %(default)s)")
    parser.add_argument("--select", choices=SELECTIONS, default=defaults.select,
                        help="checkpoint selection, as train --select (default %(default)s)")
    parser.add_argument("--unlabelled", action="append", default=[], metavar="FEATURES_DIR",
                        help="features whose clips every run also trains on without labels (repeatable)")
    parser.add_argument("--device", type=torch_device, default=defaults.device, help=TORCH_DEVICES)
    parser.add_argument("--workers", type=POSITIVE_INT, default=1, metavar="N",
                        help="runs at once, each in its own process with cores / N torch threads (default 1)")
    parser.add_argument("--force", action="store_true",
                        help="retrain run directories that hold runs with other settings (else refused)")


def config_from_args(args: argparse.Namespace) -> AblationConfig:
    train = {"epochs": args.epochs, "epoch_steps": args.epoch_steps, "model_size": args.model_size,
             "batch_size": args.batch_size, "lambdas": tuple(args.lambdas), "cross_lambda": args.cross_lambda, "device": args.device,
             "select": args.select, "unlabelled": tuple(args.unlabelled)}
    return AblationConfig(features_dir=args.features_dir, out_dir=args.out, ladders=args.ladder,
                          labelled_fractions=args.labelled_fraction, seeds=args.seeds,
                          folds=args.folds or (PREPARED_FOLD,), train=train, workers=args.workers, force=args.force)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out_dir = Path(config.out_dir)
    try:
        summary = ablate(config)
    except KeyboardInterrupt:
        done = json.loads((out_dir / "ablation.json").read_text()) if (out_dir / "ablation.json").exists() else {}
        print(f"edge-ladder ablate: interrupted; {done.get('runs_finished', 0)} of {done.get('runs_planned', '?')} "
              f"runs finished ({out_dir / 'ablation.md'} summarises them; a run in progress keeps its last finished "
              f"epoch). Re-run the same command to continue: finished runs are skipped, interrupted ones resume.",
              file=sys.stderr)
        return 130
    for entry in summary["paired_differences"]:
        f1 = entry["macro_f1"]
        if f1["total"]:
            print(f"{entry['ladder']} - {entry['baseline']} at fraction {entry['labelled_fraction']:g}: macro-F1 "
                  f"{_with_ci(f1, signed=True)} points, {f1['wins']}/{f1['total']} wins: {f1['verdict']}")
    print(f"wrote {out_dir / 'ablation.json'}, {out_dir / 'ablation.md'} and {out_dir / 'ablation.png'}")
    return 0
