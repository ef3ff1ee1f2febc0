"""The tf.data input pipelines: batch contents and order, resumption, and their options."""

import numpy as np
import pytest

from stages.inputs import epoch_order, ordered_batches, steps_per_epoch, training_batches

IMAGES = np.arange(10 * 2 * 2 * 3, dtype="float32").reshape(10, 2, 2, 3)
LABELS = np.eye(2, dtype="float32")[np.arange(10) % 2]
INDICES = np.array([0, 2, 3, 5, 6, 8, 9])  # a training split: 1, 4 and 7 are held out


def batch_indices(batches):
    """The image indices each batch holds (IMAGES[i, 0, 0, 0] == 12 * i)."""
    return [[int(value) // 12 for value in images[:, 0, 0, 0]] for images, _ in batches.as_numpy_iterator()]


def test_epoch_order_is_a_permutation_drawn_from_seed_and_epoch():
    order = epoch_order(INDICES, seed=3, epoch=0)
    assert sorted(order) == sorted(INDICES)
    assert np.array_equal(order, epoch_order(INDICES, seed=3, epoch=0))
    assert not np.array_equal(order, epoch_order(INDICES, seed=3, epoch=1))
    assert not np.array_equal(order, epoch_order(INDICES, seed=4, epoch=0))


def test_training_batches_visit_each_epoch_in_its_order_with_matching_labels():
    batches = training_batches(IMAGES, LABELS, INDICES, batch_size=3, seed=3, first_epoch=0, end_epoch=2)
    seen = batch_indices(batches)
    assert len(seen) == 2 * steps_per_epoch(len(INDICES), 3) == 6
    for epoch in range(2):
        epoch_batches = seen[3 * epoch: 3 * epoch + 3]
        assert [len(batch) for batch in epoch_batches] == [3, 3, 1]
        assert sum(epoch_batches, []) == list(epoch_order(INDICES, 3, epoch))
    for images, labels in batches.as_numpy_iterator():
        indices = (images[:, 0, 0, 0] // 12).astype(int)
        assert np.array_equal(labels, LABELS[indices])


def test_a_resumed_run_sees_the_batches_of_an_uninterrupted_one():
    whole = batch_indices(training_batches(IMAGES, LABELS, INDICES, 3, seed=5, first_epoch=0, end_epoch=4))
    from_epoch_2 = batch_indices(training_batches(IMAGES, LABELS, INDICES, 3, seed=5, first_epoch=2, end_epoch=4))
    assert from_epoch_2 == whole[6:]


def test_ordered_batches_keep_index_order():
    batches = ordered_batches((IMAGES, LABELS), 4, indices=np.array([1, 4, 7]))
    assert batch_indices(batches) == [[1, 4, 7]]
    images_only = list(ordered_batches((IMAGES,), 4).as_numpy_iterator())
    assert [len(batch[0]) for batch in images_only] == [4, 4, 2]
    assert np.array_equal(np.concatenate([batch[0] for batch in images_only]), IMAGES)


@pytest.mark.parametrize("make", [
    lambda: training_batches(IMAGES, LABELS, INDICES, 3, seed=1, first_epoch=0, end_epoch=1),
    lambda: ordered_batches((IMAGES,), 4),
])
def test_pipelines_run_without_the_autotuner(make):
    """Its thread made deleting an iterator (the end of each fit call) wait up to 18 s; see stages/inputs.py."""
    options = make().options()
    assert options.autotune.enabled is False
