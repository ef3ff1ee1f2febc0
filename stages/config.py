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

# Points the download stage at a local copy of the datasets instead of the network.
LOCAL_DATA_ENV = "LOCAL_DATA_DIR"

FINGERPRINT_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
DATASET_KEYS = {"source", "classes", "test_fraction", "image_size", "max_per_class", "fingerprint"}
FOLDER_SOURCE_KEYS = {"url", "root", "mirror"}
H5_SOURCE_KEYS = {"train", "test", "mirror"}


class ParamsError(ValueError):
    """A params.yaml block that the pipeline cannot use; the message names the field."""


def load_params(path=PARAMS_FILE):
    """Return params.yaml as a dict."""
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def local_data_dir():
    """The directory named by LOCAL_DATA_DIR, or None when the network is to be used."""
    value = os.environ.get(LOCAL_DATA_ENV, "").strip()
    return Path(value) if value else None


@dataclass(frozen=True)
class DatasetSpec:
    """One checked `datasets.<name>` block of params.yaml."""

    name: str
    source: dict
    classes: dict
    test_fraction: float
    image_size: int
    max_per_class: int | None
    fingerprint: str | None
    seed: int

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
    def processed_dir(self):
        return PROCESSED_DIR / self.name

    @property
    def reports_dir(self):
        return DATA_REPORTS_DIR / self.name


def dataset_spec(params, name):
    """Check `datasets.<name>` in params and return it as a DatasetSpec."""
    datasets = params.get("datasets") or {}
    if name not in datasets:
        known = ", ".join(sorted(datasets)) or "none"
        raise ParamsError(f"unknown dataset '{name}': params.yaml defines {known}")
    block = datasets[name]
    where = f"datasets.{name}"
    if not isinstance(block, dict):
        raise ParamsError(f"{where}: expected a mapping of settings, got {block!r}")
    _reject_unknown_keys(block, DATASET_KEYS, where)
    for key in ("source", "classes", "test_fraction", "image_size", "fingerprint"):
        if key not in block:
            raise ParamsError(f"{where}.{key} is missing")

    source = _check_source(block["source"], f"{where}.source")
    classes = _check_classes(block["classes"], "folder" if "url" in source else "label id", f"{where}.classes")
    test_fraction = block["test_fraction"]
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ParamsError(f"{where}.test_fraction must be a number between 0 and 1, got {test_fraction!r}")
    image_size = _positive_int(block["image_size"], f"{where}.image_size")
    max_per_class = block.get("max_per_class")
    if max_per_class is not None:
        max_per_class = _positive_int(max_per_class, f"{where}.max_per_class")
    fingerprint = block["fingerprint"]
    if fingerprint is not None and not (isinstance(fingerprint, str) and FINGERPRINT_PATTERN.match(fingerprint)):
        raise ParamsError(f"{where}.fingerprint must be 'sha256:' and 64 hex digits, or null; got {fingerprint!r}")
    seed = params.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ParamsError(f"seed must be an integer, got {seed!r}")
    return DatasetSpec(name, source, classes, float(test_fraction), image_size, max_per_class, fingerprint, seed)


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
    return {key: value or "" for key, value in source.items()}


def _check_classes(classes, what, where):
    if not isinstance(classes, dict) or len(classes) < 2:
        raise ParamsError(f"{where} must map at least two class names to their {what}, got {classes!r}")
    checked = {}
    for class_name, location in classes.items():
        if what == "label id" and (isinstance(location, bool) or not isinstance(location, int)):
            raise ParamsError(f"{where}.{class_name} must be the class's integer label id in the HDF5 files, got {location!r}")
        if what == "folder" and not isinstance(location, (str, int)):
            raise ParamsError(f"{where}.{class_name} must be a folder name, got {location!r}")
        checked[str(class_name)] = location if what == "label id" else str(location)
    if len(set(checked.values())) != len(checked):
        raise ParamsError(f"{where}: two classes share a {what}: {checked}")
    return checked


def _positive_int(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParamsError(f"{where} must be a positive integer, got {value!r}")
    return value


def _reject_unknown_keys(block, allowed, where):
    unknown = set(block) - allowed
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
