"""The download stage: every kind of source, and every failure leaving nothing behind."""

import json

import h5py
import numpy as np
import pytest
from helpers import (
    SHARED_DATASETS,
    dataset_block,
    leftovers,
    run_stage,
    tar_folder,
    write_course_h5,
    write_image_folders,
    write_params,
    zip_folder,
)

from stages import download
from stages.config import RAW_DIR
from stages.files import file_sha256, tree_fingerprint

CLASSES = {"zero": "digits/0", "one": "digits/1"}


@pytest.fixture
def class_folders(tmp_path):
    """A source tree with two class folders (3 and 4 images) and an unrelated folder."""
    root = write_image_folders(tmp_path / "upstream", {"digits/0": 3, "digits/1": 4, "digits/9": 2})
    (root / "README").write_text("not part of any class")
    return root


def run_download(name="tiny"):
    return run_stage(download, name)


def raw_files(name="tiny"):
    root = RAW_DIR / name
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_local_directory_keeps_only_the_class_folders(project, class_folders):
    write_params(project, {"tiny": dataset_block({"url": str(class_folders)}, CLASSES)})

    assert run_download() is None

    files = raw_files()
    assert len([f for f in files if f.startswith("zero/")]) == 3
    assert len([f for f in files if f.startswith("one/")]) == 4
    assert len(files) == 7
    record = json.loads((RAW_DIR / "tiny.json").read_text())  # what preprocess depends on in dvc.yaml
    assert record["fingerprint"] == tree_fingerprint(RAW_DIR / "tiny")
    assert record["external_sha256"] == {} and set(record["contents"]) == {"zero", "one"}


def test_pinned_fingerprint_matches_across_archive_and_directory(project, class_folders, http_server):
    served, base_url = http_server
    zip_folder(class_folders, served / "data.zip", top="repo-abc")
    tar_folder(class_folders, served / "data.tar.gz", top="repo-abc")
    expected = tree_fingerprint_of_classes(project, class_folders)

    for archive in ("data.zip", "data.tar.gz"):
        source = {"url": f"{base_url}/{archive}", "root": "repo-abc"}
        write_params(project, {"tiny": dataset_block(source, CLASSES, fingerprint=expected)})
        assert run_download() is None, archive
        assert len(raw_files()) == 7


def test_pooch_checks_a_downloaded_archive_against_its_pinned_sha256(project, class_folders, http_server, caplog):
    served, base_url = http_server
    archive = zip_folder(class_folders, served / "data.zip", top="repo-abc")
    right, wrong = file_sha256(archive), "0" * 64
    source = {"url": f"{base_url}/data.zip", "root": "repo-abc"}

    write_params(project, {"tiny": dataset_block({**source, "sha256": wrong}, CLASSES)})
    message = run_download()
    assert f"sha256 mismatch: datasets.tiny.source.sha256 expects {wrong}" in message
    assert f"gives {right}; the source changed or is damaged" in message
    assert leftovers(project / "data" / "raw") == []

    write_params(project, {"tiny": dataset_block({**source, "sha256": right}, CLASSES)})
    assert run_download() is None and len(raw_files()) == 7

    write_params(project, {"tiny": dataset_block(source, CLASSES)})  # nothing pinned: the hash to pin is shown
    assert run_download() is None
    assert f"gives {right}: pin it as datasets.tiny.source.sha256" in caplog.text


def tree_fingerprint_of_classes(project, class_folders):
    """The fingerprint of the files the stage keeps, taken from a run on the plain directory."""
    write_params(project, {"tiny": dataset_block({"url": str(class_folders)}, CLASSES)})
    assert run_download() is None
    return tree_fingerprint(project / "data" / "raw" / "tiny")


def test_local_data_dir_replaces_the_network(project, class_folders, monkeypatch):
    expected = tree_fingerprint_of_classes(project, class_folders)
    # A port nobody listens on: any network access would fail the stage.
    source = {"url": "http://127.0.0.1:9/data.zip", "root": "repo-abc", "mirror": "upstream"}
    write_params(project, {"tiny": dataset_block(source, CLASSES, fingerprint=expected)})
    monkeypatch.setenv("LOCAL_DATA_DIR", str(class_folders.parent))

    assert run_download() is None
    assert len(raw_files()) == 7


def test_local_data_dir_without_the_copy_names_the_missing_path(project, tmp_path, monkeypatch):
    source = {"url": "http://127.0.0.1:9/data.zip", "mirror": "nowhere"}
    write_params(project, {"tiny": dataset_block(source, CLASSES)})
    monkeypatch.setenv("LOCAL_DATA_DIR", str(tmp_path))

    message = run_download()

    assert "download tiny" in message and str(tmp_path / "nowhere") in message
    assert leftovers(project / "data" / "raw") == []


def course_arrays(count, labels, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(count, 64, 64, 3), dtype=np.uint8), np.resize(labels, count)


@pytest.mark.parametrize("list_classes", [np.array([b"cat", b"dog"]), np.array([0, 1])], ids=["bytes", "ints"])
def test_course_h5_pair_from_paths_and_urls(project, http_server, list_classes):
    served, base_url = http_server
    for split, count in (("train", 6), ("test", 4)):
        images, labels = course_arrays(count, [0, 1])
        write_course_h5(served / f"{split}_pets.h5", split, images, labels, list_classes)
    classes = {"cat": 0, "dog": 1}

    for location in (str(served), base_url):
        source = {"train": f"{location}/train_pets.h5", "test": f"{location}/test_pets.h5"}
        write_params(project, {"tiny": dataset_block(source, classes)})
        assert run_download() is None, location
        assert raw_files() == ["test.h5", "train.h5"]
        with h5py.File(project / "data/raw/tiny/train.h5") as handle:
            assert handle["train_set_x"].shape == (6, 64, 64, 3)


@pytest.mark.skipif(not (SHARED_DATASETS / "signs-h5" / "test_signs.h5").exists(),
                    reason="../shared/datasets/signs-h5/test_signs.h5 is not on this machine")
def test_real_course_test_file_split_into_a_pair(project, tmp_path):
    with h5py.File(SHARED_DATASETS / "signs-h5" / "test_signs.h5") as handle:
        images, labels, list_classes = handle["test_set_x"][()], handle["test_set_y"][()], handle["list_classes"][()]
    assert list_classes.dtype.kind == "i", "the real course file holds integer class ids"
    write_course_h5(tmp_path / "train_signs.h5", "train", images[:90], labels[:90], list_classes)
    write_course_h5(tmp_path / "test_signs.h5", "test", images[90:], labels[90:], list_classes)
    source = {"train": str(tmp_path / "train_signs.h5"), "test": str(tmp_path / "test_signs.h5")}
    write_params(project, {"signs": dataset_block(source, {str(i): i for i in range(6)})})

    assert run_download("signs") is None
    with h5py.File(project / "data/raw/signs/test.h5") as handle:
        assert handle["test_set_x"].shape == (30, 64, 64, 3)


# --- failures: a clear message naming the dataset, and no data/raw/<dataset> left ---------------

def assert_failed_cleanly(project, message, *expected_words):
    assert message is not None, "the stage should have failed"
    assert message.startswith("download tiny: error:")
    for word in expected_words:
        assert word in message
    assert leftovers(project / "data" / "raw") == []


def test_fingerprint_mismatch(project, class_folders):
    wrong = "sha256:" + "0" * 64
    write_params(project, {"tiny": dataset_block({"url": str(class_folders)}, CLASSES, fingerprint=wrong)})

    message = run_download()

    assert_failed_cleanly(project, message, "fingerprint mismatch", wrong, "sha256:")
    assert message.count("sha256:") == 2, "the message shows what was expected and what was found"


@pytest.mark.parametrize("name, make_archive, kind", [("data.zip", zip_folder, "zip"),
                                                     ("data.tar.gz", tar_folder, "tar")])
def test_truncated_archive(project, class_folders, http_server, name, make_archive, kind):
    served, base_url = http_server
    archive = make_archive(class_folders, served / name).read_bytes()
    (served / name).write_bytes(archive[: len(archive) // 2])
    write_params(project, {"tiny": dataset_block({"url": f"{base_url}/{name}", "root": "top"}, CLASSES)})

    assert_failed_cleanly(project, run_download(), f"the {kind} archive is corrupt or truncated")


def test_html_page_instead_of_data(project, http_server):
    served, base_url = http_server
    (served / "data.zip").write_text("<!DOCTYPE html><html><body>Sign in to continue</body></html>")
    write_params(project, {"tiny": dataset_block({"url": f"{base_url}/data.zip"}, CLASSES)})

    assert_failed_cleanly(project, run_download(), "HTML page", "not the data")


def test_html_page_instead_of_h5(project, http_server):
    served, base_url = http_server
    (served / "train.h5").write_text("<html><body>Not found</body></html>")
    (served / "test.h5").write_text("<html><body>Not found</body></html>")
    source = {"train": f"{base_url}/train.h5", "test": f"{base_url}/test.h5"}
    write_params(project, {"tiny": dataset_block(source, {"a": 0, "b": 1})})

    assert_failed_cleanly(project, run_download(), "expected an HDF5 file", "HTML page")


def test_missing_class_folder_in_directory(project, class_folders):
    classes = {"zero": "digits/0", "seven": "digits/7"}
    write_params(project, {"tiny": dataset_block({"url": str(class_folders)}, classes)})

    assert_failed_cleanly(project, run_download(), "class 'seven'", "digits/7", "digits")


def test_missing_class_folder_in_archive(project, class_folders, http_server):
    served, base_url = http_server
    zip_folder(class_folders, served / "data.zip", top="top")
    classes = {"zero": "0", "seven": "7"}
    write_params(project, {"tiny": dataset_block({"url": f"{base_url}/data.zip", "root": "top/digits"}, classes)})

    message = run_download()

    assert_failed_cleanly(project, message, "class 'seven'", "'7'")
    assert "0, 1, 9" in message, "the message lists the folders that are there"


def test_server_error(project, http_server):
    _, base_url = http_server
    write_params(project, {"tiny": dataset_block({"url": f"{base_url}/missing.zip"}, CLASSES)})

    assert_failed_cleanly(project, run_download(), "404", "missing.zip")


def test_network_failure(project):
    write_params(project, {"tiny": dataset_block({"url": "http://127.0.0.1:9/data.zip"}, CLASSES)})

    assert_failed_cleanly(project, run_download(), "network failure", "LOCAL_DATA_DIR")


def test_h5_labels_outside_the_declared_classes(project, tmp_path):
    for split in ("train", "test"):
        images, labels = course_arrays(4, [0, 1, 2])
        write_course_h5(tmp_path / f"{split}.h5", split, images, labels, np.array([0, 1, 2]))
    source = {"train": str(tmp_path / "train.h5"), "test": str(tmp_path / "test.h5")}
    write_params(project, {"tiny": dataset_block(source, {"a": 0, "b": 1})})

    assert_failed_cleanly(project, run_download(), "list_classes has 3 entries", "2 classes")


def test_truncated_h5(project, tmp_path):
    for split in ("train", "test"):
        images, labels = course_arrays(8, [0, 1])
        path = write_course_h5(tmp_path / f"{split}.h5", split, images, labels, np.array([0, 1]))
        path.write_bytes(path.read_bytes()[:3000])
    source = {"train": str(tmp_path / "train.h5"), "test": str(tmp_path / "test.h5")}
    write_params(project, {"tiny": dataset_block(source, {"a": 0, "b": 1})})

    assert_failed_cleanly(project, run_download(), "train file", "corrupt or truncated")


def test_unknown_dataset_name(project, class_folders):
    write_params(project, {"tiny": dataset_block({"url": str(class_folders)}, CLASSES)})

    message = run_download("huge")

    assert "unknown dataset 'huge'" in message and "tiny" in message
