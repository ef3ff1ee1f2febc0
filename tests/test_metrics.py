"""Metric functions against cases worked out by hand."""

import numpy as np
import pytest

from stages.metrics import classification_metrics, confusion_matrix, roc_auc


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    counts = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


def test_hand_computed_three_class_case():
    # actual:    0 0 1 2 2 2
    # predicted: 0 1 1 2 0 2
    metrics = classification_metrics([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    a, b, c = (metrics["per_class"][name] for name in "abc")
    assert (a["precision"], a["recall"], a["f1"], a["support"]) == (pytest.approx(1 / 2), pytest.approx(1 / 2),
                                                                    pytest.approx(1 / 2), 2)
    assert (b["precision"], b["recall"], b["f1"]) == (pytest.approx(1 / 2), 1.0, pytest.approx(2 / 3))
    assert (c["precision"], c["recall"], c["f1"]) == (1.0, pytest.approx(2 / 3), pytest.approx(0.8))
    assert metrics["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    assert metrics["macro"]["f1"] == pytest.approx((1 / 2 + 2 / 3 + 0.8) / 3)
    assert "roc_auc" not in metrics


def test_class_never_predicted_has_zero_precision_not_nan():
    metrics = classification_metrics([0, 1, 2, 2], [0, 1, 1, 1], ["a", "b", "c"])
    never = metrics["per_class"]["c"]
    assert never == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    assert all(np.isfinite(value) for value in metrics["macro"].values())


def test_perfect_classifier():
    metrics = classification_metrics([0, 1, 1, 0], [0, 1, 1, 0], ["no", "yes"], positive_scores=[0.1, 0.9, 0.8, 0.3])
    assert metrics["accuracy"] == metrics["balanced_accuracy"] == metrics["macro"]["f1"] == 1.0
    assert metrics["roc_auc"] == 1.0


def test_worst_classifier():
    metrics = classification_metrics([0, 1, 1, 0], [1, 0, 0, 1], ["no", "yes"], positive_scores=[0.9, 0.1, 0.2, 0.7])
    assert metrics["accuracy"] == metrics["balanced_accuracy"] == metrics["macro"]["f1"] == 0.0
    assert metrics["roc_auc"] == 0.0


def test_roc_auc_counts_ties_as_half():
    # positives score 0.8 and 0.4; negatives 0.4 and 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4, 0.4>0.1) = 3.5 of 4
    assert roc_auc([1, 1, 0, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)
    assert roc_auc([1, 1], [0.2, 0.3]) == 0.5, "one class absent: no ranking to measure"


def test_balanced_accuracy_ignores_absent_classes():
    metrics = classification_metrics([0, 0, 0, 1], [0, 0, 1, 1], ["a", "b", "c"])
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)
