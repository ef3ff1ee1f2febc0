"""Input pipelines over the processed splits, read from disk a batch at a time, on any Keras backend.

Batches is a keras.utils.PyDataset: it reads each batch of indices from the split's file
(StoredImages: one read per run of consecutive rows), so a stage holds a few batches, not the split.
A long pass is read by Keras's worker threads while the model trains on the batches before it; a
short one in the training thread, since stopping the workers at each pass's end costs Keras about
0.1 s. The order of every epoch is drawn from (training seed, epoch) alone, when that epoch begins,
so a run resumed at epoch k sees exactly the batches an uninterrupted run sees from epoch k on.
Training epochs hold whole batches only: every step has one shape, so the step is traced once.

Under data-parallel training each process reads only its part of every batch (`shard`): the parts,
in process order, make up the batch a single process would read.
"""

import math
from typing import NamedTuple

import keras
import numpy as np

from stages.images import PIXEL_MAX

# Batch reads run at once, and batches kept ready ahead of the model: reading one batch (a few
# hundred KiB, from the page cache once the file has been read) is far quicker than a training step.
PARALLEL_READS = 2
PREFETCH_BATCHES = 4
# A pass of fewer batches is read in the training thread. Keras waits 0.1 s for its queue to drain
# each time it stops its workers: measured on signs_cnn (16 training and 2 validation batches an
# epoch, 2-core CPU), reading in the training thread took its epochs from 0.77 s to 0.61 s, while
# happy_cnn's 593-batch epochs ran at 14.2 s with the workers and 20.5 s without.
THREADED_MIN_BATCHES = 20


class Shard(NamedTuple):
    """Which part of each batch this process reads: `index` of `count` equal parts."""

    index: int = 0
    count: int = 1


def epoch_order(indices, seed, epoch):
    """The order in which one epoch visits `indices`: a permutation drawn from (training seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(np.asarray(indices, dtype=np.int64))


def steps_per_epoch(count, batch_size):
    """Batches in one epoch of `count` images (the last one may be smaller)."""
    return math.ceil(count / batch_size)


class Batches(keras.utils.PyDataset):
    """Batches of a split's images scaled to [0, 1] (with their labels, unless labels is None).

    `order(epoch)` gives the indices one epoch visits, in order. Keras calls on_epoch_end after
    its readers have stopped, so the next epoch's order is in place before any of its batches is read.
    """

    def __init__(self, images, labels, batch_size, order, first_epoch=0, shard=Shard()):
        indices = order(first_epoch)
        long_pass = steps_per_epoch(len(indices), batch_size) >= THREADED_MIN_BATCHES
        super().__init__(workers=PARALLEL_READS if long_pass else 1, max_queue_size=PREFETCH_BATCHES)
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.order, self.epoch, self.shard = order, first_epoch, shard
        self.indices = indices

    def __len__(self):
        return steps_per_epoch(len(self.indices), self.batch_size)

    def rows(self, index):
        """The split's rows that batch `index` of this epoch holds, this process's part of them."""
        rows = self.indices[index * self.batch_size:(index + 1) * self.batch_size]
        part, extra = divmod(len(rows), self.shard.count)
        if extra:
            raise ValueError(f"a batch of {len(rows)} images does not split evenly over {self.shard.count} processes")
        return rows[self.shard.index * part:(self.shard.index + 1) * part]

    def __getitem__(self, index):
        rows = self.rows(index)
        # uint8 from disk, scaled here: the same float32 values the preprocess stage's decoding gives.
        images = self.images.pixels(rows).astype(np.float32) / np.float32(PIXEL_MAX)
        return (images,) if self.labels is None else (images, self.labels[rows])

    def on_epoch_end(self):
        self.epoch += 1
        self.indices = self.order(self.epoch)


def whole_batches(count, batch_size, multiple=1):
    """How many of `count` images fill whole batches; a set smaller than one batch is one batch, cut to
    a multiple of `multiple` (the devices a data-parallel run splits every batch over)."""
    return count - count % batch_size if count >= batch_size else count - count % multiple


def training_batches(images, labels, indices, batch_size, seed, first_epoch, shard=Shard(), multiple=1):
    """Shuffled (images, labels) batches, epoch after epoch from first_epoch, in each epoch's own order.

    Each epoch holds whole batches (whole_batches): the images left over are left out, others each epoch.
    """
    usable = whole_batches(len(indices), batch_size, multiple)
    return Batches(images, labels, batch_size, lambda epoch: epoch_order(indices, seed, epoch)[:usable],
                   first_epoch, shard)


def ordered_batches(images, labels, batch_size, indices=None, shard=Shard()):
    """Batches of images (and labels, unless None) in index order, for validation and evaluation."""
    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    return Batches(images, labels, batch_size, lambda epoch: indices, shard=shard)
