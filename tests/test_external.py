"""External test sets: course-layout HDF5 files from elsewhere, fetched, converted and scored, with clear errors."""

import hashlib
import json

import numpy as np
import pytest
from helpers import (
    CROP, TRAIN_DEFAULTS, dataset_block, face_detector_pin, leftovers, needs_face_detector,
    run_stage, write_course_h5, write_image_folders, write_params)

from stages import download, evaluate, preprocess
from stages.config import ParamsError, dataset_spec, load_params, model_spec
from stages.models import get_builder, save_model

CLASSES = {"red": "red", "green": "green", "blue": "blue"}


def write_external(path, labels, seed=0):
    """A course-layout test file with label ids 10, 20, 30 (green, blue, red: not the dataset's order)."""
    images = np.random.default_rng(seed).integers(0, 256, size=(len(labels), 12, 12, 3), dtype=np.uint8)
    return write_course_h5(path, "test", images, labels, np.array([10, 20, 30]))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def with_external(project, tmp_path):
    """A folder dataset of three classes and one external set, `elsewhere`, pinned by its sha256."""
    source = write_image_folders(tmp_path / "source", {"red": 8, "green": 8, "blue": 8})
    external_file = write_external(tmp_path / "elsewhere.h5", [10, 20, 30, 30, 10, 20])
    external = {"elsewhere": {"file": str(external_file), "classes": {"green": 10, "blue": 20, "red": 30},
                              "sha256": sha256(external_file)}}
    write_params(project, {"tiny": dataset_block({"url": str(source)}, CLASSES, image_size=8, external=external)})
    return external_file


def test_external_set_is_fetched_converted_and_counted(project, with_external):
    assert run_stage(download, "tiny") is None
    assert (project / "data/raw/tiny/external/elsewhere.h5").read_bytes() == with_external.read_bytes()
    record = json.loads((project / "data/raw/tiny.json").read_text())
    assert record["external_sha256"] == {"elsewhere": sha256(with_external)}
    assert run_stage(preprocess, "tiny") is None

    labels = np.load(project / "data/processed/tiny/external/elsewhere/labels.npy")
    images = np.load(project / "data/processed/tiny/external/elsewhere/images.npy")
    assert images.shape == (6, 8, 8, 3) and images.dtype == np.uint8
    # file ids 10, 20, 30 are green, blue, red: classes 1, 2, 0 of the dataset
    np.testing.assert_array_equal(labels.argmax(axis=1), [1, 2, 0, 0, 1, 2])
    summary = json.loads((project / "reports/data/tiny/summary.json").read_text())
    assert summary["external"] == {"elsewhere": {"total": 6, "per_class": {"red": 2, "green": 2, "blue": 2}}}


def test_external_set_through_the_local_copy(project, tmp_path, monkeypatch, with_external):
    params = load_params()
    params["datasets"]["tiny"]["external"]["elsewhere"].update(file="https://example.org/elsewhere.h5",
                                                                mirror="copies/elsewhere.h5")
    (tmp_path / "local/copies").mkdir(parents=True)
    (tmp_path / "local/copies/elsewhere.h5").write_bytes(with_external.read_bytes())
    write_params(project, params["datasets"])
    monkeypatch.setenv("LOCAL_DATA_DIR", str(tmp_path / "local"))
    # The dataset's own source is local: only the external file is "remote", read from the copy.
    assert run_stage(download, "tiny") is None
    assert (project / "data/raw/tiny/external/elsewhere.h5").is_file()


@pytest.mark.parametrize("damage, message", [
    ("missing", "datasets.tiny.external.elsewhere: the file {path} does not exist"),
    ("other bytes", "datasets.tiny.external.elsewhere: {path} has sha256"),
    ("not hdf5", "datasets.tiny.external.elsewhere: {path} has sha256"),
    ("unknown label", "has labels [40] that no class in params.yaml maps to"),
])
def test_a_missing_or_unreadable_external_file_is_a_clear_error(project, with_external, damage, message):
    if damage == "missing":
        with_external.unlink()
    elif damage == "other bytes":
        write_external(with_external, [10, 20, 30], seed=1)
    elif damage == "not hdf5":
        with_external.write_text("<html>not the data</html>")
    else:
        write_external(with_external, [10, 40])
        params = load_params()
        params["datasets"]["tiny"]["external"]["elsewhere"]["sha256"] = sha256(with_external)
        write_params(project, params["datasets"])

    error = run_stage(download, "tiny")

    assert error is not None and error.startswith("download tiny: error: ") and "\n" not in error
    assert message.format(path=with_external) in error
    assert leftovers(project / "data/raw") == [], "nothing is written"


def test_external_classes_must_be_the_datasets(project, with_external):
    params = load_params()
    params["datasets"]["tiny"]["external"]["elsewhere"]["classes"] = {"red": 30, "purple": 40}
    with pytest.raises(ParamsError, match="datasets.tiny.external.elsewhere.classes: purple not among"):
        dataset_spec(params, "tiny")


@pytest.fixture
def evaluated_inputs(project, with_external):
    return prepare_evaluation(project)


def prepare_evaluation(project):
    """The data stages run, a (random) model saved where train puts it."""
    assert run_stage(download, "tiny") is None and run_stage(preprocess, "tiny") is None
    params = load_params()
    params.update(train=dict(TRAIN_DEFAULTS, batch_size=4, epochs=1),
                  models={"tiny_cnn": {"dataset": "tiny", "builder": "signs_cnn"}})
    (project / "params.yaml").write_text(json.dumps(params))
    spec = model_spec(load_params(), "tiny_cnn")
    model = get_builder("signs_cnn")((8, 8, 3), 3)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])  # as train saves it
    model.optimizer.build(model.trainable_variables)
    save_model(model, spec.model_path)
    return spec


def test_evaluate_scores_each_external_set(project, evaluated_inputs):
    assert run_stage(evaluate, "tiny_cnn") is None

    metrics = json.loads((project / evaluated_inputs.metrics_path).read_text())
    external = metrics["external"]["elsewhere"]
    assert external["test_images"] == 6 and 0.0 <= external["accuracy"] <= 1.0
    assert external["ci95"]["accuracy"]["low"] <= external["accuracy"] <= external["ci95"]["accuracy"]["high"]
    assert set(external["per_class"]) == set(CLASSES)
    assert (project / evaluated_inputs.eval_dir / "gradcam_external.png").is_file()
    rows = json.loads((project / evaluated_inputs.eval_dir / "predictions_external.json").read_text())["elsewhere"]
    labels = np.load(project / "data/processed/tiny/external/elsewhere/labels.npy")
    assert [row["actual"] for row in rows] == [evaluated_inputs.dataset.class_names[i] for i in labels.argmax(axis=1)]
    assert np.mean([row["actual"] == row["predicted"] for row in rows]) == pytest.approx(external["accuracy"])
    names = evaluated_inputs.dataset.class_names
    for row in rows:  # what compare's ensembles average
        assert sum(row["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert names[int(np.argmax(row["probabilities"]))] == row["predicted"]


def test_evaluate_with_a_damaged_external_set_writes_nothing(project, evaluated_inputs):
    (project / "data/processed/tiny/external/elsewhere/labels.npy").write_bytes(b"damaged")

    error = run_stage(evaluate, "tiny_cnn")

    assert error.startswith("evaluate tiny_cnn: error: data/processed/tiny/external/elsewhere/labels.npy is not a "
                            "readable .npy array")
    assert "run `dvc repro preprocess@tiny` to rebuild it" in error
    assert not (project / "reports/metrics").exists() and not (project / "reports/eval").exists()


@needs_face_detector
def test_with_a_face_step_evaluate_also_scores_the_external_photos_whole(project, with_external):
    params = load_params()
    params["datasets"]["tiny"].update(crop=dict(CROP), face_detector=face_detector_pin())
    (project / "params.yaml").write_text(json.dumps(params))
    spec = prepare_evaluation(project)

    assert run_stage(evaluate, "tiny_cnn") is None

    metrics = json.loads((project / spec.metrics_path).read_text())
    assert metrics["external"]["elsewhere"]["test_images"] == metrics["external_whole"]["elsewhere"]["test_images"] == 6
    summary = json.loads((project / "reports/data/tiny/summary.json").read_text())
    assert summary["faces_found"]["external/elsewhere"] == {"found": 0, "missed": 6}  # noise: no faces
