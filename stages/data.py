"""Reading the processed splits that preprocess wrote, for every stage after it."""

import numpy as np


class DataError(ValueError):
    """A processed split that is missing, unreadable or not what preprocess writes; the message says the mend."""


def save_split(processed_dir, split, images, labels):
    """Write <processed_dir>/<split>/images.npy and labels.npy.

    Plain .npy files, unlike .npz archives, hold no timestamps: the same data gives the same bytes,
    so DVC sees an unchanged output and the stages after it do not re-run.
    """
    directory = processed_dir / split
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "images.npy", images)
    np.save(directory / "labels.npy", labels)


def split_files(processed_dir, split):
    """The files save_split writes for one split."""
    directory = processed_dir / split
    return [directory / "images.npy", directory / "labels.npy"]


def read_split(processed_dir, split, mmap_mode=None):
    """(images, labels) as save_split wrote them; mmap_mode="r" maps the files instead of reading them."""
    images_path, labels_path = split_files(processed_dir, split)
    return np.load(images_path, mmap_mode=mmap_mode), np.load(labels_path, mmap_mode=mmap_mode)


def load_split(dataset, split, mmap_mode=None):
    """(images, labels) of a dataset's processed split, checked against what preprocess writes for it.

    A missing, truncated or inconsistent file is a DataError naming the file, what was expected and
    what was found; DVC sees such a file as a changed output and rebuilds it.
    """
    mend = f"run `dvc repro preprocess@{dataset.name}` to rebuild it"
    images_path, labels_path = split_files(dataset.processed_dir, split)
    arrays = []
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DataError(f"{path} is missing: {mend}")
        try:
            arrays.append(np.load(path, mmap_mode=mmap_mode))
        except (ValueError, OSError, EOFError) as error:
            raise DataError(f"{path} is not a readable .npy array ({error}): {mend}") from error
    images, labels = arrays
    size, width = dataset.image_size, label_width(dataset.num_classes)
    if images.dtype != np.float32 or images.shape[1:] != (size, size, 3):
        raise DataError(f"{images_path}: expected float32 images of {size}x{size}x3, found {images.dtype} "
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
