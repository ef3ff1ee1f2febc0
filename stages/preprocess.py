"""preprocess stage: decode data/raw/<dataset>/ into train and test splits of uint8 pixels.

Writes data/processed/<dataset>/{train,test}/{images,labels}.npy (images uint8 (N, S, S, 3), scaled
to [0, 1] when a stage reads them; labels an (m, 1) 0/1 column for two classes, one-hot (m, C)
otherwise) and classes.json, plus reports/data/<dataset>/summary.json (image counts, a DVC metric),
details.json (classes, shapes, storage, skipped files) and samples.png. Images are decoded and
written a chunk at a time, so memory does not grow with the dataset.

A dataset with a face step (`crop` in params.yaml, stages/faces.py) has every image framed around
its face, and summary.json counts the faces found per split. Its external sets are also stored
whole (external_whole/<name>, as without the face step), so evaluate can show the step's effect.

    python -m stages.preprocess <dataset>
"""

import logging

import h5py
import numpy as np

from stages.cli import exit_on, parse_stage_arguments
from stages.config import ParamsError, dataset_spec, load_params
from stages.data import IMAGE_DTYPE, class_indices, encode_labels, read_split, save_split
from stages.faces import FaceStepError, face_step
from stages.files import staged_path, write_json
from stages.images import UNREADABLE_IMAGE_ERRORS, array_to_pixels, load_pixels
from stages.plots import image_grid
from stages.splits import SplitError, stratified_holdout

log = logging.getLogger("preprocess")

# Images decoded before they are written: a few MiB at 64x64, and few enough writes to be quick.
CHUNK_IMAGES = 1024

# What details.json says of the stored images.
STORED_AS = "uint8 pixels 0-255 in images.npy; the stages scale them to float32 in [0, 1] as they read them"


class PreprocessError(RuntimeError):
    """Raw data that cannot be turned into a dataset."""


def preprocess_dataset(spec):
    """Read spec.raw_dir, write the processed splits and the data report; return the summary."""
    rng = np.random.default_rng(spec.split_seed)
    dataset_step = face_step(spec)  # None without a face step
    steps = {}  # split: its own FaceStep over the one detector, counting the faces that split holds

    def step_for(split):
        if dataset_step is None:
            return None
        steps[split] = dataset_step.counting_anew()
        return steps[split]

    if spec.source_kind == "h5":
        splits, available, skipped = read_h5_pair(spec, step_for)
    else:
        files, labels, available, skipped = choose_class_files(spec, rng)
        try:
            test_indices = stratified_holdout(labels, spec.test_fraction, spec.split_seed)
        except SplitError as error:
            raise PreprocessError(f"{spec.name}: test split: {error}") from error
        is_test = np.zeros(len(labels), dtype=bool)
        is_test[test_indices] = True
        train_order, test_order = rng.permutation(np.flatnonzero(~is_test)), rng.permutation(test_indices)
        splits = {split: (decoded_chunks([files[i] for i in order], spec.image_size, f"{spec.name} {split}",
                                         step_for(split)), labels[order])
                  for split, order in (("train", train_order), ("test", test_order))}
    for split, (_, labels) in splits.items():
        if len(labels) == 0:
            raise PreprocessError(f"the {split} split is empty: too few readable images in {spec.raw_dir}")

    external = {}
    for name, block in spec.external.items():
        arrays, labels = read_course_arrays(spec, spec.raw_dir / "external" / f"{name}.h5", "test", block["classes"])
        external[f"external/{name}"] = ([frame_arrays(arrays, spec.image_size, step_for(f"external/{name}"))], labels)
        if spec.crop is not None:  # the same photos without the face step, for the report's before and after
            external[f"external_whole/{name}"] = ([frame_arrays(arrays, spec.image_size)], labels)
    shape = (spec.image_size, spec.image_size, 3)
    with staged_path(spec.processed_dir, directory=True) as staging:
        for split, (chunks, labels) in {**splits, **external}.items():
            save_split(staging, split, encode_labels(labels, spec.num_classes), chunks, shape)
        write_json(staging / "classes.json", spec.class_names)
    summary, details = summarize(spec, {split: labels for split, (_, labels) in splits.items()}, available, skipped)
    for name in spec.external:
        summary.setdefault("external", {})[name] = split_counts(spec, external[f"external/{name}"][1])
    if steps:
        summary["faces_found"] = {split: step.counts() for split, step in steps.items()}
        for split, step in steps.items():
            log.info("%s: %s: a face in %d of %d images (the others judged whole)", spec.name, split, step.found,
                     step.found + step.missed)
    write_json(spec.reports_dir / "summary.json", summary)
    write_json(spec.reports_dir / "details.json", details)
    plot_samples(spec, *read_split(spec.processed_dir, "train"), spec.reports_dir / "samples.png")
    return summary


def choose_class_files(spec, rng):
    """The readable files of data/raw/<dataset>/<class>/*, at most max_per_class per class chosen by the split seed.

    Returns the files, their class indices (N,), the files available per class and the skipped
    files. Each file is decoded once here to know that it can be (its pixels are not kept, so memory
    stays small); an unreadable one is skipped with a warning and replaced by the next file.
    """
    files, labels, available, skipped = [], [], {}, []
    for class_index, class_name in enumerate(spec.class_names):
        folder = spec.raw_dir / class_name
        if not folder.is_dir():
            raise PreprocessError(f"class folder {folder} is missing: run the download stage first")
        candidates = sorted(path for path in folder.rglob("*") if path.is_file())
        available[class_name] = len(candidates)
        wanted = spec.max_per_class or len(candidates)
        kept = 0
        for path in (candidates[i] for i in rng.permutation(len(candidates))):
            if kept == wanted:
                break
            try:
                load_pixels(path, spec.image_size)
            except UNREADABLE_IMAGE_ERRORS as error:
                log.warning("%s: skipping unreadable image %s (%s)", spec.name, path, error)
                skipped.append(path.as_posix())
                continue
            files.append(path)
            labels.append(class_index)
            kept += 1
        log.debug("%s: class %s: %d of %d images", spec.name, class_name, kept, len(candidates))
    return files, np.array(labels, dtype=np.int64), available, skipped


def decoded_chunks(files, image_size, name, step=None):
    """The files' pixels, CHUNK_IMAGES images at a time, in the files' order (progress logged every 10 chunks)."""
    for number, start in enumerate(range(0, len(files), CHUNK_IMAGES), 1):
        yield np.stack([load_pixels(path, image_size, step) for path in files[start: start + CHUNK_IMAGES]])
        done = min(start + CHUNK_IMAGES, len(files))
        if number % 10 == 0 or done == len(files):
            log.info("%s: %d of %d images written", name, done, len(files))


def read_h5_pair(spec, step_for):
    """Read course-layout train.h5 and test.h5: the files define the split. step_for(split): its FaceStep or None."""
    splits = {}
    for split in ("train", "test"):
        pixels, labels = read_course_h5(spec, spec.raw_dir / f"{split}.h5", split, spec.classes, step_for(split))
        splits[split] = ([pixels], labels)
    return splits, {split: len(labels) for split, (_, labels) in splits.items()}, []


def read_course_h5(spec, path, split, classes, step=None):
    """(pixels, class indices) of a course-layout HDF5 file; `classes` maps class names to its label ids."""
    arrays, labels = read_course_arrays(spec, path, split, classes)
    return frame_arrays(arrays, spec.image_size, step), labels


def read_course_arrays(spec, path, split, classes):
    """(the file's images as stored, class indices) of a course-layout HDF5 file."""
    index_of_label = {label: spec.class_names.index(name) for name, label in classes.items()}
    try:
        with h5py.File(path, "r") as handle:
            arrays = handle[f"{split}_set_x"][()]
            file_labels = handle[f"{split}_set_y"][()].reshape(-1)
    except (OSError, KeyError) as error:
        raise PreprocessError(f"{path} is missing or unreadable ({error}): run `dvc repro download@{spec.name}` "
                              "to fetch it again") from error
    return arrays, np.array([index_of_label[label] for label in file_labels.tolist()], dtype=np.int64)


def frame_arrays(arrays, size, step=None):
    """Images as stored in a course file, as the pixels the models see (framed by the face step, if any)."""
    if not len(arrays):
        return np.zeros((0, size, size, 3), IMAGE_DTYPE)
    return np.stack([array_to_pixels(image, size, step) for image in arrays])


def summarize(spec, split_labels, available, skipped):
    """The data report: (counts per class and split, a DVC metric; classes, shapes, storage and skipped files)."""
    summary = {"available": available, "skipped": len(skipped)}
    details = {"dataset": spec.name, "source_kind": spec.source_kind, "split_seed": spec.split_seed,
               "classes": spec.class_names, "stored_as": STORED_AS, "skipped_files": skipped}
    for split, labels in split_labels.items():
        summary[split] = split_counts(spec, labels)
        details[split] = {"image_shape": [spec.image_size, spec.image_size, 3],
                          "label_shape": list(encode_labels(labels[:1], spec.num_classes).shape[1:])}
    return summary, details


def split_counts(spec, labels):
    return {"total": int(len(labels)),
            "per_class": {name: int(np.sum(labels == index)) for index, name in enumerate(spec.class_names)}}


def plot_samples(spec, images, labels, path):
    """One labelled training image per class, so a person can check the data at a glance."""
    chosen, titles = [], []
    classes = class_indices(labels)
    for class_index, class_name in enumerate(spec.class_names):
        matches = np.flatnonzero(classes == class_index)
        if len(matches):
            chosen.append(images[int(matches[0])])
            titles.append(class_name if class_name == str(class_index) else f"{class_index}: {class_name}")
    image_grid(chosen, titles, f"{spec.name}: one training image per class", path)


def main(argv=None):
    args = parse_stage_arguments(__doc__, argv, dataset="a key of the datasets section of params.yaml")
    with exit_on(f"preprocess {args.dataset}", PreprocessError, ParamsError, FaceStepError):
        spec = dataset_spec(load_params(), args.dataset)
        log.info("%s: decoding %s into %dx%d train and test splits", spec.name, spec.raw_dir, spec.image_size,
                 spec.image_size)
        summary = preprocess_dataset(spec)
    log.info("%s: wrote %s: train %d, test %d images of %s; %d unreadable files skipped",
             spec.name, spec.processed_dir, summary["train"]["total"], summary["test"]["total"],
             f"{spec.image_size}x{spec.image_size}x3", summary["skipped"])


if __name__ == "__main__":
    main()
