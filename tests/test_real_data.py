"""The data stages on the real datasets in ../shared/datasets, with the project's own params.yaml.

The expected counts are those ../shared/datasets/README.md lists for the upstream folders.
"""

import json
import shutil

import pytest
from conftest import REPO_ROOT, SHARED_DATASETS

from stages import download, preprocess
from stages.data import read_split

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason=f"no local copy of the datasets at {SHARED_DATASETS}"),
]

EXPECTED_AVAILABLE = {
    "signs": {"0": 205, "1": 206, "2": 206, "3": 206, "4": 207, "5": 207},
    "happy": {"not_smiling": 9475, "smiling": 3690},
}


@pytest.mark.parametrize("name", ["signs", "happy"])
def test_real_download_and_preprocess(project, monkeypatch, name):
    shutil.copy(REPO_ROOT / "params.yaml", project / "params.yaml")
    monkeypatch.setenv("LOCAL_DATA_DIR", str(SHARED_DATASETS))

    download.main([name])  # exits with an error if the pinned fingerprint does not match
    preprocess.main([name])

    summary = json.loads((project / "reports/data" / name / "summary.json").read_text())
    assert summary["available"] == EXPECTED_AVAILABLE[name]
    assert summary["skipped"]["count"] == 0
    images, labels = read_split(project / "data/processed" / name, "train")
    assert images.shape[1:] == (64, 64, 3)
    if name == "signs":
        assert summary["train"]["total"] + summary["test"]["total"] == 1237
        assert set(summary["test"]["per_class"].values()) == {21}
    else:
        assert summary["train"]["per_class"] == {"not_smiling": 600, "smiling": 600}
        assert summary["test"]["per_class"] == {"not_smiling": 150, "smiling": 150}
        assert labels.shape == (1200, 1)
