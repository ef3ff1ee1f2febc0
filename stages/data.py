"""The processed splits that preprocess writes and every later stage reads, a batch at a time.

A split is <processed_dir>/<split>/images.npy, uint8 pixels (N, S, S, 3), and labels.npy, float32
(N, 1) 0/1 or one-hot (N, C). Images are written in chunks and read by rows, so no stage holds a
whole split: what fits on disk can be trained on.
"""

from pathlib import Path

import numpy as np

from stages.images import to_unit_range

IMAGE_DTYPE = np.uint8


class DataError(ValueError):
    """A processed split that is missing, unreadable or not what preprocess writes; the message says the mend."""


def split_files(processed_dir, split):
    """The images and labels files of one split."""
    directory = Path(processed_dir) / split
    return [directory / "images.npy", directory / "labels.npy"]


def save_split(processed_dir, split, labels, image_chunks, image_shape):
    """Write one split: labels (N, width) and the images, from chunks of uint8 pixels as they come.

    Plain .npy files, unlike .npz archives, hold no timestamps: the same data give the same bytes,
    so DVC sees an unchanged output and the stages after it do not re-run.
    """
    images_path, labels_path = split_files(processed_dir, split)
    images_path.parent.mkdir(parents=True, exist_ok=True)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(IMAGE_DTYPE)), "fortran_order": False,
              "shape": (len(labels), *image_shape)}
    written = 0
    with open(images_path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for chunk in image_chunks:
            if chunk.dtype != IMAGE_DTYPE or chunk.shape[1:] != tuple(image_shape):
                raise ValueError(f"{images_path}: a chunk of {chunk.dtype} {chunk.shape[1:]}, "
                                 f"expected uint8 {tuple(image_shape)}")
            file.write(np.ascontiguousarray(chunk).data)
            written += len(chunk)
    if written != len(labels):
        raise ValueError(f"{images_path}: {written} images written for {len(labels)} labels")
    np.save(labels_path, labels)


class StoredImages:
    """A split's images on disk, read by rows: `images[rows]` is float32 model input in [0, 1].

    Nothing is loaded or memory-mapped (mapped pages would stay in the process's memory): each read
    opens the file and reads the rows' bytes, one read per run of consecutive rows, so memory holds
    the batches being read, whatever the split's size. Safe to read from several threads at once.
    """

    def __init__(self, path):
        header = np.load(path, mmap_mode="r")  # reads the header; fails on a truncated file
        self.path, self.shape, self.dtype = Path(path), header.shape, header.dtype
        self._offset, self._row_bytes = header.offset, int(np.prod(self.shape[1:])) * self.dtype.itemsize
        del header

    def __len__(self):
        return self.shape[0]

    def pixels(self, rows):
        """The stored pixels of the rows (indices, in the order given)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        batch = np.empty((len(rows), *self.shape[1:]), self.dtype)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows {rows.min()}..{rows.max()} outside {self.path}'s {len(self)} images")
        buffer = memoryview(batch.reshape(-1).view(np.uint8))
        run_starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)  # where a run of consecutive rows begins
        with open(self.path, "rb", buffering=0) as file:
            for start, end in zip(run_starts, [*run_starts[1:], len(rows)]):
                file.seek(self._offset + int(rows[start]) * self._row_bytes)
                part = buffer[start * self._row_bytes: end * self._row_bytes]
                if file.readinto(part) != len(part):
                    raise DataError(f"{self.path} ended early: run `dvc repro` to rebuild it")
        return batch

    def __getitem__(self, key):
        rows = np.arange(len(self))[key]
        images = to_unit_range(self.pixels(np.atleast_1d(rows)))
        return images[0] if np.ndim(rows) == 0 else images


def read_split(processed_dir, split):
    """(StoredImages, labels) of a split as save_split wrote it, unchecked."""
    images_path, labels_path = split_files(processed_dir, split)
    return StoredImages(images_path), np.load(labels_path)


def load_split(dataset, split):
    """(StoredImages, labels) of a dataset's processed split, checked against what preprocess writes for it.

    A missing, truncated or inconsistent file is a DataError naming the file, what was expected and
    what was found; DVC sees such a file as a changed output and rebuilds it.
    """
    mend = f"run `dvc repro preprocess@{dataset.name}` to rebuild it"
    images_path, labels_path = split_files(dataset.processed_dir, split)
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DataError(f"{path} is missing: {mend}")
    arrays = []
    for path, read in ((images_path, StoredImages), (labels_path, np.load)):
        try:
            arrays.append(read(path))
        except (ValueError, OSError, EOFError) as error:
            raise DataError(f"{path} is not a readable .npy array ({error}): {mend}") from error
    images, labels = arrays
    size, width = dataset.image_size, label_width(dataset.num_classes)
    if images.dtype != IMAGE_DTYPE or images.shape[1:] != (size, size, 3):
        raise DataError(f"{images_path}: expected uint8 images of {size}x{size}x3, found {images.dtype} "
                        f"{'x'.join(map(str, images.shape[1:]))}: {mend}")
    if labels.dtype != np.float32 or labels.ndim != 2 or labels.shape[1] != width:
        raise DataError(f"{labels_path} has labels {labels.shape[1] if labels.ndim == 2 else labels.shape} wide, "
                        f"but params.yaml declares {dataset.num_classes} classes for '{dataset.name}' "
                        f"(float32 labels {width} wide): {mend}")
    if len(images) != len(labels):
        raise DataError(f"{labels_path}: expected {len(images)} labels, one per image of {images_path.name}, "
                        f"found {len(labels)}: {mend}")
    return images, labels


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
