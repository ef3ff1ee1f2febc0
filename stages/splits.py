"""Stratified hold-out: the test split of preprocess and the validation split of train use the same rule."""

import math

import numpy as np


def stratified_holdout(class_indices, fraction, rng):
    """Sorted indices holding out round(fraction * n_c) items of every class c, drawn with rng."""
    held_out = []
    for class_index in np.unique(class_indices):
        members = rng.permutation(np.flatnonzero(class_indices == class_index))
        held_out.extend(members[: math.floor(fraction * len(members) + 0.5)])
    return np.sort(np.array(held_out, dtype=np.int64))
