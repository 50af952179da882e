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


def test_chance_level_is_a_binomial_test_against_the_majority_class():
    from edge_ladder.metrics import chance_level, chance_warning
    stuck = np.zeros((6, 6), int)
    stuck[:, 2] = 8                                              # every clip answered FEA
    check = chance_level(stuck)
    assert check["at_chance"] is True and check["classes_predicted"] == ["FEA"] and check["accuracy"] == 1 / 6
    assert chance_warning(check, "dev split").startswith("WARNING: the model is at chance level on the dev split")
    learned = np.eye(6, dtype=int) * 8
    learned[0, 1] = 2
    check = chance_level(learned)
    assert check["at_chance"] is False and check["p_value"] < 1e-10 and chance_warning(check, "dev split") == ""
    # 12 clips, 2 per class, chance 1/6: 6 right (P(X >= 6) = 0.0079) is learning, 2 right (0.62) is not
    half = np.zeros((6, 6), int)
    for i in range(6):
        half[i, i] = half[i, (i + 1) % 6] = 1
    check = chance_level(half)
    assert check["accuracy"] == 0.5 and check["p_value"] == pytest.approx(0.00793, rel=0.01)
    assert check["at_chance"] is False
    few = np.zeros((6, 6), int)
    for i in range(6):
        few[i, (i + 1) % 6] = 2
    few[0, 1], few[0, 0] = 1, 1
    few[1, 2], few[1, 1] = 1, 1
    check = chance_level(few)
    assert check["accuracy"] == pytest.approx(2 / 12) and len(check["classes_predicted"]) == 6
    assert check["p_value"] == pytest.approx(0.6187, rel=0.01) and check["at_chance"] is True
    assert chance_level(np.zeros((6, 6), int)) == {"clips": 0, "at_chance": None}
