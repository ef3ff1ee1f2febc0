"""Reading the processed splits that preprocess wrote, for every stage after it."""

import numpy as np


class MissingDataError(FileNotFoundError):
    """A processed split that is not there yet."""


def load_split(dataset, split):
    """(images, labels) of data/processed/<dataset>/<split>.npz."""
    path = dataset.processed_dir / f"{split}.npz"
    if not path.is_file():
        raise MissingDataError(f"{path} is missing: run `dvc repro preprocess@{dataset.name}` first")
    with np.load(path) as data:
        return data["images"], data["labels"]


def class_indices(labels):
    """Class index per image from an (m, 1) 0/1 column or one-hot (m, C) labels."""
    if labels.shape[1] == 1:
        return labels[:, 0].round().astype(np.int64)
    return labels.argmax(axis=1)


def encode_labels(class_indices, num_classes):
    """A float32 (m, 1) column of 0/1 for two classes, one-hot (m, num_classes) for more."""
    if num_classes == 2:
        return class_indices.astype(np.float32).reshape(-1, 1)
    return np.eye(num_classes, dtype=np.float32)[class_indices]


def label_width(num_classes):
    """Columns of the label array that encode_labels makes for num_classes classes."""
    return encode_labels(np.zeros(1, dtype=np.int64), num_classes).shape[1]
