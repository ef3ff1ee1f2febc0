"""Classification metrics and their 95 % intervals, from scikit-learn, SciPy and confusion counts.

Every figure is a plain float (or a nested dict of them) that `dvc metrics diff` can compare. A
class that is never predicted has precision 0, not NaN or an error.
"""

import numpy as np
from scipy import stats
from sklearn import metrics

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 1000
# Resamples drawn at a time: the same draws and intervals as all at once, without 1000 x test images
# of indices in memory (210 MB for a 26,000-image test split).
BOOTSTRAP_BATCH = 100


def roc_auc(actual, positive_scores):
    """Area under the ROC curve of a binary classifier; 0.5 when one class is absent (nothing to rank)."""
    if len(np.unique(actual)) < 2:
        return 0.5
    return float(metrics.roc_auc_score(actual, positive_scores))


def confusion_matrix(actual, predicted, num_classes):
    """counts[..., i, j]: images of true class i predicted as class j, for each row of (..., images) arrays."""
    actual, predicted = np.asarray(actual, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    rows = actual.reshape(-1, actual.shape[-1]) if actual.ndim > 1 else actual[None]
    cells = rows * num_classes + predicted.reshape(rows.shape) + num_classes ** 2 * np.arange(len(rows))[:, None]
    counts = np.bincount(cells.ravel(), minlength=len(rows) * num_classes ** 2)
    return counts.reshape(*actual.shape[:-1], num_classes, num_classes)


def balanced_accuracy(actual, predicted, num_classes):
    """Mean recall over the classes present in `actual`; one per row of (..., images) arrays, for the bootstrap."""
    counts = confusion_matrix(actual, predicted, num_classes)
    support = counts.sum(axis=-1)
    recall = np.diagonal(counts, axis1=-2, axis2=-1) / np.maximum(support, 1)
    present = support > 0
    score = (recall * present).sum(axis=-1) / np.maximum(present.sum(axis=-1), 1)  # 0 with no images at all
    return float(score) if score.ndim == 0 else score


def macro_f1(actual, predicted, num_classes):
    """Mean F1 over all classes, 0 for a class neither present nor predicted (scikit-learn's zero_division=0)."""
    counts = confusion_matrix(actual, predicted, num_classes)
    hits = np.diagonal(counts, axis1=-2, axis2=-1)
    shown = counts.sum(axis=-1) + counts.sum(axis=-2)  # 2 hits + misses + false alarms
    score = (2 * hits / np.maximum(shown, 1)).mean(axis=-1)
    return float(score) if score.ndim == 0 else score


def wilson_interval(successes, trials):
    """{low, high}: the Wilson score interval of a proportion (fine near 0 and 1, unlike the normal one)."""
    if trials == 0:
        return {"low": 0.0, "high": 1.0}
    interval = stats.binomtest(int(successes), int(trials)).proportion_ci(CONFIDENCE, method="wilson")
    return {"low": float(interval.low), "high": float(interval.high)}


def bootstrap_intervals(actual, predicted, num_classes, seed):
    """{balanced_accuracy, macro_f1: {low, high}} of one network: the pooled intervals of a single seed."""
    intervals = pooled_intervals(actual, np.asarray(predicted)[None], num_classes, seed)
    return {name: intervals[name] for name in ("balanced_accuracy", "macro_f1")}


def classification_metrics(actual, predicted, class_names, positive_scores=None, seed=0):
    """Accuracy, balanced accuracy, per-class and macro precision/recall/F1 with 95 % intervals; ROC AUC if binary."""
    actual, predicted = np.asarray(actual), np.asarray(predicted)
    labels = np.arange(len(class_names))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        actual, predicted, labels=labels, zero_division=0)
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(support[i])} for i, name in enumerate(class_names)}
    result = {
        "accuracy": float(np.mean(actual == predicted)) if len(actual) else 0.0,
        "balanced_accuracy": balanced_accuracy(actual, predicted, len(class_names)),
        "macro": {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())},
        "per_class": per_class,
        "ci95": {"accuracy": wilson_interval(np.sum(actual == predicted), len(actual)),
                 **bootstrap_intervals(actual, predicted, len(class_names), seed)},
    }
    if len(class_names) == 2 and positive_scores is not None:
        result["roc_auc"] = roc_auc(actual, positive_scores)
    return result


def curve_points(actual, probabilities):
    """ROC and precision-recall points: of the positive class for two classes, micro-averaged one-vs-rest otherwise.

    Returns ({"roc": [{fpr, tpr, threshold}]}, {"precision_recall": [{recall, precision, threshold}]}), the
    layout of DVC's example project, for `dvc plots`.
    """
    actual = np.asarray(actual)
    probabilities = np.asarray(probabilities)
    if probabilities.shape[1] == 2:
        truth, scores = actual == 1, probabilities[:, 1]
    else:
        truth = (actual[:, None] == np.arange(probabilities.shape[1])[None, :]).ravel()
        scores = probabilities.ravel()
    fpr, tpr, roc_thresholds = metrics.roc_curve(truth, scores)
    precision, recall, pr_thresholds = metrics.precision_recall_curve(truth, scores)
    roc = [{"fpr": float(f), "tpr": float(t), "threshold": float(min(h, 1.0))}
           for f, t, h in zip(fpr, tpr, roc_thresholds)]
    # precision_recall_curve ends on (recall 0, precision 1) with no threshold.
    pr = [{"recall": float(r), "precision": float(p), "threshold": float(h)}
          for r, p, h in zip(recall, precision, [*pr_thresholds, 1.0])]
    return {"roc": roc}, {"precision_recall": pr}


def paired_sign_test(first_scores, second_scores):
    """Exact two-sided sign test on two models' scores for the same images (Dixon and Mood, 1946).

    An image's score is the share of a model's training seeds that got it right. Returns (images the
    first scored higher on, images the second scored higher on, p-value): the chance of a split at
    least this uneven if neither model were better. Images they score equally tell nothing and are
    left out. With one seed per model a score is right (1) or wrong (0), and this is the exact
    McNemar test.
    """
    difference = np.asarray(first_scores, float) - np.asarray(second_scores, float)
    first_higher, second_higher = int(np.sum(difference > 0)), int(np.sum(difference < 0))
    if first_higher + second_higher == 0:
        return first_higher, second_higher, 1.0
    return first_higher, second_higher, float(stats.binomtest(first_higher, first_higher + second_higher).pvalue)


def seed_spread(values):
    """{mean, sd, min, max} of one figure over training seeds; sd is the sample standard deviation (0 for one)."""
    values = np.asarray(values, float)
    return {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max())}


SCORES = {"accuracy": lambda actual, predicted, num_classes: np.mean(actual == predicted, axis=-1),
          "balanced_accuracy": balanced_accuracy, "macro_f1": macro_f1}


def pooled_intervals(actual, predicted_per_seed, num_classes, seed):
    """{accuracy, balanced_accuracy, macro_f1: {low, high}}: 95 % percentile intervals of each figure's mean
    over the training seeds, from test images resampled with `seed`, every training seed's network scored on
    the same resample.

    predicted_per_seed is (seeds, images): one row per training seed of the model. The interval
    covers the spread that the choice of test images brings, with the seeds' own spread averaged in.
    """
    actual, predicted = np.asarray(actual), np.asarray(predicted_per_seed)
    rng = np.random.default_rng(seed)
    means = {name: [] for name in SCORES}
    for start in range(0, BOOTSTRAP_RESAMPLES, BOOTSTRAP_BATCH):
        rows = rng.integers(0, len(actual), (min(BOOTSTRAP_BATCH, BOOTSTRAP_RESAMPLES - start), len(actual)))
        resampled_actual = np.broadcast_to(actual[rows], (len(predicted), *rows.shape))
        resampled_predicted = predicted[:, rows]  # (seeds, resamples, images)
        for name, score in SCORES.items():
            means[name].append(np.asarray(score(resampled_actual, resampled_predicted, num_classes)).mean(axis=0))
    tail = 100 * (1 - CONFIDENCE) / 2
    return {name: dict(zip(("low", "high"), map(float, np.percentile(np.concatenate(values), [tail, 100 - tail]))))
            for name, values in means.items()}
