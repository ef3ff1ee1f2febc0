"""params.yaml checks: every bad dataset block is refused with the field it got wrong."""

import copy

import pytest
from helpers import CROP, REPO_ROOT, dataset_block

from stages.config import ParamsError, dataset_spec, load_params, model_spec

GOOD = {"split_seed": 1, "seeds": [1], "datasets": {"tiny": dataset_block({"url": "somewhere"}, {"a": "a", "b": "b"})}}
PIN = {"file": "https://example.org/yunet.onnx", "mirror": "yunet.onnx", "sha256": "0" * 64}


def with_change(path, value):
    """GOOD with one dotted field replaced (or removed when value is ...)."""
    params = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    block = params
    for key in parents:
        block = block[key]
    if value is ...:
        del block[last]
    else:
        block[last] = value
    return params


def test_good_block_is_accepted():
    spec = dataset_spec(GOOD, "tiny")
    assert spec.source_kind == "folders" and spec.class_names == ["a", "b"] and spec.split_seed == 1
    assert spec.crop is None


def test_a_face_step_and_its_detector_are_read():
    params = with_change("datasets.tiny.crop", dict(CROP))
    params["datasets"]["tiny"]["face_detector"] = dict(PIN)
    spec = dataset_spec(params, "tiny")
    assert spec.crop == CROP and spec.face_detector == PIN
    assert spec.face_detector_path.as_posix() == "data/raw/tiny/face_detector.onnx"


@pytest.mark.parametrize("path, value, expected", [
    ("datasets.tiny.test_fraction", 1.5, "datasets.tiny.test_fraction"),
    ("datasets.tiny.test_fraction", 0, "datasets.tiny.test_fraction"),
    ("datasets.tiny.image_size", -64, "datasets.tiny.image_size must be a positive integer"),
    ("datasets.tiny.image_size", 6.4, "datasets.tiny.image_size"),
    ("datasets.tiny.max_per_class", 0, "datasets.tiny.max_per_class"),
    ("datasets.tiny.fingerprint", "md5:abc", "datasets.tiny.fingerprint"),
    ("datasets.tiny.classes", {"only": "one"}, "datasets.tiny.classes must map at least two"),
    ("datasets.tiny.classes", {"a": "x", "b": "x"}, "two classes share a folder"),
    ("datasets.tiny.source", {"path": "x"}, "datasets.tiny.source needs either 'url'"),
    ("datasets.tiny.source", {"url": "x", "mirorr": "y"}, "unknown key(s) mirorr"),
    ("datasets.tiny.source", {"train": "x.h5"}, "datasets.tiny.source.test is missing"),
    ("datasets.tiny.image_sise", 64, "unknown key(s) image_sise"),
    ("datasets.tiny.classes", ..., "datasets.tiny.classes is missing"),
    ("datasets.tiny.test_fraction", ..., "datasets.tiny.test_fraction must be a number"),
    ("split_seed", "forty-two", "split_seed must be an integer"),
    ("datasets.tiny.crop", ..., "datasets.tiny.crop is missing: set it, or null for no face step"),
    ("datasets.tiny.crop", {"side": 2.0}, "datasets.tiny.crop: missing centre, colour, detection_size, min_score"),
    ("datasets.tiny.crop", {**CROP, "colour": "sepia"}, "datasets.tiny.crop.colour must be one of grey, rgb"),
    ("datasets.tiny.crop", {**CROP, "min_score": 1.5}, "datasets.tiny.crop.min_score must be a number between"),
    ("datasets.tiny.crop", {**CROP, "side": 0}, "datasets.tiny.crop.side must be a positive number"),
    ("datasets.tiny.crop", {**CROP, "centre": "mid"}, "datasets.tiny.crop.centre must be a number"),
])
def test_bad_block_names_the_field(path, value, expected):
    with pytest.raises(ParamsError) as error:
        dataset_spec(with_change(path, value), "tiny")
    assert expected in str(error.value)


@pytest.mark.parametrize("change, expected", [
    ({"face_detector": None}, "datasets.tiny.crop needs datasets.tiny.face_detector"),
    ({"face_detector": {**PIN, "sha256": "abc"}}, "datasets.tiny.face_detector.sha256 must be the file's 64 hex"),
    ({"face_detector": {**PIN, "url": "x"}}, "datasets.tiny.face_detector: unknown key(s) url"),
])
def test_a_face_step_needs_a_pinned_detector(change, expected):
    params = with_change("datasets.tiny.crop", dict(CROP))
    params["datasets"]["tiny"].update(change)
    with pytest.raises(ParamsError) as error:
        dataset_spec(params, "tiny")
    assert expected in str(error.value)


def test_h5_classes_must_be_label_ids():
    params = with_change("datasets.tiny.source", {"train": "a.h5", "test": "b.h5"})
    with pytest.raises(ParamsError, match="datasets.tiny.classes.a must be the class's integer label id"):
        dataset_spec(params, "tiny")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ParamsError, match="unknown dataset 'huge': params.yaml defines tiny"):
        dataset_spec(GOOD, "huge")


def test_h5_source_needs_no_test_fraction():
    params = with_change("datasets.tiny.source", {"train": "a.h5", "test": "b.h5"})
    params["datasets"]["tiny"]["classes"] = {"a": 0, "b": 1}
    del params["datasets"]["tiny"]["test_fraction"]
    spec = dataset_spec(params, "tiny")
    assert spec.source_kind == "h5" and spec.test_fraction is None


def test_every_block_of_the_projects_params_passes_the_checks():
    params = load_params(REPO_ROOT / "params.yaml")
    for name in params["datasets"]:
        dataset_spec(params, name)
    for name in params["models"]:
        model_spec(params, name)


def with_model(seeds):
    params = copy.deepcopy(GOOD)
    params["seeds"] = seeds
    params["train"] = load_params(REPO_ROOT / "params.yaml")["train"]
    params["models"] = {"tiny_cnn": {"dataset": "tiny", "builder": "happy_cnn"}}
    return params


def test_a_model_trains_once_per_seed_each_run_with_its_own_files():
    params = with_model([11, 12])
    first, second = model_spec(params, "tiny_cnn"), model_spec(params, "tiny_cnn", 12)
    assert first.seed == 11, "by default the first training seed"
    assert second.seed == 12 and second.dataset.split_seed == first.dataset.split_seed == 1
    paths = ("model_path", "report_path", "run_path", "metrics_path", "eval_dir", "resume_dir", "live_dir")
    assert all(getattr(first, path) != getattr(second, path) for path in paths)
    assert str(second.model_path) == "models/tiny_cnn/12.keras" and second.run_name == "tiny_cnn seed 12"


@pytest.mark.parametrize("seeds, expected", [
    (None, "seeds must be a non-empty list of integers, got None"),
    ([], "seeds must be a non-empty list of integers, got []"),
    ([1, "two"], "each of seeds must be an integer, got 'two'"),
    ([1, 2, 1], "seeds must not repeat a seed, got [1, 2, 1]"),
])
def test_bad_seeds_are_named(seeds, expected):
    with pytest.raises(ParamsError) as error:
        model_spec(with_model(seeds), "tiny_cnn")
    assert expected in str(error.value)
