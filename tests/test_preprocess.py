"""The preprocess stage: arrays, labels, split, determinism, skipped files, reports."""

import json

import numpy as np
import pytest
import shutil

from helpers import (
    CROP, SHARED_FACE_DETECTOR, dataset_block, drawn_face, face_detector_pin, needs_face_detector, write_course_h5,
    write_image_folders, write_params)
from PIL import Image

from stages import preprocess
from stages.config import DATA_REPORTS_DIR, PROCESSED_DIR, dataset_spec, load_params
from stages.data import read_split
from stages.images import frame_pixels, load_pixels, to_pixels, to_unit_range

THREE_CLASSES = {"red": "red", "green": "green", "blue": "blue"}


def make_raw(project, name, images_per_class, mode="RGB", size=(20, 16)):
    """Lay out data/raw/<name>/<class>/ as the download stage leaves it."""
    return write_image_folders(project / "data" / "raw" / name, images_per_class, size=size, mode=mode)


def run_preprocess(name):
    preprocess.main([name])
    processed = PROCESSED_DIR / name
    stored = {split: read_split(processed, split) for split in ("train", "test")}
    train, test = ({"stored": images, "images": images[:], "labels": labels} for images, labels in stored.values())
    summary, details = (json.loads((DATA_REPORTS_DIR / name / f"{report}.json").read_text())
                        for report in ("summary", "details"))
    return train, test, {**summary, "details": details}


@pytest.fixture
def three_classes(project):
    make_raw(project, "tiny", {"red": 8, "green": 12, "blue": 20})
    write_params(project, {"tiny": dataset_block({"url": "unused"}, THREE_CLASSES, test_fraction=0.25)})
    return project


def test_multiclass_arrays_shapes_dtypes_range_and_one_hot(three_classes):
    train, test, summary = run_preprocess("tiny")

    for split, expected_total in ((train, 30), (test, 10)):
        images, labels = split["images"], split["labels"]
        assert split["stored"].shape == (expected_total, 8, 8, 3) and split["stored"].dtype == np.uint8
        assert images.shape == (expected_total, 8, 8, 3) and images.dtype == np.float32
        assert 0.0 <= images.min() and images.max() <= 1.0 and images.max() > 0.1
        assert labels.shape == (expected_total, 3) and labels.dtype == np.float32
        assert set(np.unique(labels)) == {0.0, 1.0}
        np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    assert summary["details"]["train"] == {"image_shape": [8, 8, 3], "label_shape": [3]}
    assert json.loads((three_classes / "data/processed/tiny/classes.json").read_text()) == ["red", "green", "blue"]


def test_one_hot_column_matches_the_class_folder(three_classes):
    train, _, _ = run_preprocess("tiny")
    # Fixture classes have distinct base brightness: red darkest, blue brightest.
    brightness = train["images"].mean(axis=(1, 2, 3))
    class_of_image = train["labels"].argmax(axis=1)
    means = [brightness[class_of_image == index].mean() for index in range(3)]
    assert means[0] < means[1] < means[2]


def test_split_is_stratified(three_classes):
    train, test, summary = run_preprocess("tiny")

    assert summary["test"]["per_class"] == {"red": 2, "green": 3, "blue": 5}
    assert summary["train"]["per_class"] == {"red": 6, "green": 9, "blue": 15}
    np.testing.assert_array_equal(test["labels"].sum(axis=0), [2, 3, 5])
    np.testing.assert_array_equal(train["labels"].sum(axis=0), [6, 9, 15])


def test_binary_labels_are_one_column(project):
    make_raw(project, "faces", {"sad": 10, "happy": 10}, mode="L")
    write_params(project, {"faces": dataset_block({"url": "unused"}, {"sad": "sad", "happy": "happy"},
                                                  test_fraction=0.2)})

    train, test, summary = run_preprocess("faces")

    assert train["labels"].shape == (16, 1) and test["labels"].shape == (4, 1)
    assert set(np.unique(train["labels"])) == {0.0, 1.0}
    assert train["images"].shape[-1] == 3, "grayscale is expanded to RGB"
    assert summary["test"]["per_class"] == {"sad": 2, "happy": 2}


def test_same_seed_same_split_other_seed_other_split(three_classes):
    first, _, _ = run_preprocess("tiny")
    first_images = first["images"].copy()
    again, _, _ = run_preprocess("tiny")
    np.testing.assert_array_equal(first_images, again["images"])

    params = load_params()
    write_params(three_classes, params["datasets"], seed=params["split_seed"] + 1)
    other, _, _ = run_preprocess("tiny")
    assert other["images"].shape == first_images.shape
    assert not np.array_equal(other["images"], first_images)


def test_max_per_class_caps_each_class(project):
    make_raw(project, "tiny", {"red": 8, "green": 12, "blue": 20})
    write_params(project, {"tiny": dataset_block({"url": "unused"}, THREE_CLASSES, test_fraction=0.25,
                                                 max_per_class=8)})

    train, test, summary = run_preprocess("tiny")

    assert summary["available"] == {"red": 8, "green": 12, "blue": 20}
    assert summary["test"]["per_class"] == {"red": 2, "green": 2, "blue": 2}
    assert len(train["labels"]) + len(test["labels"]) == 24


def test_unreadable_images_are_skipped_and_counted(three_classes, caplog):
    (three_classes / "data/raw/tiny/red/garbage.jpg").write_bytes(b"this is not an image")
    good = (three_classes / "data/raw/tiny/blue/img_000.jpg").read_bytes()
    (three_classes / "data/raw/tiny/blue/truncated.jpg").write_bytes(good[: len(good) // 3])

    train, test, summary = run_preprocess("tiny")

    assert summary["skipped"] == 2
    assert sorted(summary["details"]["skipped_files"]) == ["data/raw/tiny/blue/truncated.jpg", "data/raw/tiny/red/garbage.jpg"]
    assert len(train["labels"]) + len(test["labels"]) == 40
    assert "garbage.jpg" in caplog.text


def test_summary_and_samples_picture(three_classes):
    _, _, summary = run_preprocess("tiny")

    assert summary["available"] == {"red": 8, "green": 12, "blue": 20} and summary["skipped"] == 0
    assert summary["train"]["total"] == 30 and summary["test"]["total"] == 10
    assert summary["details"]["classes"] == ["red", "green", "blue"]

    samples = three_classes / "reports/data/tiny/samples.png"
    with Image.open(samples) as picture:
        assert picture.format == "PNG" and picture.width > 100


def test_course_h5_pair_keeps_the_files_split(project):
    raw = project / "data/raw/pets"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    train_images = rng.integers(0, 256, size=(10, 64, 64, 3), dtype=np.uint8)
    write_course_h5(raw / "train.h5", "train", train_images, [0, 1] * 5, np.array([b"cat", b"dog"]))
    write_course_h5(raw / "test.h5", "test", rng.integers(0, 256, size=(4, 64, 64, 3)), [1, 1, 1, 0],
                    np.array([b"cat", b"dog"]))
    write_params(project, {"pets": dataset_block({"train": "t.h5", "test": "t.h5"}, {"cat": 0, "dog": 1},
                                                 image_size=64)})

    train, test, summary = run_preprocess("pets")

    np.testing.assert_allclose(train["images"], train_images / 255.0, atol=1e-6)
    np.testing.assert_array_equal(test["labels"].reshape(-1), [1, 1, 1, 0])
    assert summary["test"]["per_class"] == {"cat": 1, "dog": 3} and summary["train"]["total"] == 10


def test_course_h5_labels_follow_the_class_mapping(project):
    """Label ids in the files are mapped through params.yaml's classes, not taken as positions."""
    raw = project / "data/raw/pets"
    raw.mkdir(parents=True)
    images = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    for split in ("train", "test"):
        write_course_h5(raw / f"{split}.h5", split, images, [7, 3, 7], np.array([3, 7]))
    write_params(project, {"pets": dataset_block({"train": "t.h5", "test": "t.h5"}, {"cat": 7, "dog": 3})})

    train, _, _ = run_preprocess("pets")

    np.testing.assert_array_equal(train["labels"].reshape(-1), [0, 1, 0])


def test_missing_raw_data_is_a_clear_error(project):
    write_params(project, {"tiny": dataset_block({"url": "unused"}, THREE_CLASSES)})

    with pytest.raises(SystemExit, match="preprocess tiny: error: class folder .* is missing: run the download"):
        preprocess.main(["tiny"])
    assert not (project / "data/processed/tiny").exists()


def test_spec_image_size_is_applied(project):
    make_raw(project, "tiny", {"red": 4, "green": 4, "blue": 4}, size=(100, 100))
    write_params(project, {"tiny": dataset_block({"url": "unused"}, THREE_CLASSES, image_size=64)})
    spec = dataset_spec(load_params(), "tiny")

    preprocess.preprocess_dataset(spec)

    assert read_split(project / "data/processed/tiny", "train")[0].shape[1:] == (64, 64, 3)


def test_images_written_in_chunks_are_the_images_written_at_once(three_classes, monkeypatch):
    """Preprocess holds one chunk of decoded images at a time; how many must not change a byte."""
    run_preprocess("tiny")
    whole = {split: (PROCESSED_DIR / "tiny" / split / "images.npy").read_bytes() for split in ("train", "test")}
    monkeypatch.setattr(preprocess, "CHUNK_IMAGES", 7)  # 30 training images: chunks of 7, 7, 7, 7 and 2
    decoded = []
    monkeypatch.setattr(preprocess, "load_pixels",
                        lambda path, size, step=None: decoded.append(path) or load_pixels(path, size, step))
    train, _, _ = run_preprocess("tiny")
    assert {split: (PROCESSED_DIR / "tiny" / split / "images.npy").read_bytes() for split in whole} == whole
    assert len(decoded) == 2 * 40, "each image decoded once to check it and once to write it"
    np.testing.assert_array_equal(train["images"], to_unit_range(train["stored"].pixels(np.arange(30))))


@needs_face_detector
def test_a_face_step_frames_every_split_counts_the_faces_and_keeps_external_photos_whole(project):
    """Faces drawn off-centre in 96 px photos, blank photos in between; an external set of the same kinds."""
    raw = project / "data/raw/people"
    for index in range(12):
        folder = ("frown", "smile")[index % 2]
        photo = Image.new("RGB", (96, 96), (70, 110, 150)) if index % 3 == 2 else \
            drawn_face(96, centre=(60, 40 + index), scale=0.3)
        (raw / folder).mkdir(parents=True, exist_ok=True)
        photo.save(raw / folder / f"{index:02d}.png")
    external_photos = [drawn_face(96, centre=(40, 50), scale=0.3), Image.new("RGB", (96, 96), (200, 90, 40))]
    (raw / "external").mkdir()
    write_course_h5(raw / "external/elsewhere.h5", "test", np.stack([np.asarray(p) for p in external_photos]),
                    [0, 1], [b"frown", b"smile"])
    write_params(project, {"people": dataset_block(
        {"url": "unused"}, {"frown": "frown", "smile": "smile"}, test_fraction=0.25, image_size=16,
        external={"elsewhere": {"file": "unused.h5", "classes": {"frown": 0, "smile": 1}}}, crop=dict(CROP),
        face_detector=face_detector_pin())})
    shutil.copyfile(SHARED_FACE_DETECTOR, raw / "face_detector.onnx")

    train, test, summary = run_preprocess("people")

    found = summary["faces_found"]
    assert found["train"]["found"] + found["test"]["found"] == 8
    assert found["train"]["missed"] + found["test"]["missed"] == 4
    assert found["external/elsewhere"] == {"found": 1, "missed": 1}
    for split in (train, test):
        images = split["stored"].pixels(range(len(split["labels"])))
        assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()  # grey
    stored = {view: np.load(project / f"data/processed/people/{view}/elsewhere/images.npy")
              for view in ("external", "external_whole")}
    assert np.array_equal(stored["external_whole"][0], to_pixels(external_photos[0], 16))
    assert not np.array_equal(stored["external"][0], stored["external_whole"][0])
    assert np.array_equal(stored["external"][1], frame_pixels(external_photos[1], 16, None, grey=True))
