"""The data stages on the real datasets in ../shared/datasets, with the project's own params.yaml.

The expected counts are those ../shared/datasets/README.md lists for the upstream folders.
"""

import json
import math
import shutil

import pytest
from helpers import REPO_ROOT, SHARED_DATASETS, SHARED_FACE_DETECTOR

from stages import download, preprocess
from stages.config import dataset_spec, load_params
from stages.data import read_split

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason=f"no local copy of the datasets at {SHARED_DATASETS}"),
    pytest.mark.skipif(not SHARED_FACE_DETECTOR.is_file(), reason=f"no copy of happy's face detector at "
                                                                  f"{SHARED_FACE_DETECTOR}"),
]

EXPECTED_AVAILABLE = {
    "signs": {"0": 205, "1": 206, "2": 206, "3": 206, "4": 207, "5": 207},
    "happy": {"not_smiling": 9475, "smiling": 3690},
}


@pytest.mark.parametrize("name", ["signs", "happy"])
def test_real_download_and_preprocess(project, monkeypatch, name):
    shutil.copy(REPO_ROOT / "params.yaml", project / "params.yaml")
    monkeypatch.setenv("LOCAL_DATA_DIR", str(SHARED_DATASETS))
    monkeypatch.setenv("LOCAL_WEIGHTS_DIR", str(SHARED_FACE_DETECTOR.parent))

    download.main([name])  # exits with an error if the pinned fingerprint does not match
    preprocess.main([name])

    summary = json.loads((project / "reports/data" / name / "summary.json").read_text())
    assert summary["available"] == EXPECTED_AVAILABLE[name]
    assert summary["skipped"] == 0
    spec = dataset_spec(load_params(), name)
    kept = {label: min(count, spec.max_per_class or count) for label, count in EXPECTED_AVAILABLE[name].items()}
    total = sum(kept.values())
    assert summary["train"]["total"] + summary["test"]["total"] == total
    assert summary["test"]["total"] == math.ceil(spec.test_fraction * total)
    for label, count in kept.items():
        assert summary["train"]["per_class"][label] + summary["test"]["per_class"][label] == count
        assert abs(summary["test"]["per_class"][label] - spec.test_fraction * count) <= 1, "stratified"
    if spec.crop is not None:  # the face step finds nearly every SMILEsmileD face (99.8 % of 600 when chosen)
        for split, counts in summary["faces_found"].items():
            assert counts["found"] >= 0.99 * (counts["found"] + counts["missed"]), split
    images, labels = read_split(project / "data/processed" / name, "train")
    assert images.shape == (summary["train"]["total"], spec.image_size, spec.image_size, 3)
    assert labels.shape[0] == summary["train"]["total"]
