"""Damaged intermediate files: each stage checks what it reads and says what is wrong and how to mend it."""

import numpy as np
import pytest
from helpers import run_stage
from PIL import Image

from stages import evaluate, predict, train
from stages.config import load_params, model_spec
from stages.models import get_builder, save_model

MEND_DATA = "run `dvc repro preprocess@digits` to rebuild it"
MEND_MODEL = "run `dvc repro train@digits_cnn` to rebuild it"


def truncate(path, size):
    with open(path, "r+b") as handle:
        handle.truncate(size)


@pytest.fixture
def saved_model(tiny_project):
    """An untrained digits_cnn where the train stage puts it, and an image to classify."""
    spec = model_spec(load_params(), "digits_cnn")
    save_model(get_builder("signs_cnn")((16, 16, 3), 3), spec.model_path)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tiny_project / "red.png")
    return spec.model_path


def assert_one_clear_line(message, *parts):
    assert message is not None and "\n" not in message and "Traceback" not in message
    for part in parts:
        assert part in message, message


def test_truncated_processed_split(tiny_project):
    images = tiny_project / "data/processed/digits/train/images.npy"
    truncate(images, 1000)

    message = run_stage(train, "digits_cnn")

    assert_one_clear_line(message, "train digits_cnn: error: data/processed/digits/train/images.npy is not a "
                          "readable .npy array", MEND_DATA)
    assert not (tiny_project / "models").exists()


def test_labels_with_fewer_rows_than_images(saved_model, tiny_project):
    labels_path = tiny_project / "data/processed/digits/test/labels.npy"
    np.save(labels_path, np.load(labels_path)[:-5])

    message = run_stage(evaluate, "digits_cnn")

    assert_one_clear_line(message, "data/processed/digits/test/labels.npy: expected 12 labels, one per image of "
                          "images.npy, found 7", MEND_DATA)
    assert not (tiny_project / "reports/metrics/digits_cnn.json").exists()


def test_images_of_another_shape_or_type(tiny_project):
    images_path = tiny_project / "data/processed/digits/train/images.npy"
    np.save(images_path, (np.load(images_path) * 255).astype(np.uint8))

    message = run_stage(train, "digits_cnn")

    assert_one_clear_line(message, "images.npy: expected float32 images of 16x16x3, found uint8 16x16x3", MEND_DATA)


def test_missing_split_file(tiny_project):
    (tiny_project / "data/processed/digits/train/labels.npy").unlink()
    assert_one_clear_line(run_stage(train, "digits_cnn"), "data/processed/digits/train/labels.npy is missing",
                          MEND_DATA)


@pytest.mark.parametrize("stage, arguments, prefix", [
    (evaluate, ["digits_cnn"], "evaluate digits_cnn: error: "),
    (predict, ["digits_cnn", "red.png"], "predict: error: "),
])
def test_truncated_model_file(saved_model, tiny_project, stage, arguments, prefix):
    truncate(saved_model, 2000)

    message = run_stage(stage, *arguments)

    assert_one_clear_line(message, prefix + "models/digits_cnn.keras: expected a Keras model archive", MEND_MODEL)
    assert "File not found" not in message
    assert not (tiny_project / "reports/metrics/digits_cnn.json").exists()


def test_model_file_that_is_not_an_archive(saved_model, tiny_project):
    saved_model.write_text("not a model")
    assert_one_clear_line(run_stage(evaluate, "digits_cnn"), "models/digits_cnn.keras: expected a Keras model archive",
                          MEND_MODEL)
