"""Tiny datasets made on the fly, a loopback HTTP server, and a temporary project folder."""

import functools
import http.server
import tarfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def write_image_folders(root, images_per_folder, size=(20, 16), mode="RGB", seed=0):
    """Write JPEGs into root/<folder>/; each folder's images share a base colour so classes differ."""
    rng = np.random.default_rng(seed)
    for folder_index, (folder, count) in enumerate(images_per_folder.items()):
        directory = Path(root) / folder
        directory.mkdir(parents=True, exist_ok=True)
        base = (40 + 50 * folder_index) % 256
        for image_index in range(count):
            channels = 3 if mode == "RGB" else 1
            pixels = np.clip(base + rng.integers(-20, 20, size=(size[1], size[0], channels)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels.squeeze(), mode=mode).save(directory / f"img_{image_index:03d}.jpg", quality=95)
    return Path(root)


def write_course_h5(path, split, images, labels, list_classes):
    """Write one HDF5 file in the course layout: <split>_set_x, <split>_set_y, list_classes."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset(f"{split}_set_x", data=np.asarray(images, dtype=np.uint8))
        handle.create_dataset(f"{split}_set_y", data=np.asarray(labels, dtype=np.int64))
        handle.create_dataset("list_classes", data=list_classes)
    return Path(path)


def zip_folder(source_dir, archive_path, top="top"):
    """Zip source_dir under a single top folder, as GitHub's archives are laid out."""
    with zipfile.ZipFile(archive_path, "w") as archive:
        for path in sorted(Path(source_dir).rglob("*")):
            if path.is_file():
                archive.write(path, f"{top}/{path.relative_to(source_dir).as_posix()}")
    return Path(archive_path)


def tar_folder(source_dir, archive_path, top="top"):
    with tarfile.open(archive_path, "w:gz") as archive:
        archive.add(source_dir, arcname=top)
    return Path(archive_path)


def dataset_block(source, classes, fingerprint=None, test_fraction=0.25, image_size=8, max_per_class=None):
    return {"source": source, "classes": classes, "test_fraction": test_fraction, "image_size": image_size,
            "max_per_class": max_per_class, "fingerprint": fingerprint}


def write_params(project_dir, datasets, seed=7):
    """Write a params.yaml holding the given dataset blocks; return the params dict."""
    params = {"seed": seed, "datasets": datasets}
    (Path(project_dir) / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temporary working directory standing in for the repository root."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.delenv("LOCAL_DATA_DIR", raising=False)
    return directory


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """Serve a folder on 127.0.0.1 for the test's duration; yields (folder, base URL)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def leftovers(directory):
    """Anything under directory, e.g. partial folders an interrupted stage left behind."""
    directory = Path(directory)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

