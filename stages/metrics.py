"""Classification metrics from true and predicted class indices, in plain NumPy.

Small enough to check by hand, and free of edge-case surprises: a class that is never predicted
has precision 0 (not NaN), and every figure is a plain float that `dvc metrics diff` can compare.
"""

import numpy as np


def confusion_matrix(actual, predicted, num_classes):
    """counts[i, j]: images of true class i predicted as class j."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(actual), np.asarray(predicted)), 1)
    return counts


def _ratio(numerator, denominator):
    return float(numerator / denominator) if denominator else 0.0


def per_class_scores(counts):
    """[{precision, recall, f1, support}] per class from a confusion matrix."""
    scores = []
    for index in range(len(counts)):
        true_positives = counts[index, index]
        precision = _ratio(true_positives, counts[:, index].sum())
        recall = _ratio(true_positives, counts[index, :].sum())
        scores.append({"precision": precision, "recall": recall,
                       "f1": _ratio(2 * precision * recall, precision + recall),
                       "support": int(counts[index, :].sum())})
    return scores


def roc_auc(actual, positive_scores):
    """Area under the ROC curve of a binary classifier: the chance that a random positive outscores a
    random negative (ties count half). NaN-free: 0.5 when one class is absent."""
    actual = np.asarray(actual).astype(bool)
    positive_scores = np.asarray(positive_scores, dtype=np.float64)
    positives, negatives = positive_scores[actual], positive_scores[~actual]
    if len(positives) == 0 or len(negatives) == 0:
        return 0.5
    wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
    return float(wins / (len(positives) * len(negatives)))


def classification_metrics(actual, predicted, class_names, positive_scores=None):
    """Accuracy, balanced accuracy, per-class and macro precision/recall/F1, and ROC AUC for binary tasks."""
    counts = confusion_matrix(actual, predicted, len(class_names))
    scores = per_class_scores(counts)
    present = [score for score in scores if score["support"] > 0]
    metrics = {
        "accuracy": _ratio(np.trace(counts), counts.sum()),
        "balanced_accuracy": float(np.mean([score["recall"] for score in present])) if present else 0.0,
        "macro": {key: float(np.mean([score[key] for score in scores])) for key in ("precision", "recall", "f1")},
        "per_class": dict(zip(class_names, scores)),
    }
    if len(class_names) == 2 and positive_scores is not None:
        metrics["roc_auc"] = roc_auc(actual, positive_scores)
    return metrics
