"""edge_ladder.metrics against hand-computed values."""
import numpy as np
import pytest

from edge_ladder import EMOTIONS
from edge_ladder.errors import EdgeLadderError
from edge_ladder.metrics import classification_report, confusion_matrix, format_report


def test_report_matches_hand_computed_values():
    # true: a a a b b c ; predicted: a a b b c c
    report = classification_report([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], labels=("a", "b", "c"))
    assert report["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert report["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report["per_class"]["c"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert report["macro_precision"] == pytest.approx(2 / 3)
    assert report["macro_recall"] == pytest.approx(13 / 18)
    assert report["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert set(report) == {"macro_precision", "macro_recall", "macro_f1", "accuracy", "per_class", "confusion"}


def test_absent_class_counts_zero_and_strings_work():
    # SAD never occurs and is never predicted; it still counts in the macro average (as sklearn, zero_division=0)
    y_true = ["ANG", "DIS", "FEA", "HAP", "NEU", "ANG"]
    y_pred = ["ANG", "DIS", "FEA", "HAP", "NEU", "DIS"]
    report = classification_report(y_true, y_pred)
    assert list(report["per_class"]) == list(EMOTIONS)
    assert report["per_class"]["SAD"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["per_class"]["DIS"]["precision"] == pytest.approx(0.5)
    assert report["per_class"]["ANG"]["recall"] == pytest.approx(0.5)
    f1 = [2 / 3, 2 / 3, 1, 1, 1, 0]
    assert report["macro_f1"] == pytest.approx(np.mean(f1))
    assert report["accuracy"] == pytest.approx(5 / 6)
    assert "macro" in format_report(report)


def test_random_labels_match_brute_force():
    rng = np.random.default_rng(7)
    y_true, y_pred = rng.integers(0, 6, 97), rng.integers(0, 6, 97)
    matrix = confusion_matrix(y_true, y_pred)
    assert matrix.sum() == 97
    for t in range(6):
        for p in range(6):
            assert matrix[t, p] == np.sum((y_true == t) & (y_pred == p))
    report = classification_report(y_true, y_pred)
    for i, label in enumerate(EMOTIONS):
        tp = np.sum((y_true == i) & (y_pred == i))
        assert report["per_class"][label]["precision"] == pytest.approx(tp / max(1, np.sum(y_pred == i)))
        assert report["per_class"][label]["recall"] == pytest.approx(tp / max(1, np.sum(y_true == i)))


def test_bad_labels_are_clear_errors():
    with pytest.raises(EdgeLadderError, match="class indices"):
        classification_report([0, 6], [0, 1])
    with pytest.raises(EdgeLadderError, match="not in"):
        classification_report(["ANG", "JOY"], ["ANG", "ANG"])
    with pytest.raises(EdgeLadderError, match="same length"):
        classification_report([0, 1, 2], [0, 1])


def test_numpy_modules_import_without_torch():
    """metrics and synthetic are numpy-only; train/evaluate import torch only when they run."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['torch'] = None\n"
            "import edge_ladder.metrics, edge_ladder.synthetic, edge_ladder.train, edge_ladder.evaluate\n"
            "from edge_ladder._deps import MissingDependencyError\n"
            "try:\n    edge_ladder.train.train(edge_ladder.train.TrainConfig(features_dir='x'))\n"
            "except MissingDependencyError as e:\n    print('needs', 'torch' in str(e))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "needs True"
