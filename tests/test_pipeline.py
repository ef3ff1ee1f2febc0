"""dvc.yaml end to end: `dvc repro` in a temporary git repository made from the project, on tiny data."""

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO_ROOT, dataset_block, write_image_folders

from stages.files import tree_fingerprint

pytestmark = pytest.mark.slow

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

    def __init__(self, root, env):
        self.root, self.env = root, env

    def run(self, *command):
        result = subprocess.run(command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def dvc(self, *args):
        return self.run(sys.executable, "-m", "dvc", *args)

    def write_params(self, params):
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stages_run(output):
    """Names of the stages a `dvc repro` output says it ran."""
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


@pytest.fixture
def repo(tmp_path):
    """The project's pipeline over two tiny datasets read through LOCAL_DATA_DIR."""
    mirror = tmp_path / "mirror"
    write_image_folders(mirror / "digits", {"0": 6, "1": 6, "2": 6}, size=(24, 24))
    write_image_folders(mirror / "faces", {"frown": 5, "smile": 5}, size=(16, 16), mode="L", seed=1)
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
    repo = Repo(root, hermetic_env(home, mirror))
    unreachable = "http://127.0.0.1:9/archive.zip"  # any network access would fail the run
    repo.params = {"seed": 3, "datasets": {
        "digits": dataset_block({"url": unreachable, "root": "x", "mirror": "digits"},
                                {"0": "0", "1": "1", "2": "2"}, tree_fingerprint(mirror / "digits"),
                                test_fraction=0.34, image_size=16),
        "faces": dataset_block({"url": unreachable, "mirror": "faces"}, {"frown": "frown", "smile": "smile"},
                               tree_fingerprint(mirror / "faces"), test_fraction=0.2, image_size=16),
    }}
    repo.write_params(repo.params)
    repo.run("git", "init", "-q")
    repo.dvc("init", "-q")
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "tiny project")
    return repo


def test_repro_builds_then_does_nothing_then_reruns_only_the_changed_dataset(repo):
    first = repo.dvc("repro")
    assert stages_run(first) == ["download@digits", "download@faces", "preprocess@digits", "preprocess@faces"]
    assert (repo.root / "data/processed/digits/train.npz").is_file()
    assert (repo.root / "reports/data/faces/samples.png").is_file()
    summary = yaml.safe_load((repo.root / "reports/data/digits/summary.json").read_text())
    assert summary["test"]["per_class"] == {"0": 2, "1": 2, "2": 2}

    second = repo.dvc("repro")
    assert stages_run(second) == [], second
    assert "Data and pipelines are up to date" in repo.dvc("status")

    repo.params["datasets"]["faces"]["test_fraction"] = 0.4
    repo.write_params(repo.params)
    third = repo.dvc("repro")
    assert stages_run(third) == ["preprocess@faces"], third
