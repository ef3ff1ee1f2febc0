"""Helpers the tests share: tiny datasets made on the fly, params blocks, and running a stage."""

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.benchmark import stages_run as stages_run_in_order
from stages.data import encode_labels, save_split

REPO_ROOT = Path(__file__).resolve().parents[1]
WITHOUT_TENSORFLOW = Path(__file__).resolve().parent / "without_tensorflow"
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
# OpenCV Zoo's YuNet face detector (MIT), as ../shared/weights/README.md describes it.
SHARED_FACE_DETECTOR = REPO_ROOT.parent / "shared" / "weights" / "face_detection_yunet_2026may.onnx"
needs_face_detector = pytest.mark.skipif(not SHARED_FACE_DETECTOR.is_file(),
                                         reason=f"no copy of the YuNet face detector at {SHARED_FACE_DETECTOR}")
CROP = {"side": 2.0, "centre": 0.5, "colour": "grey", "min_score": 0.6, "detection_size": 256}


def face_detector_pin():
    """A dataset's face_detector block for the shared copy of YuNet (read where it lies)."""
    from stages.files import file_sha256

    return {"file": str(SHARED_FACE_DETECTOR), "mirror": SHARED_FACE_DETECTOR.name,
            "sha256": file_sha256(SHARED_FACE_DETECTOR)}


def drawn_face(size=256, centre=None, scale=1.0, background=(70, 110, 150)):
    """A cartoon face YuNet finds (score about 0.9): skin, hair, eyes, brows, nose, a smile, softened.
    `centre` (x, y) defaults to the middle; `scale` 1 makes it about 140 x 190 pixels."""
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    cx, cy = centre or (size / 2, size / 2)

    def box(x0, y0, x1, y1):
        return [cx + x0 * scale, cy + y0 * scale, cx + x1 * scale, cy + y1 * scale]

    skin, hair = (224, 172, 140), (60, 40, 30)
    draw.ellipse(box(-70, -95, 70, 95), fill=skin)
    draw.ellipse(box(-75, -110, 75, -30), fill=hair)
    draw.ellipse(box(-70, -60, 70, 95), fill=skin)
    for x in (-30, 30):
        draw.ellipse(box(x - 15, -25, x + 15, -10), fill=(255, 255, 255))
        draw.ellipse(box(x - 6, -23, x + 6, -12), fill=(40, 30, 20))
        draw.line(box(x - 18, -38, x + 18, -35), fill=hair, width=max(1, int(5 * scale)))
    draw.polygon([(cx, cy - 5 * scale), (cx - 10 * scale, cy + 25 * scale), (cx + 10 * scale, cy + 25 * scale)],
                 fill=(200, 140, 110))
    draw.chord(box(-30, 30, 30, 65), 0, 180, fill=(150, 50, 50))
    return image.filter(ImageFilter.GaussianBlur(2 * scale))


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


def dataset_block(source, classes, fingerprint=None, test_fraction=0.25, image_size=8, max_per_class=None,
                  external=None, crop=None, face_detector=None):
    return {"source": source, "classes": classes, "test_fraction": test_fraction, "image_size": image_size,
            "max_per_class": max_per_class, "fingerprint": fingerprint, "external": external or {}, "crop": crop,
            "face_detector": face_detector}


def write_params(project_dir, datasets, seed=7):
    """Write a params.yaml holding the given dataset blocks; return the params dict."""
    params = {"split_seed": seed, "seeds": [seed], "datasets": datasets}
    save_params(Path(project_dir), params)
    return params


def on_jax():
    """Whether this test pass runs Keras on JAX (KERAS_BACKEND=jax); otherwise on TensorFlow."""
    return os.environ.get("KERAS_BACKEND") == "jax"


# For a backends test whose JAX run adds minutes and nothing the TensorFlow run does not check.
TENSORFLOW_PASS_ONLY = pytest.mark.skipif(on_jax(), reason="checked on TensorFlow; the code is the same on JAX")

TRAIN_DEFAULTS = {
    "optimizer": "adam", "learning_rate": 0.01, "batch_size": 8, "epochs": 3, "validation_fraction": 0.25,
    "monitor": "val_loss", "early_stopping_patience": None, "class_weight": None, "fine_tune": None,
    "backend": "jax" if on_jax() else "tensorflow", "mixed_precision": "auto", "jit_compile": False, "distribution": "none",
}


def write_processed(project, name, num_classes, per_class=8, size=16, seed=0):
    """data/processed/<name>/{train,test}/ with classes told apart by brightness (test: half as many)."""
    directory = project / "data/processed" / name
    directory.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("test", per_class // 2)):
        class_ids = np.repeat(np.arange(num_classes), count)
        brightness = np.clip(rng.normal(0.2 + 0.6 * class_ids[:, None, None, None] / max(num_classes - 1, 1), 0.1,
                                        size=(len(class_ids), size, size, 3)), 0, 1)
        pixels = np.round(255 * brightness).astype(np.uint8)
        save_split(directory, split, encode_labels(class_ids, num_classes), [pixels], pixels.shape[1:])


def save_params(project, params):
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def leftovers(directory):
    """Anything under directory, e.g. partial folders an interrupted stage left behind."""
    directory = Path(directory)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []



def run_stage(stage, *args):
    """Run a stage module's main() in this process; its error message, or None when it succeeded."""
    try:
        stage.main(list(args))
    except SystemExit as error:
        return str(error)
    return None


def run_python(*args, cwd, timeout=600, env=None):
    """`python *args` in a fresh process that imports the project's stages, as `dvc repro` runs them."""
    path = [str(WITHOUT_TENSORFLOW)] if on_jax() else []
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(REPO_ROOT)]), **(env or {})})


def seed_run(project, name, seed=None):
    """The ModelSpec of one model's training run in a project (by default its params.yaml's first seed):
    its paths, relative to the project."""
    from stages.config import load_params, model_spec

    return model_spec(load_params(Path(project) / "params.yaml"), name, seed)


def read_train_report(project, name, seed=None):
    """A training run's metrics (reports/train/) and run facts (reports/runs/) as one dict."""
    spec = seed_run(project, name, seed)
    return {**json.loads((Path(project) / spec.report_path).read_text()),
            **json.loads((Path(project) / spec.run_path).read_text())}


# --- a temporary copy of the project as its own git + DVC repository, for `dvc repro` end to end ---------

PROJECT_FILES = ["dvc.yaml", "stages", ".gitignore"]


def hermetic_env(home, local_data_dir):
    """An environment where DVC and git see nothing of this machine's config or caches."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DVC_", "GIT_"))}
    env.update({
        "HOME": str(home),
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{env.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "DVC_SITE_CACHE_DIR": str(home / "dvc-site-cache"),
        "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
        "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.org",
        "LOCAL_DATA_DIR": str(local_data_dir),
    })
    return env


class Repo:
    """A temporary copy of the project as its own git + DVC repository."""

    def __init__(self, root, env, params):
        self.root, self.env, self.params = root, env, params

    def run(self, *command, stdout_only=False):
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout if stdout_only else result.stdout + result.stderr

    def dvc(self, *args, stdout_only=False):
        return self.run(sys.executable, "-m", "dvc", *args, stdout_only=stdout_only)

    def write_params(self, params):
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def new_repo(tmp_path, mirror, params):
    """The project's dvc.yaml and stages with `params`, as a fresh git + DVC repository reading `mirror`."""
    import shutil

    root = tmp_path / "repo"
    root.mkdir()
    for name in PROJECT_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    home = tmp_path / "home"
    home.mkdir()
    repo = Repo(root, hermetic_env(home, mirror), params)
    repo.write_params(params)
    repo.run("git", "init", "-q", "-b", "main")
    repo.dvc("init", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "tiny project")
    return repo


def stages_run(output):
    """Names of the stages a `dvc repro` output says it ran, sorted."""
    return sorted(stages_run_in_order(output))
