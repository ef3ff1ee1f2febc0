"""The processed splits on disk and the input pipelines over them: contents, order, resumption, sharding."""

import os

import numpy as np
import pytest

from stages.data import StoredImages, read_split, save_split
from stages.images import to_unit_range
from stages.inputs import (PARALLEL_READS, THREADED_MIN_BATCHES, Shard, epoch_order, ordered_batches, training_batches,
                           whole_batches)

pytestmark = pytest.mark.backends  # run again on JAX by the README's second pass

PIXELS = (np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
          + np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3) * 20)  # image i starts with pixel value i
LABELS = np.eye(2, dtype="float32")[np.arange(10) % 2]
INDICES = np.array([0, 2, 3, 5, 6, 8, 9])  # a training split: 1, 4 and 7 are held out


@pytest.fixture
def images(tmp_path):
    save_split(tmp_path, "train", LABELS, [PIXELS[:4], PIXELS[4:]], PIXELS.shape[1:])
    return read_split(tmp_path, "train")[0]


def fit_batches(batches, epochs=1):
    """The batches Keras's fit takes from `batches` over `epochs` epochs, through Keras's own epoch iterator."""
    from keras.src.trainers.epoch_iterator import EpochIterator

    iterator, taken = EpochIterator(batches, shuffle=False), []
    for _ in range(epochs):
        for _, _, buffer in iterator:
            taken.extend(tuple(np.asarray(part) for part in batch) for batch in buffer)
    return taken


def batch_indices(batches, epochs=1):
    """The image indices each batch holds (the first pixel of image i is i / 255)."""
    return [[int(round(value * 255)) for value in batch[0][:, 0, 0, 0]] for batch in fit_batches(batches, epochs)]


def test_a_split_written_in_chunks_reads_back_by_any_rows(tmp_path, images):
    assert np.array_equal(np.load(tmp_path / "train/images.npy"), PIXELS)  # a plain .npy file
    assert images.shape == PIXELS.shape and len(images) == 10
    for rows in ([3], [7, 2, 9], [4, 5, 6, 1], list(range(10)), [8, 8]):
        assert np.array_equal(images.pixels(rows), PIXELS[rows])
        np.testing.assert_array_equal(images[rows], to_unit_range(PIXELS[rows]))
    np.testing.assert_array_equal(images[2:5], to_unit_range(PIXELS[2:5]))
    np.testing.assert_array_equal(images[-1], to_unit_range(PIXELS[-1]))
    with pytest.raises(IndexError):
        images.pixels([10])


def test_writing_a_split_refuses_chunks_that_do_not_add_up(tmp_path):
    with pytest.raises(ValueError, match="9 images written for 10 labels"):
        save_split(tmp_path, "train", LABELS, [PIXELS[:9]], PIXELS.shape[1:])
    with pytest.raises(ValueError, match="expected uint8"):
        save_split(tmp_path, "test", LABELS, [PIXELS.astype(np.float32)], PIXELS.shape[1:])


def test_the_pipeline_scales_every_pixel_value_to_the_floats_a_decoded_image_gives(tmp_path):
    every_value = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1).repeat(3, axis=-1)
    save_split(tmp_path, "all", np.zeros((4, 1), np.float32), [every_value], every_value.shape[1:])
    batches = [batch[0] for batch in fit_batches(ordered_batches(read_split(tmp_path, "all")[0], None, 3))]
    assert np.array_equal(np.concatenate(batches), to_unit_range(every_value))  # bit for bit
    assert np.array_equal(to_unit_range(every_value), every_value.astype(np.float32) / np.float32(255))
    assert batches[0].dtype == np.float32 and to_unit_range(every_value).max() == 1.0


def test_epoch_order_is_a_permutation_drawn_from_seed_and_epoch():
    order = epoch_order(INDICES, seed=3, epoch=0)
    assert sorted(order) == sorted(INDICES)
    assert np.array_equal(order, epoch_order(INDICES, seed=3, epoch=0))
    assert not np.array_equal(order, epoch_order(INDICES, seed=3, epoch=1))
    assert not np.array_equal(order, epoch_order(INDICES, seed=4, epoch=0))


def test_training_batches_visit_each_epoch_in_its_order_with_matching_labels(images):
    batches = training_batches(images, LABELS, INDICES, batch_size=3, seed=3, first_epoch=0)
    seen = batch_indices(batches, epochs=2)
    assert len(seen) == 2 * (len(INDICES) // 3) == 4
    for epoch in range(2):
        epoch_batches = seen[2 * epoch: 2 * epoch + 2]
        assert [len(batch) for batch in epoch_batches] == [3, 3]  # whole batches: one image left out
        assert sum(epoch_batches, []) == list(epoch_order(INDICES, 3, epoch))[:6]
    epochs = batch_indices(training_batches(images, LABELS, INDICES, 3, seed=3, first_epoch=0), epochs=5)
    left_out = {(set(INDICES.tolist()) - set(epochs[2 * epoch] + epochs[2 * epoch + 1])).pop() for epoch in range(5)}
    assert len(left_out) > 1  # epochs leave out different images
    for batch_images, batch_labels in fit_batches(training_batches(images, LABELS, INDICES, 3, seed=3, first_epoch=0)):
        indices = np.round(batch_images[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(batch_images, to_unit_range(PIXELS[indices]))
        assert np.array_equal(batch_labels, LABELS[indices])


def test_a_resumed_run_sees_the_batches_of_an_uninterrupted_one(images):
    whole = batch_indices(training_batches(images, LABELS, INDICES, 3, seed=5, first_epoch=0), epochs=4)
    from_epoch_2 = batch_indices(training_batches(images, LABELS, INDICES, 3, seed=5, first_epoch=2), epochs=2)
    assert from_epoch_2 == whole[4:]


def test_each_process_reads_its_part_of_every_batch_and_the_parts_make_the_whole(images):
    whole = batch_indices(training_batches(images, LABELS, INDICES, 2, seed=2, first_epoch=0, multiple=2), epochs=2)
    parts = [batch_indices(training_batches(images, LABELS, INDICES, 2, seed=2, first_epoch=0, shard=Shard(index, 2),
                                            multiple=2), epochs=2) for index in range(2)]
    assert [len(batch) for batch in whole] == [2, 2, 2] * 2  # 7 images: whole batches of 2
    assert [first + second for first, second in zip(*parts)] == whole
    with pytest.raises(ValueError, match="a batch of 3 images does not split evenly over 2 processes"):
        training_batches(images, LABELS, INDICES, 3, seed=2, first_epoch=0, shard=Shard(0, 2))[0]


def test_a_set_smaller_than_a_batch_is_one_batch_cut_to_a_multiple_of_the_devices(images):
    batches = batch_indices(training_batches(images, LABELS, INDICES, 8, seed=2, first_epoch=0, multiple=2), epochs=1)
    assert [len(batch) for batch in batches] == [6]
    assert whole_batches(7, 8) == 7 and whole_batches(20, 8) == 16  # one device: the set, or whole batches


def test_short_passes_are_read_in_the_training_thread_and_long_ones_by_keras_workers(images):
    assert ordered_batches(images, LABELS, 1, indices=np.arange(THREADED_MIN_BATCHES - 1) % 7).workers == 1
    assert ordered_batches(images, LABELS, 1, indices=np.arange(THREADED_MIN_BATCHES) % 7).workers == PARALLEL_READS


def test_ordered_batches_keep_index_order(images):
    batches = ordered_batches(images, LABELS, 4, indices=np.array([1, 4, 7]))
    assert batch_indices(batches) == [[1, 4, 7]]
    images_only = [batch[0] for batch in fit_batches(ordered_batches(images, None, 4))]
    assert [len(batch) for batch in images_only] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate(images_only), to_unit_range(PIXELS))


def test_reading_needs_no_more_memory_than_a_batch(tmp_path):
    """A split far larger than one read: reading every row, a batch at a time, maps and keeps none of it."""
    count, shape = 2000, (64, 64, 3)  # 24 MiB on disk
    chunks = (np.full((100, *shape), i % 256, np.uint8) for i in range(count // 100))
    save_split(tmp_path, "big", np.zeros((count, 1), np.float32), chunks, shape)
    images = StoredImages(tmp_path / "big/images.npy")
    resident_before = resident_mib()
    for start in range(0, count, 50):
        assert images[np.arange(start, start + 50)].shape == (50, *shape)
    assert resident_mib() - resident_before < 8


def resident_mib():
    """This process's resident memory now (Linux), in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
