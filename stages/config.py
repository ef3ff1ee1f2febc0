"""Reads params.yaml and checks a dataset block once, so every stage sees the same paths and rules."""

import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

PARAMS_FILE = Path("params.yaml")
RAW_DIR = Path("data/raw")
PROCESSED_DIR = Path("data/processed")
DATA_REPORTS_DIR = Path("reports/data")
MODELS_DIR = Path("models")
RESUME_DIR = MODELS_DIR / "resume"  # checkpoints of interrupted training runs (stages/resume.py)
TRAIN_REPORTS_DIR = Path("reports/train")
METRICS_DIR = Path("reports/metrics")
EVAL_DIR = Path("reports/eval")
RUNS_DIR = Path("reports/runs")

# Point the download stage and the transfer builder at local copies instead of the network.
LOCAL_DATA_ENV = "LOCAL_DATA_DIR"
LOCAL_WEIGHTS_ENV = "LOCAL_WEIGHTS_DIR"

FINGERPRINT_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
DATASET_KEYS = {"source", "classes", "test_fraction", "image_size", "max_per_class", "fingerprint", "external",
                "headline", "crop", "face_detector"}
CROP_KEYS = {"side", "centre", "colour", "min_score", "detection_size"}
COLOURS = ("grey", "rgb")
PIN_KEYS = {"file", "mirror", "sha256"}
HEADLINE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
EXTERNAL_KEYS = {"file", "mirror", "classes", "sha256"}
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
FOLDER_SOURCE_KEYS = {"url", "root", "mirror", "sha256"}  # sha256: of the archive a URL serves
H5_SOURCE_KEYS = {"train", "test", "mirror"}
MODEL_KEYS = {"dataset", "builder", "network", "train"}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
AUTO_SWITCH = ("auto", True, False)
BACKENDS = ("tensorflow", "jax")  # Keras backends the pipeline runs on (stages/backend.py)
DISTRIBUTIONS = ("none", "data_parallel")
# TensorFlow's strategies, replaced by Keras's own distribution API (keras-team/keras#20585: Keras 3's
# fit fails under MultiWorkerMirroredStrategy).
REMOVED_DISTRIBUTIONS = {name: "Keras's DataParallel (distribution: data_parallel, on JAX) replaces TensorFlow's "
                               "strategies, on one machine or many (docs/training.md)"
                         for name in ("one_device", "mirrored", "multi_worker")}
FINE_TUNE_KEYS = {"epochs", "layers", "learning_rate"}


class ParamsError(ValueError):
    """A params.yaml block that the pipeline cannot use; the message names the field."""


def load_params(path=PARAMS_FILE):
    """Return params.yaml as a dict."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def local_dir(variable):
    """The folder an environment variable (LOCAL_DATA_DIR, LOCAL_WEIGHTS_DIR) names, or None: use the network."""
    value = os.environ.get(variable, "").strip()
    return Path(value) if value else None


@dataclass(frozen=True)
class DatasetSpec:
    """One checked `datasets.<name>` block of params.yaml."""

    name: str
    source: dict
    classes: dict
    test_fraction: float | None
    image_size: int
    max_per_class: int | None
    fingerprint: str | None
    split_seed: int  # draws the test split and the samples shown: the same for every training seed
    external: dict  # name: {file, mirror, classes, sha256}: test-only sets from elsewhere
    headline: str = "accuracy"  # the test figure the comparison ranks this dataset's models by
    crop: dict | None = None  # the face step's settings (stages/faces.py); None: whole frames
    face_detector: dict | None = None  # {file, mirror, sha256} of the face step's detector, fetched by download

    @property
    def source_kind(self):
        """`folders` (an archive or directory of class folders) or `h5` (course HDF5 files)."""
        return "h5" if "train" in self.source else "folders"

    @property
    def class_names(self):
        return list(self.classes)

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def raw_dir(self):
        return RAW_DIR / self.name

    @property
    def raw_record(self):
        """download's record of the fetched files: what preprocess depends on in dvc.yaml."""
        return RAW_DIR / f"{self.name}.json"

    @property
    def face_detector_path(self):
        """Where download puts the face step's detector."""
        return self.raw_dir / "face_detector.onnx"

    @property
    def processed_dir(self):
        return PROCESSED_DIR / self.name

    @property
    def reports_dir(self):
        return DATA_REPORTS_DIR / self.name


def dataset_spec(params, name):
    """Check `datasets.<name>` in params and return it as a DatasetSpec."""
    block, where = _named_block(params, "datasets", name, "dataset")
    _reject_unknown_keys(block, DATASET_KEYS, where)
    for key in ("source", "classes", "image_size", "fingerprint"):
        if key not in block:
            raise ParamsError(f"{where}.{key} is missing")
    if "external" not in block:  # the download stage depends on it by name
        raise ParamsError(f"{where}.external is missing: name the dataset's external test sets, or {{}} for none")
    for key in ("crop", "face_detector"):  # as external: dvc.yaml names them, so they must be there, null for none
        if key not in block:
            raise ParamsError(f"{where}.{key} is missing: set it, or null for no face step")

    source = _check_source(block["source"], f"{where}.source")
    folders = "url" in source
    classes = _check_classes(block["classes"], "folder" if folders else "label id", f"{where}.classes")
    test_fraction = block.get("test_fraction")
    if folders or test_fraction is not None:  # HDF5 files define their own split
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
            raise ParamsError(f"{where}.test_fraction must be a number between 0 and 1, got {test_fraction!r}")
        test_fraction = float(test_fraction)
    image_size = _positive_int(block["image_size"], f"{where}.image_size")
    max_per_class = block.get("max_per_class")
    if max_per_class is not None:
        max_per_class = _positive_int(max_per_class, f"{where}.max_per_class")
    fingerprint = block["fingerprint"]
    if fingerprint is not None and not (isinstance(fingerprint, str) and FINGERPRINT_PATTERN.match(fingerprint)):
        raise ParamsError(f"{where}.fingerprint must be 'sha256:' and 64 hex digits, or null; got {fingerprint!r}")
    split_seed = _integer(params.get("split_seed"), "split_seed")
    external = _check_external(block["external"] or {}, list(classes), f"{where}.external")
    headline = block.get("headline", "accuracy")
    if headline not in HEADLINE_METRICS:
        raise ParamsError(f"{where}.headline must be one of {', '.join(HEADLINE_METRICS)}, got {headline!r}")
    crop = None if block["crop"] is None else _check_crop(block["crop"], f"{where}.crop")
    face_detector = None if block["face_detector"] is None else _check_pin(block["face_detector"],
                                                                           f"{where}.face_detector")
    if crop is not None and face_detector is None:
        raise ParamsError(f"{where}.crop needs {where}.face_detector: the detector's file, mirror and sha256")
    return DatasetSpec(name, source, classes, test_fraction, image_size, max_per_class, fingerprint, split_seed,
                       external, headline, crop, face_detector)


def _check_crop(crop, where):
    """The face step's settings: every key is needed, since each changes what the models see."""
    if not isinstance(crop, dict):
        raise ParamsError(f"{where}: expected a mapping of the face step's settings, got {crop!r}")
    _reject_unknown_keys(crop, CROP_KEYS, where)
    missing = sorted(CROP_KEYS - set(crop))
    if missing:
        raise ParamsError(f"{where}: missing {', '.join(missing)}")
    _positive_number(crop["side"], f"{where}.side")
    if isinstance(crop["centre"], bool) or not isinstance(crop["centre"], (int, float)):
        raise ParamsError(f"{where}.centre must be a number (of eye-to-mouth distances), got {crop['centre']!r}")
    _positive_int(crop["detection_size"], f"{where}.detection_size")
    if crop["colour"] not in COLOURS:
        raise ParamsError(f"{where}.colour must be one of {', '.join(COLOURS)}, got {crop['colour']!r}")
    score = crop["min_score"]
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 < score < 1:
        raise ParamsError(f"{where}.min_score must be a number between 0 and 1, got {score!r}")
    return dict(crop)


def _check_pin(pin, where):
    """A file pinned by its sha256: {file (a path or URL), mirror (its copy under a local folder), sha256}."""
    if not isinstance(pin, dict):
        raise ParamsError(f"{where}: expected the file's file, mirror and sha256, got {pin!r}")
    _reject_unknown_keys(pin, PIN_KEYS, where)
    _check_file_and_sha256(pin, where, sha256_required=True)
    return dict(pin)


def _check_file_and_sha256(block, where, sha256_required):
    """A block's `file` (a path or http(s) URL) and `sha256` (64 hex digits; null allowed unless required)."""
    if not isinstance(block.get("file"), str) or not block["file"]:
        raise ParamsError(f"{where}.file must be the file's path or http(s) URL, got {block.get('file')!r}")
    sha256 = block.get("sha256")
    if sha256 is None and not sha256_required:
        return
    if not (isinstance(sha256, str) and SHA256_PATTERN.match(sha256)):
        raise ParamsError(f"{where}.sha256 must be the file's 64 hex digits{'' if sha256_required else ', or null'}; "
                          f"got {sha256!r}")


def _check_external(external, class_names, where):
    """External test sets: each a course-layout HDF5 file whose label ids map onto some of the dataset's classes."""
    if not isinstance(external, dict):
        raise ParamsError(f"{where} must map test-set names to their blocks, got {external!r}")
    for name, block in external.items():
        here = f"{where}.{name}"
        if not isinstance(block, dict):
            raise ParamsError(f"{here}: expected a mapping, got {block!r}")
        _reject_unknown_keys(block, EXTERNAL_KEYS, here)
        _check_file_and_sha256(block, here, sha256_required=False)
        classes = _check_classes(block.get("classes"), "label id", f"{here}.classes")
        unknown = sorted(set(classes) - set(class_names))
        if unknown:
            raise ParamsError(f"{here}.classes: {', '.join(unknown)} not among the dataset's classes "
                              f"({', '.join(class_names)})")
    return {str(name): dict(block) for name, block in external.items()}


def _check_source(source, where):
    if not isinstance(source, dict):
        raise ParamsError(f"{where}: expected a mapping, got {source!r}")
    if "url" in source:
        _reject_unknown_keys(source, FOLDER_SOURCE_KEYS, where)
    elif "train" in source or "test" in source:
        _reject_unknown_keys(source, H5_SOURCE_KEYS, where)
        for key in ("train", "test"):
            if not source.get(key):
                raise ParamsError(f"{where}.{key} is missing: an HDF5 source names both a train and a test file")
    else:
        raise ParamsError(f"{where} needs either 'url' (an archive or folder of class folders) "
                          "or 'train' and 'test' (a pair of course HDF5 files)")
    for key, value in source.items():
        if value is not None and not isinstance(value, str):
            raise ParamsError(f"{where}.{key} must be a string, got {value!r}")
    if source.get("sha256") is not None and not SHA256_PATTERN.match(source["sha256"]):
        raise ParamsError(f"{where}.sha256 must be 64 hex digits, or null; got {source['sha256']!r}")
    return {key: value or "" for key, value in source.items()}


def _check_classes(classes, what, where):
    if not isinstance(classes, dict) or len(classes) < 2:
        raise ParamsError(f"{where} must map at least two class names to their {what}, got {classes!r}")
    checked = {}
    for class_name, location in classes.items():
        if what == "label id" and (isinstance(location, bool) or not isinstance(location, int)):
            raise ParamsError(f"{where}.{class_name} must be the class's integer label id in the HDF5 files, "
                              f"got {location!r}")
        if what == "folder" and not isinstance(location, (str, int)):
            raise ParamsError(f"{where}.{class_name} must be a folder name, got {location!r}")
        checked[str(class_name)] = location if what == "label id" else str(location)
    if len(set(checked.values())) != len(checked):
        raise ParamsError(f"{where}: two classes share a {what}: {checked}")
    return checked


def _named_block(params, section, name, kind):
    """(params[section][name], its dotted name); errors list what params.yaml does define."""
    blocks = params.get(section) or {}
    if name not in blocks:
        raise ParamsError(f"unknown {kind} '{name}': params.yaml defines {', '.join(sorted(blocks)) or 'none'}")
    where = f"{section}.{name}"
    if not isinstance(blocks[name], dict):
        raise ParamsError(f"{where}: expected a mapping of settings, got {blocks[name]!r}")
    return blocks[name], where


def _integer(value, where):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamsError(f"{where} must be an integer, got {value!r}")
    return value


def training_seeds(params):
    """The checked `seeds` list: each model trains once per seed (dvc.yaml's matrix)."""
    seeds = params.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise ParamsError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for seed in seeds:
        _integer(seed, "each of seeds")
    if len(set(seeds)) != len(seeds):
        raise ParamsError(f"seeds must not repeat a seed, got {seeds!r}")
    return list(seeds)


def _positive_number(value, where):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ParamsError(f"{where} must be a positive number, got {value!r}")
    return value


def _positive_int(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParamsError(f"{where} must be a positive integer, got {value!r}")
    return value


def _reject_unknown_keys(block, allowed, where):
    unknown = set(block) - allowed
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(allowed))}")


@dataclass(frozen=True)
class ModelSpec:
    """One checked `models.<name>` block, with the `train` defaults merged under its overrides."""

    name: str
    dataset: DatasetSpec
    builder: str
    network: dict
    train: dict
    seed: int  # the training seed: validation carve, initial weights, augmentation and order

    @property
    def run_name(self):
        """'<model> seed <seed>': how logs and pictures name one training run."""
        return f"{self.name} seed {self.seed}"

    @property
    def model_path(self):
        return MODELS_DIR / self.name / f"{self.seed}.keras"

    @property
    def report_path(self):
        return TRAIN_REPORTS_DIR / self.name / f"{self.seed}.json"

    @property
    def run_path(self):
        """Facts of the training run that no rerun reproduces: device, versions, times, memory."""
        return RUNS_DIR / self.name / f"{self.seed}.json"

    @property
    def metrics_path(self):
        return METRICS_DIR / self.name / f"{self.seed}.json"

    @property
    def eval_dir(self):
        """Per-image predictions and the pictures of one seed's model."""
        return EVAL_DIR / self.name / str(self.seed)

    @property
    def resume_dir(self):
        """The checkpoint an interrupted training run resumes from (not a DVC output)."""
        return RESUME_DIR / self.name / str(self.seed)

    @property
    def live_dir(self):
        """dvclive's folder: per-epoch curves under plots/metrics/."""
        return TRAIN_REPORTS_DIR / self.name / str(self.seed)


def model_spec(params, name, seed=None):
    """Check `models.<name>` and the `train` defaults; return them merged as the ModelSpec of one training
    seed (by default the first of `seeds`)."""
    from stages.models import BUILDER_MODULES  # the registry names only; no model code is imported

    block, where = _named_block(params, "models", name, "model")
    _reject_unknown_keys(block, MODEL_KEYS, where)
    for key in ("dataset", "builder"):
        if key not in block:
            raise ParamsError(f"{where}.{key} is missing")
    if block["dataset"] not in (params.get("datasets") or {}):
        raise ParamsError(f"{where}.dataset: unknown dataset '{block['dataset']}'; "
                          f"params.yaml defines {', '.join(sorted(params.get('datasets') or {}))}")
    if block["builder"] not in BUILDER_MODULES:
        raise ParamsError(f"{where}.builder: unknown builder '{block['builder']}'; "
                          f"known builders: {', '.join(BUILDER_MODULES)}")
    network = block.get("network") or {}
    if not isinstance(network, dict):
        raise ParamsError(f"{where}.network must be a mapping of builder arguments, got {network!r}")
    defaults = params.get("train") or {}
    overrides = block.get("train") or {}
    if not isinstance(overrides, dict):
        raise ParamsError(f"{where}.train must be a mapping, got {overrides!r}")
    _reject_unknown_keys(overrides, set(defaults), f"{where}.train")
    train = _check_train(defaults | overrides, where)
    dataset = dataset_spec(params, block["dataset"])
    seed = training_seeds(params)[0] if seed is None else _integer(seed, f"{where}: the training seed")
    return ModelSpec(name, dataset, block["builder"], network, train, seed)


def _check_train(train, where):
    """Check the merged training settings; errors name the field as the model block would spell it."""
    def field(key):
        return f"{where}.train.{key} (or train.{key})"

    for key in ("epochs", "batch_size"):
        _positive_int(train.get(key), field(key))
    for key in ("learning_rate", "validation_fraction"):
        _positive_number(train.get(key), field(key))
    if train["validation_fraction"] >= 1:
        raise ParamsError(f"{field('validation_fraction')} must be below 1, got {train['validation_fraction']!r}")
    if train.get("optimizer") not in OPTIMIZERS:
        raise ParamsError(f"{field('optimizer')} must be one of {', '.join(OPTIMIZERS)}, "
                          f"got {train.get('optimizer')!r}")
    if train.get("early_stopping_patience") is not None:
        _positive_int(train["early_stopping_patience"], field("early_stopping_patience"))
    if train.get("monitor") not in ("val_loss", "val_accuracy"):
        raise ParamsError(f"{field('monitor')} must be val_loss or val_accuracy, got {train.get('monitor')!r}")
    if train.get("class_weight") not in (None, "balanced"):
        raise ParamsError(f"{field('class_weight')} must be null or balanced, got {train.get('class_weight')!r}")
    if train.get("backend") not in BACKENDS:
        raise ParamsError(f"{field('backend')} must be one of {', '.join(BACKENDS)}, got {train.get('backend')!r}")
    for key in ("mixed_precision", "jit_compile"):
        if train.get(key) not in AUTO_SWITCH:
            raise ParamsError(f"{field(key)} must be auto, true or false, got {train.get(key)!r}")
    if train.get("distribution") in REMOVED_DISTRIBUTIONS:
        raise ParamsError(f"{field('distribution')}: {train['distribution']} is not offered: "
                          f"{REMOVED_DISTRIBUTIONS[train['distribution']]}; use one of {', '.join(DISTRIBUTIONS)}")
    if train.get("distribution") not in DISTRIBUTIONS:
        raise ParamsError(f"{field('distribution')} must be one of {', '.join(DISTRIBUTIONS)}, "
                          f"got {train.get('distribution')!r}")
    fine_tune = train.get("fine_tune")
    if fine_tune is not None:
        if not isinstance(fine_tune, dict):
            raise ParamsError(f"{field('fine_tune')} must be null or a mapping, got {fine_tune!r}")
        _reject_unknown_keys(fine_tune, FINE_TUNE_KEYS, field("fine_tune"))
        for key in ("epochs", "layers"):
            _positive_int(fine_tune.get(key), f"{field('fine_tune')}.{key}")
        _positive_number(fine_tune.get("learning_rate"), f"{field('fine_tune')}.learning_rate")
    return train
