"""Markdown tables of today's model's ablations (README "Does the ladder help?"), read from the
`ablate` summaries in this folder, so the README's figures are copied by code, not by hand.

    .venv/bin/python benchmarks/results/issue11/summary_table.py > table.md    # edge_ladder.ablate for the pairs
"""
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
# (file, its label, and what the label says: labelled fraction, epochs, with --unlabelled recordings,
# --epoch-steps (0: one pass over the larger pool));
# load() refuses a file whose recorded settings say otherwise, so no row is mislabelled
RUNS = [
    ("ablation-f0.02-face-grid.json", "2 % labels (14 clips; 3 of 27 runs at chance)",
     (0.02, 5, False, 0)),
    ("ablation-f0.05-face-grid.json", "5 % labels (36 clips)", (0.05, 5, False, 0)),
    ("ablation-f0.05-5seeds-face-grid.json", "5 %, seeds 3-4 added after seeing the row above", (0.05, 5, False, 0)),
    ("ablation-f0.05-robot-unlabelled.json", "5 % + the recordings of the 10 % row below (`--unlabelled`)",
     (0.05, 5, True, 0)),
    ("ablation-f0.05-robot-unlabelled-es43.json",
     "5 % + the same recordings, 5 epochs of 43 steps (`--epoch-steps 43`: the 5 % row's steps and grain)",
     (0.05, 5, True, 43)),
    ("ablation-f0.1-face-grid.json", "**10 % labels (72 clips)**: the issue's setting", (0.1, 5, False, 0)),
    ("ablation-f0.1-balanced.json",
     "**10 %, emotion-balanced labels (12 per emotion; today's select_labelled)**: the issue's setting; "
     "one none run at chance", (0.1, 5, False, 0)),
    ("ablation-f0.1-balanced-5seeds.json", "10 %, emotion-balanced, seeds 3-4 added after seeing the row above",
     (0.1, 5, False, 0)),
    ("ablation-f0.1-10ep-face-grid.json", "10 %, 10 epochs", (0.1, 10, False, 0)),
    ("ablation-f0.1-14ep-face-grid.json", "10 %, 14 epochs (574 steps: the next row's 580, without its recordings)",
     (0.1, 14, False, 0)),
    ("ablation-f0.1-robot-unlabelled.json",
     "10 % + 1,200 unlabelled recordings of 30 other actors (`--unlabelled`, 40 min)", (0.1, 5, True, 0)),
    ("ablation-f0.1-robot-unlabelled-es41-5ep.json",
     "10 % + the same recordings, 5 epochs of 41 steps (`--epoch-steps 41`: the 10 % row's steps and grain)",
     (0.1, 5, True, 41)),
    ("ablation-f0.1-robot-unlabelled-es41.json",
     "10 % + the same recordings, 14 epochs of 41 steps (`--epoch-steps 41`: the 14-epoch row's steps and "
     "selection grain)", (0.1, 14, True, 41)),
    ("ablation-f1-face-grid.json", "100 % labels (720 clips)", (1.0, 5, False, 0)),
]
EXPECTED = {name: expected for name, _, expected in RUNS}


def load(name) -> dict:
    """An ablate summary of this folder, complete and with the settings its label claims."""
    summary = json.loads((HERE / name).read_text())
    settings = summary["settings"]
    train = settings["train"]
    found = (settings["labelled_fractions"], train["epochs"], bool(train["unlabelled"]), train.get("epoch_steps", 0))
    fraction, epochs, recordings, epoch_steps = EXPECTED[name]
    if not summary["complete"] or found != ([fraction], epochs, recordings, epoch_steps):
        raise SystemExit(f"{name}: complete={summary['complete']}, (fractions, epochs, recordings, epoch_steps) = "
                         f"{found}; its label says ([{fraction}], {epochs}, {recordings}, {epoch_steps})")
    return summary


def points(x):
    return f"{100 * x:+.1f}" if x is not None else ""


def interval(stat, signed=True):
    lo, hi = stat["ci95"]
    if signed:
        return f"{points(stat['mean'])} [{points(lo)}, {points(hi)}]"
    return f"{100 * stat['mean']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


# (setting, baseline setting): the same mode, seed and fold in both, so the same labelled clips and test actors
ACROSS = [
    ("ablation-f0.05-robot-unlabelled.json", "ablation-f0.05-face-grid.json", "+ recordings - 5 % (5 epochs)"),
    ("ablation-f0.05-robot-unlabelled-es43.json", "ablation-f0.05-face-grid.json",
     "+ recordings - 5 % at the same steps and selection grain (5 x 43 steps, `--epoch-steps 43`)"),
    ("ablation-f0.1-balanced.json", "ablation-f0.1-face-grid.json",
     "10 %, 5 epochs: emotion-balanced labels - the earlier selection's"),
    ("ablation-f0.1-robot-unlabelled.json", "ablation-f0.1-face-grid.json", "+ recordings - 10 % (5 epochs)"),
    ("ablation-f0.1-robot-unlabelled.json", "ablation-f0.1-14ep-face-grid.json",
     "+ recordings - 10 % at the same step count (14 epochs)"),
    ("ablation-f0.1-robot-unlabelled-es41-5ep.json", "ablation-f0.1-face-grid.json",
     "+ recordings - 10 % at the same steps and selection grain (5 x 41 steps, `--epoch-steps 41`)"),
    ("ablation-f0.1-robot-unlabelled-es41.json", "ablation-f0.1-14ep-face-grid.json",
     "+ recordings - 10 % at the same steps and selection grain (14 x 41 steps, `--epoch-steps 41`)"),
    ("ablation-f0.1-robot-unlabelled-es41.json", "ablation-f0.1-robot-unlabelled.json",
     "both with the recordings: 14 epochs of 41 steps - 5 epochs of 116 (574 vs 580 steps)"),
]


def rows_of(name):
    summary = load(name)
    return {(r["ladder"], r["seed"], r["fold"]): r["test_macro_f1"] for r in summary["rows"]}


def across() -> None:
    from edge_ladder.ablate import paired_stats
    print()
    print("| comparison (same mode, seed and fold) | none | within | cross |")
    print("|---|---|---|---|")
    for name, base, label in ACROSS:
        if not (HERE / name).exists() or not (HERE / base).exists():
            print(f"(missing: {name} or {base})", file=sys.stderr)
            continue
        a, b = rows_of(name), rows_of(base)
        cells = []
        for mode in ("none", "within", "cross"):
            keys = sorted(k for k in a if k[0] == mode and k in b)
            p = paired_stats([a[k] - b[k] for k in keys])
            cells.append(f"{interval(p)} ({p['wins']}/{p['total']})")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    print("| setting | pairs | none | within | cross | within - none (wins) | cross - none (wins) | cross - within (wins) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label, _ in RUNS:
        if not (HERE / name).exists():
            print(f"(missing: {name})", file=sys.stderr)
            continue
        summary = load(name)
        modes = {m["ladder"]: m["macro_f1"] for m in summary["modes"]}
        pairs = {(p["ladder"], p["baseline"]): p["macro_f1"] for p in summary["paired_differences"]}
        cells = [interval(modes[m], signed=False) for m in ("none", "within", "cross")]
        for key in (("within", "none"), ("cross", "none"), ("cross", "within")):
            p = pairs[key]
            cells.append(f"{interval(p)} ({p['wins']}/{p['total']})")
        n = pairs[("within", "none")]["total"]
        print(f"| {label} | {n} | " + " | ".join(cells) + " |")
    across()


if __name__ == "__main__":
    main()
