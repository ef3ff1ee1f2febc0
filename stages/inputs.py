"""tf.data input pipelines over the processed splits.

Each split is read once into one tensor in memory; batches are gathered from it by index
(`tf.gather` in tf.data's threads, run ahead of the model by prefetching), so the data are held
once, never embedded in a graph, and no Python runs per batch. The training order of every epoch
is drawn from (seed, epoch) alone, so a run resumed at epoch k sees exactly the batches an
uninterrupted run sees from epoch k on.

tf.data's autotuner is off, with a fixed number of gathers in flight and batches prefetched: its
background thread made deleting an iterator (the end of every fit call) wait on it, for up to 18 s
after the last epoch in measured runs, and a gather by index needs no tuning.
"""

import math

import numpy as np

# Batch gathers run at once, and batches kept ready ahead of the model: gathering one batch is a
# copy of a few MiB, far quicker than a training step on it.
PARALLEL_GATHERS = 2
PREFETCH_BATCHES = 4


def epoch_order(indices, seed, epoch):
    """The order in which one epoch visits `indices`: a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(indices)


def steps_per_epoch(count, batch_size):
    """Batches in one epoch of `count` images (the last one may be smaller)."""
    return math.ceil(count / batch_size)


def gather_batches(arrays, index_batches):
    """A dataset of tuples (array[batch] for array in arrays) for each batch of indices."""
    import tensorflow as tf

    # One tensor per array, read once and captured by the map function (not embedded in a graph):
    # the gathers then run in tf.data's own threads, with no Python (and no GIL) in the input path.
    tensors = tuple(tf.convert_to_tensor(np.asarray(array)) for array in arrays)

    def gather(batch_indices):
        return tuple(tf.gather(tensor, batch_indices) for tensor in tensors)

    options = tf.data.Options()
    options.autotune.enabled = False
    batches = index_batches.map(gather, num_parallel_calls=PARALLEL_GATHERS, deterministic=True)
    return batches.prefetch(PREFETCH_BATCHES).with_options(options)


def training_batches(images, labels, indices, batch_size, seed, first_epoch, end_epoch):
    """Shuffled (images, labels) batches for epochs first_epoch .. end_epoch - 1, back to back.

    Pass steps_per_epoch(len(indices), batch_size) to fit: Keras then keeps one iterator
    across epochs, and each epoch takes exactly its own batches.
    """
    import tensorflow as tf

    orders = np.stack([epoch_order(indices, seed, epoch) for epoch in range(first_epoch, end_epoch)])
    index_batches = tf.data.Dataset.from_tensor_slices(orders).flat_map(
        lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    return gather_batches((images, labels), index_batches)


def ordered_batches(arrays, batch_size, indices=None):
    """Batches of the arrays (a tuple: images, or images and labels) in index order, for evaluation."""
    import tensorflow as tf

    if indices is None:
        indices = np.arange(len(arrays[0]))
    return gather_batches(tuple(arrays), tf.data.Dataset.from_tensor_slices(np.asarray(indices)).batch(batch_size))
