"""Metric functions against cases worked out by hand and published values."""

import numpy as np
import pytest

from sklearn import metrics as sklearn_metrics

from stages.metrics import (
    balanced_accuracy,
    bootstrap_intervals,
    classification_metrics,
    confusion_matrix,
    curve_points,
    macro_f1,
    paired_sign_test,
    pooled_intervals,
    roc_auc,
    seed_spread,
    wilson_interval,
)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    counts = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # the absent class, on purpose
def test_scores_from_confusion_counts_match_scikit_learns_row_by_row():
    """The bootstrap scores a batch of resamples at once from their confusion counts: each row must score
    as scikit-learn scores it on its own, a class absent from the row included."""
    rng = np.random.default_rng(3)
    actual, predicted = rng.integers(0, 4, (20, 30)), rng.integers(0, 4, (20, 30))
    actual[:5][actual[:5] == 3] = 0  # class 3 absent from the first rows
    batch_balanced, batch_f1 = balanced_accuracy(actual, predicted, 4), macro_f1(actual, predicted, 4)
    for row, (row_actual, row_predicted) in enumerate(zip(actual, predicted)):
        assert batch_balanced[row] == pytest.approx(sklearn_metrics.balanced_accuracy_score(row_actual, row_predicted))
        assert batch_f1[row] == pytest.approx(sklearn_metrics.f1_score(row_actual, row_predicted, labels=range(4),
                                                                       average="macro", zero_division=0))
        np.testing.assert_array_equal(confusion_matrix(row_actual, row_predicted, 4),
                                      sklearn_metrics.confusion_matrix(row_actual, row_predicted, labels=range(4)))


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
    assert metrics["per_class"]["a"]["precision"] == 1.0
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


def test_roc_auc_of_a_known_ranking():
    # positives 0.9, 0.7, 0.6; negatives 0.8, 0.3, 0.1: 0.9 outranks all 3, 0.7 and 0.6 two each = 7 of 9 pairs
    assert roc_auc([1, 0, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.3, 0.6, 0.1]) == pytest.approx(7 / 9)


def test_wilson_interval_matches_the_published_value():
    # 8 of 10: Wilson's 95 % interval is 0.490 to 0.943 (Newcombe 1998, table I, method 3)
    interval = wilson_interval(8, 10)
    assert interval["low"] == pytest.approx(0.4902, abs=1e-4) and interval["high"] == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(10, 10)["high"] == pytest.approx(1.0) and wilson_interval(10, 10)["low"] < 1.0


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 3, 60)
    predicted = np.where(rng.random(60) < 0.8, actual, (actual + 1) % 3)
    first = bootstrap_intervals(actual, predicted, 3, seed=1)
    assert first == bootstrap_intervals(actual, predicted, 3, seed=1)
    assert first != bootstrap_intervals(actual, predicted, 3, seed=2)
    metrics = classification_metrics(actual, predicted, ["a", "b", "c"], seed=1)
    for key, point in (("balanced_accuracy", metrics["balanced_accuracy"]), ("macro_f1", metrics["macro"]["f1"])):
        assert first[key]["low"] < point < first[key]["high"] and first[key]["high"] - first[key]["low"] < 0.5
    assert metrics["ci95"]["balanced_accuracy"] == first["balanced_accuracy"]
    assert first["macro_f1"] == pooled_intervals(actual, predicted[None], 3, seed=1)["macro_f1"]  # one resampling
    assert metrics["ci95"]["accuracy"] == wilson_interval(np.sum(actual == predicted), 60)


def test_bootstrap_of_a_perfect_classifier_is_a_point():
    perfect = bootstrap_intervals([0, 1, 2] * 5, [0, 1, 2] * 5, 3, seed=0)
    assert perfect == {"balanced_accuracy": {"low": 1.0, "high": 1.0}, "macro_f1": {"low": 1.0, "high": 1.0}}


def test_with_one_seed_the_sign_test_is_the_exact_mcnemar_test():
    # 4 images only the first model got right, none only the second: p = 2 * 0.5**4
    first = [True] * 10
    second = [False] * 4 + [True] * 6
    assert paired_sign_test(first, second) == (4, 0, pytest.approx(0.125))
    assert paired_sign_test(second, first) == (0, 4, pytest.approx(0.125))
    # 1 against 5: p = 2 * (1 + 6) / 2**6
    assert paired_sign_test([True] + [False] * 5 + [True] * 4,
                            [False] + [True] * 5 + [True] * 4)[2] == pytest.approx(14 / 64)
    assert paired_sign_test([True, False], [True, False]) == (0, 0, 1.0), "no disagreement: nothing to tell apart"


def test_sign_test_over_seeds_counts_images_by_their_share_of_seeds_right():
    # three seeds each: shares right per image; differences +1, +1/3, 0, +1/3, -1/3
    first = np.array([[1, 1, 0, 1, 0], [1, 1, 1, 1, 0], [1, 0, 0, 1, 0]]).mean(axis=0)
    second = np.array([[0, 0, 1, 1, 1], [0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]).mean(axis=0)
    # 3 images the first did better on, 1 the second, 1 tied and left out: p = 2 * (4 + 1) / 2**4
    assert paired_sign_test(first, second) == (3, 1, pytest.approx(10 / 16))
    # six images, each right more often by the first model, none by the second: p = 2 / 2**6
    assert paired_sign_test([2 / 3] * 6, [1 / 3] * 6) == (6, 0, pytest.approx(1 / 32))


def test_seed_spread_by_hand():
    assert seed_spread([0.9, 0.8, 1.0]) == {"mean": pytest.approx(0.9), "sd": pytest.approx(0.1), "min": 0.8,
                                            "max": 1.0}
    assert seed_spread([0.7]) == {"mean": 0.7, "sd": 0.0, "min": 0.7, "max": 0.7}, "one seed: no spread"


def test_pooled_interval_is_seeded_brackets_the_mean_over_seeds_and_narrows_to_a_point_when_perfect():
    rng = np.random.default_rng(0)
    actual = rng.integers(0, 3, 80)
    predicted = np.stack([np.where(rng.random(80) < share, actual, (actual + 1) % 3) for share in (0.7, 0.8, 0.9)])
    first = pooled_intervals(actual, predicted, 3, seed=1)
    assert first == pooled_intervals(actual, predicted, 3, seed=1)
    assert first != pooled_intervals(actual, predicted, 3, seed=2)
    mean_accuracy = np.mean(predicted == actual)
    assert first["accuracy"]["low"] < mean_accuracy < first["accuracy"]["high"]
    mean_balanced = np.mean([balanced_accuracy(actual, row, 3) for row in predicted])
    assert first["balanced_accuracy"]["low"] < mean_balanced < first["balanced_accuracy"]["high"]
    # the same network three times: the interval of one
    same = pooled_intervals(actual, np.stack([predicted[1]] * 3), 3, seed=1)
    assert same == pooled_intervals(actual, predicted[1:2], 3, seed=1)
    perfect = pooled_intervals(actual, np.stack([actual, actual]), 3, seed=0)
    assert perfect == {name: {"low": 1.0, "high": 1.0} for name in ("accuracy", "balanced_accuracy", "macro_f1")}


def test_binary_curves_of_a_perfect_ranking():
    roc, precision_recall = curve_points([0, 0, 1, 1], np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]))
    points = {(p["fpr"], p["tpr"]) for p in roc["roc"]}
    assert (0.0, 1.0) in points and (1.0, 1.0) in points and (0.0, 0.0) in points
    pr_points = {(p["recall"], p["precision"]) for p in precision_recall["precision_recall"]}
    assert (1.0, 1.0) in pr_points, "a perfect ranking reaches full recall at full precision"
    assert (1.0, 0.5) in pr_points, "and, at the lowest threshold, calls every image positive"


def test_multiclass_curves_are_micro_averaged_over_every_image_and_class():
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.5, 0.2, 0.3]])
    roc, _ = curve_points([0, 1, 2], probabilities)
    # 9 (image, class) pairs, 3 of them true. By score: 0.8 true, 0.7 true, 0.5 false, 0.3 true, then 5 false.
    assert roc["roc"][-1]["fpr"] == 1.0 and roc["roc"][-1]["tpr"] == 1.0
    assert any(p["tpr"] == pytest.approx(2 / 3) and p["fpr"] == 0.0 for p in roc["roc"])
    assert any(p["tpr"] == 1.0 and p["fpr"] == pytest.approx(1 / 6) for p in roc["roc"])
