"""A model file written on one Keras backend loads and predicts the same on the other, with plain Keras.

This process runs TensorFlow; the other side runs in a process on JAX that cannot import TensorFlow
and does not import this project: `keras.saving.load_model` alone.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import REPO_ROOT, WITHOUT_TENSORFLOW, on_jax, run_python

from stages.models import get_builder, save_model

pytestmark = [pytest.mark.slow, pytest.mark.skipif(on_jax(), reason="this pass's own process runs JAX")]

MODELS = {
    "happy_cnn": (2, {"augmentation": {"flip": "horizontal", "rotation": 0.05, "blur": 0.5}}),
    "signs_cnn": (6, {"augmentation": {"rotation": 0.08, "zoom": 0.15, "shift": 0.1, "brightness": 0.2,
                                       "contrast": 0.2}}),
    "transfer": (6, {"backbone": "MobileNetV2", "alpha": 0.35, "weights": "none", "input_size": 96,
                     "augmentation": {"flip": "horizontal"}}),
}

# On JAX, without TensorFlow or this project: load each model file, predict the images, save the outputs.
PREDICT_ON_JAX = """
import sys
import numpy as np
import keras
assert keras.backend.backend() == "jax"
images = np.load(sys.argv[1])
for name in sys.argv[2:]:
    model = keras.saving.load_model(f"{name}.keras")
    np.save(f"{name}-jax.npy", np.asarray(model.predict(images, verbose=0)))
assert "tensorflow" not in sys.modules and "stages" not in sys.modules
"""

# On JAX, with this project's builders: build and save each model, and predict the images.
BUILD_ON_JAX = """
import json, sys
import numpy as np
import keras
from stages.models import get_builder, save_model
images = np.load(sys.argv[1])
for builder, (num_classes, network) in json.loads(sys.argv[2]).items():
    keras.utils.set_random_seed(3)
    model = get_builder(builder)((64, 64, 3), num_classes, **network)
    save_model(model, f"{builder}.keras")
    np.save(f"{builder}-jax.npy", np.asarray(model.predict(images, verbose=0)))
"""


def on_jax_without_tensorflow(*args, cwd, project_code):
    """`python *args` on JAX, where TensorFlow cannot be imported (nor, unless project_code, this project)."""
    path = [str(WITHOUT_TENSORFLOW), *([str(REPO_ROOT)] if project_code else [])]
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": os.pathsep.join(path)}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def random_images(tmp_path):
    path = tmp_path / "images.npy"
    np.save(path, np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32))
    return path


def test_model_files_written_on_tensorflow_predict_the_same_on_jax(tmp_path):
    images, expected = np.load(random_images(tmp_path)), {}
    for builder, (num_classes, network) in MODELS.items():
        keras.utils.set_random_seed(3)
        model = get_builder(builder)((64, 64, 3), num_classes, **network)
        save_model(model, tmp_path / f"{builder}.keras")
        expected[builder] = model.predict(images, verbose=0)

    on_jax_without_tensorflow("-c", PREDICT_ON_JAX, "images.npy", *MODELS, cwd=tmp_path, project_code=False)

    for builder in MODELS:
        np.testing.assert_allclose(np.load(tmp_path / f"{builder}-jax.npy"), expected[builder], atol=1e-5)


def test_model_files_written_on_jax_predict_the_same_on_tensorflow(tmp_path):
    images = np.load(random_images(tmp_path))
    on_jax_without_tensorflow("-c", BUILD_ON_JAX, "images.npy", json.dumps(MODELS), cwd=tmp_path, project_code=True)

    assert keras.backend.backend() == "tensorflow"
    for builder in MODELS:
        model = keras.saving.load_model(tmp_path / f"{builder}.keras")
        np.testing.assert_allclose(model.predict(images, verbose=0), np.load(tmp_path / f"{builder}-jax.npy"),
                                   atol=1e-5)


def test_run_python_on_the_jax_pass_shadows_tensorflow():
    """The JAX pass's guard works: with it, importing TensorFlow fails."""
    result = run_python("-c", "import tensorflow", cwd=REPO_ROOT,
                        env={"PYTHONPATH": os.pathsep.join([str(WITHOUT_TENSORFLOW), str(REPO_ROOT)])})
    assert result.returncode == 1 and "TensorFlow is not installed here" in result.stderr
