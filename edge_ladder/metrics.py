"""Classification metrics, numpy only (used by train/evaluate and by the runtime and export).

classification_report(y_true, y_pred) ->
    {"macro_precision", "macro_recall", "macro_f1", "accuracy",
     "per_class": {label: {"precision", "recall", "f1", "support"}},
     "confusion": [[count of true row i predicted as column j]]}
Labels may be class indices (0..len(labels)-1) or the label strings themselves. A class with no
prediction (or no sample) gets precision (or recall) 0, and F1 0 when both are 0; macro averages
are unweighted means over all `labels`, as scikit-learn's zero_division=0.

chance_level(confusion) -> is the accuracy distinguishable from always answering the most frequent
class (binomial test; needs scipy, imported only then: train-time callers).
"""
from __future__ import annotations

import numpy as np

from . import EMOTIONS
from .errors import EdgeLadderError


def _as_indices(values, labels, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise EdgeLadderError(f"{name} must be a 1-D sequence of labels; got shape {values.shape}")
    if values.dtype.kind in "US" or values.dtype == object:
        lookup = {label: i for i, label in enumerate(labels)}
        unknown = sorted({str(v) for v in values if v not in lookup})
        if unknown:
            raise EdgeLadderError(f"{name} contains labels {unknown} that are not in {list(labels)}")
        return np.array([lookup[v] for v in values], dtype=np.int64)
    if values.size and (values.dtype.kind not in "iu" or values.min() < 0 or values.max() >= len(labels)):
        raise EdgeLadderError(f"{name} must hold class indices in [0, {len(labels)}) or label strings; "
                              f"got dtype {values.dtype}, range [{values.min()}, {values.max()}]")
    return values.astype(np.int64)


def confusion_matrix(y_true, y_pred, labels=EMOTIONS) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    true = _as_indices(y_true, labels, "y_true")
    pred = _as_indices(y_pred, labels, "y_pred")
    if true.shape != pred.shape:
        raise EdgeLadderError(f"y_true and y_pred must have the same length; got {true.size} and {pred.size}")
    matrix = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def classification_report(y_true, y_pred, labels=EMOTIONS) -> dict:
    labels = tuple(labels)
    matrix = confusion_matrix(y_true, y_pred, labels)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tp), where=denominator > 0)
    total = matrix.sum()
    return {
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "per_class": {label: {"precision": float(precision[i]), "recall": float(recall[i]),
                              "f1": float(f1[i]), "support": int(support[i])}
                      for i, label in enumerate(labels)},
        "confusion": matrix.tolist(),
    }


def format_report(report: dict, title: str = "") -> str:
    """Human-readable table of a classification_report."""
    lines = [title] if title else []
    lines.append(f"{'class':>8} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7}")
    for label, row in report["per_class"].items():
        lines.append(f"{label:>8} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f} {row['support']:7d}")
    lines.append(f"{'macro':>8} {report['macro_precision']:9.3f} {report['macro_recall']:7.3f} "
                 f"{report['macro_f1']:6.3f}   accuracy {report['accuracy']:.3f}")
    return "\n".join(lines)


CHANCE_ALPHA = 0.05


def chance_level(confusion, labels=EMOTIONS, alpha: float = CHANCE_ALPHA) -> dict:
    """Is a classifier distinguishable from always answering the most frequent class?

    One-sided exact binomial test (scipy) of the correct count against the majority class's share
    of the clips (the best a constant answer scores). `at_chance` is True when p > alpha or only
    one class is ever predicted (a model stuck on one class), None when there are no clips.
    """
    matrix = np.asarray(confusion, np.int64)
    total, correct = int(matrix.sum()), int(np.trace(matrix))
    predicted = [labels[i] for i in np.flatnonzero(matrix.sum(axis=0))]
    if total == 0:
        return {"clips": 0, "at_chance": None}
    from ._deps import require
    require("scipy")
    from scipy.stats import binomtest
    chance = float(matrix.sum(axis=1).max() / total)
    p_value = float(binomtest(correct, total, chance, alternative="greater").pvalue) if chance < 1 else 1.0
    return {"clips": total, "accuracy": correct / total, "chance_accuracy": chance, "p_value": p_value,
            "alpha": alpha, "classes_predicted": predicted,
            "at_chance": bool(p_value > alpha or len(predicted) <= 1)}


def chance_warning(check: dict, what: str) -> str:
    """'' or a one-line WARNING for chance_level's result on `what` (e.g. 'dev split')."""
    if not check.get("at_chance"):
        return ""
    stuck = (f"it predicts {check['classes_predicted'][0]} for every clip" if len(check["classes_predicted"]) == 1
             else f"it predicts {len(check['classes_predicted'])} classes")
    return (f"WARNING: the model is at chance level on the {what}: accuracy {check['accuracy']:.3f} over "
            f"{check['clips']} clips against {check['chance_accuracy']:.3f} for always answering the most frequent "
            f"class (binomial p = {check['p_value']:.2g}); {stuck}. It has not learned the task: train longer "
            f"(--epochs), check the labels and features, or look at RUN_DIR/metrics.json's history.")
