"""Stratified hold-out: the test split of preprocess and the validation split of train use the same rule."""

import numpy as np
from sklearn.model_selection import train_test_split


class SplitError(ValueError):
    """A hold-out that cannot be stratified (too few items of a class, or of all)."""


def stratified_holdout(class_indices, fraction, seed):
    """Sorted indices of a stratified `fraction` of the items, drawn with the seed (scikit-learn's allocation)."""
    class_indices = np.asarray(class_indices)
    try:
        _, held_out = train_test_split(np.arange(len(class_indices)), test_size=fraction, stratify=class_indices,
                                       random_state=seed)
    except ValueError as error:
        counts = dict(zip(*(values.tolist() for values in np.unique(class_indices, return_counts=True))))
        raise SplitError(f"cannot hold out {fraction} of {len(class_indices)} items stratified by class "
                         f"(items per class: {counts}): {error}") from error
    return np.sort(held_out)
