"""Fixtures: a temporary project folder, a tiny project with small models, a one-model DVC repository,
a loopback HTTP server.

With KERAS_BACKEND=jax (the README's second pass, `-m backends`), TensorFlow cannot be imported, in
this process or in the stages it starts, just as in a venv without it; the tiny projects train on JAX.
"""

import functools
import http.server
import os
import sys
import threading

from helpers import WITHOUT_TENSORFLOW, on_jax

if on_jax():
    assert "tensorflow" not in sys.modules
    sys.path.insert(0, str(WITHOUT_TENSORFLOW))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(WITHOUT_TENSORFLOW), os.environ.get("PYTHONPATH")]))

import pytest  # noqa: E402
from helpers import (  # noqa: E402
    TRAIN_DEFAULTS, dataset_block, new_repo, save_params, write_image_folders, write_processed)

from stages.files import tree_fingerprint  # noqa: E402


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temporary working directory standing in for the repository root."""
    directory = tmp_path / "project"
    directory.mkdir()
    monkeypatch.chdir(directory)
    monkeypatch.delenv("LOCAL_DATA_DIR", raising=False)
    return directory


@pytest.fixture
def tiny_project(project):
    """Two tiny processed datasets and a params.yaml with small models over them."""
    write_processed(project, "faces", 2)
    write_processed(project, "digits", 3)
    params = {
        "split_seed": 5, "seeds": [5],
        "datasets": {
            "faces": dataset_block({"url": "unused"}, {"no": "no", "yes": "yes"}, image_size=16),
            "digits": dataset_block({"url": "unused"}, {"0": "0", "1": "1", "2": "2"}, image_size=16),
        },
        "train": dict(TRAIN_DEFAULTS),
        "models": {
            "faces_cnn": {"dataset": "faces", "builder": "happy_cnn"},
            "digits_cnn": {"dataset": "digits", "builder": "signs_cnn", "train": {"epochs": 4}},
            "digits_transfer": {"dataset": "digits", "builder": "transfer",
                                "network": {"backbone": "MobileNet", "alpha": 0.25, "weights": "none",
                                            "input_size": 32},
                                "train": {"epochs": 1, "fine_tune": {"epochs": 1, "layers": 5,
                                                                     "learning_rate": 0.001}}},
        },
    }
    save_params(project, params)
    return project


@pytest.fixture
def saved_model(tiny_project):
    """An untrained digits_cnn saved where the train stage puts it, and two images to classify."""
    import keras
    from PIL import Image

    from stages.models import get_builder, save_model

    keras.utils.set_random_seed(1)
    model = get_builder("signs_cnn")((16, 16, 3), 3)
    save_model(model, tiny_project / "models/digits_cnn/5.keras")
    Image.new("RGB", (40, 30), (200, 30, 30)).save(tiny_project / "red.png")
    Image.new("L", (16, 16), 90).save(tiny_project / "grey.jpg")
    return model


@pytest.fixture
def one_model_repo(tmp_path):
    """The pipeline on one tiny dataset with one small model: every stage kind once."""
    mirror = tmp_path / "mirror"
    write_image_folders(mirror / "digits", {"0": 6, "1": 6, "2": 6}, size=(24, 24))
    params = {
        "split_seed": 3, "seeds": [3],
        "datasets": {"digits": dataset_block({"url": "http://127.0.0.1:9/unreachable.zip", "mirror": "digits"},
                                             {"0": "0", "1": "1", "2": "2"}, tree_fingerprint(mirror / "digits"),
                                             test_fraction=0.33, image_size=16)},
        "train": dict(TRAIN_DEFAULTS, batch_size=4, epochs=4),
        "models": {"digits_cnn": {"dataset": "digits", "builder": "signs_cnn"}},
    }
    return new_repo(tmp_path, mirror, params)


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


