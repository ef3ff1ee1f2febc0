"""preprocess stage: decode data/raw/<dataset>/ into normalised train and test arrays.

Writes data/processed/<dataset>/{train,test}/{images,labels}.npy (images float32 in [0, 1]; labels an (m, 1)
0/1 column for two classes, one-hot (m, C) otherwise) and classes.json, plus
reports/data/<dataset>/summary.json (image counts, a DVC metric), details.json (classes, shapes,
skipped files) and samples.png.

    python -m stages.preprocess <dataset>
"""

import logging

import h5py
import numpy as np

from stages.cli import exit_on, parse_stage_arguments
from stages.config import ParamsError, dataset_spec, load_params
from stages.data import encode_labels, save_split
from stages.files import staged_path, write_json
from stages.images import UNREADABLE_IMAGE_ERRORS, array_to_model_input, load_image
from stages.plots import image_grid
from stages.splits import SplitError, stratified_holdout

log = logging.getLogger("preprocess")


class PreprocessError(RuntimeError):
    """Raw data that cannot be turned into a dataset."""


def preprocess_dataset(spec):
    """Read spec.raw_dir, write the processed splits and the data report; return the summary."""
    rng = np.random.default_rng(spec.seed)
    if spec.source_kind == "h5":
        splits, available, skipped = read_h5_pair(spec)
    else:
        images, labels, available, skipped = read_class_folders(spec, rng)
        try:
            test_indices = stratified_holdout(labels, spec.test_fraction, spec.seed)
        except SplitError as error:
            raise PreprocessError(f"{spec.name}: test split: {error}") from error
        is_test = np.zeros(len(labels), dtype=bool)
        is_test[test_indices] = True
        train_order, test_order = rng.permutation(np.flatnonzero(~is_test)), rng.permutation(test_indices)
        splits = {"train": (images[train_order], labels[train_order]), "test": (images[test_order], labels[test_order])}
    for split, (images, _) in splits.items():
        if len(images) == 0:
            raise PreprocessError(f"the {split} split is empty: too few readable images in {spec.raw_dir}")

    external = read_external_sets(spec)
    with staged_path(spec.processed_dir, directory=True) as staging:
        for split, (images, labels) in [*splits.items(), *((f"external/{name}", data) for name, data in external.items())]:
            save_split(staging, split, images, encode_labels(labels, spec.num_classes))
        write_json(staging / "classes.json", spec.class_names)
    summary, details = summarize(spec, splits, available, skipped)
    for name, (images, labels) in external.items():
        summary.setdefault("external", {})[name] = split_counts(spec, labels)
    write_json(spec.reports_dir / "summary.json", summary)
    write_json(spec.reports_dir / "details.json", details)
    plot_samples(spec, *splits["train"], spec.reports_dir / "samples.png")
    return summary


def read_class_folders(spec, rng):
    """Decode data/raw/<dataset>/<class>/*, at most max_per_class per class chosen by the seed.

    Returns images (N, S, S, 3) float32, class indices (N,), images available per class and the
    skipped files. Unreadable files are skipped with a warning and replaced by the next file.
    """
    images, labels, available, skipped = [], [], {}, []
    for class_index, class_name in enumerate(spec.class_names):
        folder = spec.raw_dir / class_name
        if not folder.is_dir():
            raise PreprocessError(f"class folder {folder} is missing: run the download stage first")
        files = sorted(path for path in folder.rglob("*") if path.is_file())
        available[class_name] = len(files)
        wanted = spec.max_per_class or len(files)
        kept = 0
        for path in (files[i] for i in rng.permutation(len(files))):
            if kept == wanted:
                break
            try:
                images.append(load_image(path, spec.image_size))
            except UNREADABLE_IMAGE_ERRORS as error:
                log.warning("%s: skipping unreadable image %s (%s)", spec.name, path, error)
                skipped.append(path.as_posix())
                continue
            labels.append(class_index)
            kept += 1
        log.info("%s: class %s: %d of %d images", spec.name, class_name, kept, len(files))
    shape = (0, spec.image_size, spec.image_size, 3)
    return (np.stack(images) if images else np.zeros(shape, np.float32)), np.array(labels, dtype=np.int64), \
        available, skipped


def read_h5_pair(spec):
    """Read course-layout train.h5 and test.h5: the files define the split."""
    splits = {split: read_course_h5(spec, spec.raw_dir / f"{split}.h5", split, spec.classes)
              for split in ("train", "test")}
    return splits, {split: len(images) for split, (images, _) in splits.items()}, []


def read_course_h5(spec, path, split, classes):
    """(images, class indices) of a course-layout HDF5 file; `classes` maps class names to its label ids."""
    index_of_label = {label: spec.class_names.index(name) for name, label in classes.items()}
    try:
        with h5py.File(path, "r") as handle:
            pixels = handle[f"{split}_set_x"][()]
            file_labels = handle[f"{split}_set_y"][()].reshape(-1)
    except (OSError, KeyError) as error:
        raise PreprocessError(f"{path} is missing or unreadable ({error}): run `dvc repro download@{spec.name}` "
                              "to fetch it again") from error
    images = np.stack([array_to_model_input(image, spec.image_size) for image in pixels])
    return images, np.array([index_of_label[label] for label in file_labels.tolist()], dtype=np.int64)


def read_external_sets(spec):
    """{name: (images, class indices)} of the dataset's external test sets, as download left them."""
    return {name: read_course_h5(spec, spec.raw_dir / "external" / f"{name}.h5", "test", external["classes"])
            for name, external in spec.external.items()}


def summarize(spec, splits, available, skipped):
    """The data report: (counts per class and split, a DVC metric; classes, shapes and skipped files)."""
    summary = {"available": available, "skipped": len(skipped)}
    details = {"dataset": spec.name, "source_kind": spec.source_kind, "seed": spec.seed,
               "classes": spec.class_names, "skipped_files": skipped}
    for split, (images, labels) in splits.items():
        summary[split] = split_counts(spec, labels)
        details[split] = {"image_shape": list(images.shape[1:]),
                          "label_shape": list(encode_labels(labels[:1], spec.num_classes).shape[1:])}
    return summary, details


def split_counts(spec, labels):
    return {"total": int(len(labels)),
            "per_class": {name: int(np.sum(labels == index)) for index, name in enumerate(spec.class_names)}}


def plot_samples(spec, images, labels, path):
    """One labelled training image per class, so a person can check the data at a glance."""
    chosen, titles = [], []
    for class_index, class_name in enumerate(spec.class_names):
        matches = np.flatnonzero(labels == class_index)
        if len(matches):
            chosen.append(images[matches[0]])
            titles.append(class_name if class_name == str(class_index) else f"{class_index}: {class_name}")
    image_grid(chosen, titles, f"{spec.name}: one training image per class", path)


def main(argv=None):
    args = parse_stage_arguments(__doc__, argv, dataset="a key of the datasets section of params.yaml")
    with exit_on(f"preprocess {args.dataset}", PreprocessError, ParamsError):
        spec = dataset_spec(load_params(), args.dataset)
        summary = preprocess_dataset(spec)
    log.info("%s: wrote %s: train %d, test %d images of %s; %d unreadable files skipped",
             spec.name, spec.processed_dir, summary["train"]["total"], summary["test"]["total"],
             f"{spec.image_size}x{spec.image_size}x3", summary["skipped"])


if __name__ == "__main__":
    main()
