"""tf.data input pipelines over in-memory or memory-mapped arrays.

Batches are gathered from the arrays on demand (a NumPy gather inside tf.data, run ahead of the
model by prefetching) instead of the arrays being converted into one graph constant: the whole
dataset is never copied, and a memory-mapped .npy split is read from the page cache as needed.
The training order of every epoch is drawn from (seed, epoch) alone, so a run resumed at epoch k
sees exactly the batches an uninterrupted run sees from epoch k on.
"""

import math

import numpy as np


def epoch_order(indices, seed, epoch):
    """The order in which one epoch visits `indices`: a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(indices)


def steps_per_epoch(count, batch_size):
    """Batches in one epoch of `count` images (the last one may be smaller)."""
    return math.ceil(count / batch_size)


def gather_batches(arrays, index_batches):
    """A dataset of tuples (array[batch] for array in arrays) for each batch of indices."""
    import tensorflow as tf

    dtypes = [tf.as_dtype(array.dtype) for array in arrays]

    def gather(batch_indices):
        return tuple(np.ascontiguousarray(array[batch_indices]) for array in arrays)

    def load(batch_indices):
        tensors = tf.numpy_function(gather, [batch_indices], dtypes, stateful=False)
        for tensor, array in zip(tensors, arrays):
            tensor.set_shape((None, *array.shape[1:]))
        return tuple(tensors)

    options = tf.data.Options()
    # The pipeline is made of index tensors, not files: each worker of a multi-worker run
    # takes its share of every batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    batches = index_batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


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
