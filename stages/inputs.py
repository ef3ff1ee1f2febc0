"""tf.data input pipelines over the processed splits, read from disk a batch at a time.

Each batch of indices is read from the split's file in tf.data's threads (StoredImages: one read
per run of consecutive rows) and run ahead of the model by prefetching, so a stage holds a few
batches, not the split. The training order of every epoch is drawn from (seed, epoch) alone, when
that epoch begins, so a run resumed at epoch k sees exactly the batches an uninterrupted run sees
from epoch k on.

tf.data's autotuner is off, with a fixed number of reads in flight and batches prefetched: its
background thread made deleting an iterator (the end of every fit call) wait on it, for up to 18 s
after the last epoch in measured runs, and reading a batch by index needs no tuning.
"""

import math

import numpy as np

from stages.images import PIXEL_MAX

# Batch reads run at once, and batches kept ready ahead of the model: reading one batch (a few
# hundred KiB, from the page cache once the file has been read) is far quicker than a training step.
PARALLEL_READS = 2
PREFETCH_BATCHES = 4


def epoch_order(indices, seed, epoch):
    """The order in which one epoch visits `indices`: a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(np.asarray(indices, dtype=np.int64))


def steps_per_epoch(count, batch_size):
    """Batches in one epoch of `count` images (the last one may be smaller)."""
    return math.ceil(count / batch_size)


def read_batches(images, labels, index_batches):
    """For each batch of indices, images[batch] (StoredImages) and, unless labels is None, labels[batch].

    The pixels cross from Python as uint8 and are scaled in TensorFlow: a quarter of the bytes,
    and no float arithmetic holding Python's lock.
    """
    import tensorflow as tf

    image_shape = (None, *images.shape[1:])

    def scaled(pixels):
        return tf.cast(tf.ensure_shape(pixels, image_shape), tf.float32) / PIXEL_MAX

    if labels is None:
        def read(rows):
            return scaled(tf.numpy_function(images.pixels, [rows], tf.uint8, stateful=False))
    else:
        def read(rows):
            pixels, batch_labels = tf.numpy_function(lambda rows: (images.pixels(rows), labels[rows]), [rows],
                                                     (tf.uint8, tf.float32), stateful=False)
            return scaled(pixels), tf.ensure_shape(batch_labels, (None, labels.shape[1]))

    options = tf.data.Options()
    options.autotune.enabled = False
    batches = index_batches.map(read, num_parallel_calls=PARALLEL_READS, deterministic=True)
    return batches.prefetch(PREFETCH_BATCHES).with_options(options)


def training_batches(images, labels, indices, batch_size, seed, first_epoch, end_epoch):
    """Shuffled (images, labels) batches for epochs first_epoch .. end_epoch - 1, back to back.

    Pass steps_per_epoch(len(indices), batch_size) to fit: Keras then keeps one iterator
    across epochs, and each epoch takes exactly its own batches.
    """
    import tensorflow as tf

    def epoch_batches(epoch):
        order = tf.numpy_function(lambda epoch: epoch_order(indices, seed, int(epoch)), [epoch], tf.int64,
                                  stateful=False)
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, (len(indices),))).batch(batch_size)

    index_batches = tf.data.Dataset.range(first_epoch, end_epoch).flat_map(epoch_batches)
    return read_batches(images, labels, index_batches)


def ordered_batches(images, labels, batch_size, indices=None):
    """Batches of images (and labels, unless None) in index order, for validation and evaluation."""
    import tensorflow as tf

    if indices is None:
        indices = np.arange(len(images))
    index_batches = tf.data.Dataset.from_tensor_slices(np.asarray(indices, dtype=np.int64)).batch(batch_size)
    return read_batches(images, labels, index_batches)
