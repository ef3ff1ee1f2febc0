"""Seed and dataset ensembles: several trained networks' class probabilities averaged image by image.

A model's seed ensemble averages the networks its training seeds gave; a dataset's ensemble averages
its models' seed ensembles, each model weighing the same. Averaging probabilities chooses nothing,
so an ensemble can be scored on any test set without tuning on it.
"""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np


class EnsembleError(ValueError):
    """Predictions that cannot be averaged: a file missing, or members scored on different images."""


class Predictions(NamedTuple):
    """Networks' answers on one test set: the true class per image, and each network's class and
    probabilities per image."""

    actual: np.ndarray         # (images,) true class indices
    predicted: np.ndarray      # (networks, images) each network's class, as evaluate decided it
    probabilities: np.ndarray  # (networks, images, classes), rounded as evaluate stored them

    @property
    def correct_share(self):
        """(images,): the share of the networks that got each image right (the paired tests' score)."""
        return (self.predicted == self.actual).mean(axis=0)

    def averaged(self):
        """The ensemble of these networks, as Predictions of one network."""
        probabilities = self.probabilities.mean(axis=0, keepdims=True)
        return Predictions(self.actual, probabilities.argmax(axis=-1), probabilities)


def prediction_file_rows(path, test_set=None):
    """evaluate's rows for the test split (test_set None, predictions.json) or an external set."""
    path = Path(path)
    if not path.is_file():
        raise EnsembleError(f"{path} is missing: run `dvc repro` to build every model's reports first")
    rows = json.loads(path.read_text())
    if test_set is not None:
        if test_set not in rows:
            raise EnsembleError(f"{path} has no `{test_set}`: run `dvc repro` to score it")
        rows = rows[test_set]
    if rows and "probabilities" not in rows[0]:
        raise EnsembleError(f"{path} holds no probabilities: it was written by an older evaluate; run `dvc repro`")
    return rows


def read_predictions(eval_dirs, class_names, test_set=None):
    """The Predictions of the networks whose evaluate folders are eval_dirs, on one test set."""
    index = {name: i for i, name in enumerate(class_names)}
    actual, predicted, probabilities = None, [], []
    for eval_dir in eval_dirs:
        name = "predictions.json" if test_set is None else "predictions_external.json"
        rows = prediction_file_rows(Path(eval_dir) / name, test_set)
        truth = np.array([index[row["actual"]] for row in rows], dtype=np.int64)
        if actual is not None and not np.array_equal(truth, actual):
            raise EnsembleError(f"{eval_dir}: scored on other {test_set or 'test'} images than {eval_dirs[0]}; "
                                "run `dvc repro` so every seed is scored on the same data")
        actual = truth
        predicted.append([index[row["predicted"]] for row in rows])
        probabilities.append([row["probabilities"] for row in rows])
    return Predictions(actual, np.asarray(predicted, dtype=np.int64), np.asarray(probabilities, dtype=np.float64))


def combine(members):
    """The ensemble of several Predictions on the same images (each one's networks averaged first)."""
    first = members[0].actual
    for member in members[1:]:
        if not np.array_equal(member.actual, first):
            raise EnsembleError("the members were scored on different images")
    averaged = [member.averaged() for member in members]
    return Predictions(first, np.concatenate([member.predicted for member in averaged]),
                       np.concatenate([member.probabilities for member in averaged])).averaged()
