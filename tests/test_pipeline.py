"""dvc.yaml end to end: `dvc repro` in a temporary git repository made from the project, on tiny data."""

import json
import subprocess
import sys
import time

import pytest
import yaml
from helpers import TRAIN_DEFAULTS, dataset_block, new_repo, stages_run, write_image_folders

from stages.files import tree_fingerprint

def tiny_pipeline(tmp_path, with_transfer):
    """The project's pipeline over two tiny datasets read through LOCAL_DATA_DIR."""
    mirror = tmp_path / "mirror"
    write_image_folders(mirror / "digits", {"0": 6, "1": 6, "2": 6}, size=(24, 24))
    write_image_folders(mirror / "faces", {"frown": 5, "smile": 5}, size=(16, 16), mode="L", seed=1)
    unreachable = "http://127.0.0.1:9/archive.zip"  # any network access would fail the run
    params = {"split_seed": 3, "seeds": [3], "datasets": {
        "digits": dataset_block({"url": unreachable, "root": "x", "mirror": "digits"},
                                {"0": "0", "1": "1", "2": "2"}, tree_fingerprint(mirror / "digits"),
                                test_fraction=0.33, image_size=16),
        "faces": dataset_block({"url": unreachable, "mirror": "faces"}, {"frown": "frown", "smile": "smile"},
                               tree_fingerprint(mirror / "faces"), test_fraction=0.2, image_size=16),
    }}
    params["train"] = dict(TRAIN_DEFAULTS, batch_size=4, epochs=1)
    params["models"] = {
        "faces_cnn": {"dataset": "faces", "builder": "happy_cnn"},
        "digits_cnn": {"dataset": "digits", "builder": "signs_cnn", "train": {"epochs": 2}},
    }
    if with_transfer:
        params["models"]["faces_transfer"] = {
            "dataset": "faces", "builder": "transfer",
            "network": {"backbone": "MobileNet", "alpha": 0.25, "weights": "none", "input_size": 32}}
    return new_repo(tmp_path, mirror, params)


@pytest.fixture
def repo(tmp_path):
    """Every kind of model: a run from scratch builds them all."""
    return tiny_pipeline(tmp_path, with_transfer=True)


@pytest.fixture
def cnn_repo(tmp_path):
    """The two small CNNs alone, for what does not depend on the kind of model (a transfer model's
    stages take as long as the rest together)."""
    return tiny_pipeline(tmp_path, with_transfer=False)


@pytest.mark.slow
def test_repro_builds_then_does_nothing_then_reruns_only_what_changed(repo):
    first = repo.dvc("repro")
    assert "oneDNN" not in first and "absl::InitializeLog" not in first, "TensorFlow's start-up lines are filtered"
    assert stages_run(first) == ["compare", "download@digits", "download@faces", "evaluate@digits_cnn-3",
                                 "evaluate@faces_cnn-3", "evaluate@faces_transfer-3", "preprocess@digits",
                                 "preprocess@faces", "train@digits_cnn-3", "train@faces_cnn-3",
                                 "train@faces_transfer-3"]
    assert (repo.root / "data/processed/digits/train/images.npy").is_file()
    assert (repo.root / "reports/data/faces/samples.png").is_file()
    assert (repo.root / "models/faces_cnn/3.keras").is_file()
    assert "## digits" in (repo.root / "reports/comparison.md").read_text()
    summary = yaml.safe_load((repo.root / "reports/data/digits/summary.json").read_text())
    assert summary["test"]["per_class"] == {"0": 2, "1": 2, "2": 2}
    assert yaml.safe_load((repo.root / "reports/train/digits_cnn/3.json").read_text())["epochs_run"] == 2

    second = repo.dvc("repro")
    assert stages_run(second) == [], second
    assert "Data and pipelines are up to date" in repo.dvc("status")

    # A comment-only edit of the pixel scaling marks every stage that imports it as changed, and no other.
    images_code = repo.root / "stages/images.py"
    original = images_code.read_text()
    images_code.write_text(original + "# a comment\n")
    changed = set(json.loads(repo.dvc("status", "--json", stdout_only=True)))
    models = ["digits_cnn", "faces_cnn", "faces_transfer"]
    assert changed == {"preprocess@digits", "preprocess@faces", *(f"{stage}@{model}-3" for stage in ("train", "evaluate")
                                                                  for model in models)}
    images_code.write_text(original)

    # A retrain that gives the same weights (here after a comment-only change to train.py) writes
    # byte-identical models and reports, so nothing after the train stages runs again.
    with open(repo.root / "stages/train.py", "a") as code:
        code.write("# a comment\n")
    retrain = repo.dvc("repro")
    assert stages_run(retrain) == ["train@digits_cnn-3", "train@faces_cnn-3", "train@faces_transfer-3"], retrain

    # A matrix stage cannot name its model's dataset (dvc.yaml): one dataset's change retrains every model.
    repo.params["datasets"]["digits"]["test_fraction"] = 0.5
    repo.write_params(repo.params)
    third = repo.dvc("repro")
    assert stages_run(third) == sorted(["compare", "preprocess@digits", *(f"{stage}@{model}-3" for model in models
                                                                          for stage in ("evaluate", "train"))]), third


@pytest.mark.slow
def test_one_models_change_shows_in_metrics_diff_and_a_new_models_plots_appear(cnn_repo):
    repo = cnn_repo
    repo.dvc("repro")
    first_run = {path: (repo.root / path).read_bytes() for path in (
        "models/digits_cnn/3.keras", "reports/runs/digits_cnn/3.json", "reports/train/digits_cnn/3.json")}
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "first run")
    repo.run("git", "checkout", "-qb", "more-epochs")

    repo.params["models"]["digits_cnn"]["train"]["epochs"] = 3
    repo.write_params(repo.params)
    rerun = repo.dvc("repro")
    assert stages_run(rerun) == ["compare", "evaluate@digits_cnn-3", "train@digits_cnn-3"], rerun
    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "digits_cnn: 3 epochs")

    assert '"error"' not in repo.dvc("metrics", "show", "--json", stdout_only=True), "every metrics file must parse"
    diff = json.loads(repo.dvc("metrics", "diff", "--json", "main", "more-epochs", stdout_only=True))
    changed_files = set(diff)
    assert "reports/train/digits_cnn/3.json" in changed_files
    assert diff["reports/train/digits_cnn/3.json"]["epochs_run"] == {"old": 2, "new": 3, "diff": 1}
    assert "reports/metrics/digits_cnn/3.json" in changed_files
    assert not any("faces" in path for path in changed_files), diff

    # Back to settings already run: DVC's run cache restores the train stage's outputs instead of
    # re-training, run facts included; only what reads the model runs again.
    repo.params["models"]["digits_cnn"]["train"]["epochs"] = 2
    repo.write_params(repo.params)
    restored = repo.dvc("repro")
    assert stages_run(restored) == ["compare", "evaluate@digits_cnn-3"], restored
    assert "train@digits_cnn-3' is cached" in restored, restored
    assert [(repo.root / path).read_bytes() for path in first_run] == list(first_run.values())
    # The same for a change of backend (docs/training.md): to JAX trains, back to TensorFlow restores.
    repo.params["models"]["digits_cnn"]["train"]["backend"] = "jax"
    repo.write_params(repo.params)
    assert stages_run(repo.dvc("repro")) == ["compare", "evaluate@digits_cnn-3", "train@digits_cnn-3"]
    assert json.loads((repo.root / "reports/runs/digits_cnn/3.json").read_text())["backend"] == "jax"
    del repo.params["models"]["digits_cnn"]["train"]["backend"]  # the default again, TensorFlow
    repo.write_params(repo.params)
    assert stages_run(repo.dvc("repro")) == ["compare", "evaluate@digits_cnn-3"]
    assert [(repo.root / path).read_bytes() for path in first_run] == list(first_run.values())

    # A new model is one params.yaml block: its plots appear with no edit of dvc.yaml.
    repo.params["models"]["digits_wide"] = {"dataset": "digits", "builder": "signs_cnn",
                                           "network": {"filters": [12, 24]}}
    repo.write_params(repo.params)  # one params.yaml block, and no edit of dvc.yaml

    assert stages_run(repo.dvc("repro")) == ["compare", "evaluate@digits_wide-3", "train@digits_wide-3"]

    plots = json.loads(repo.dvc("plots", "show", "--json", "--split", stdout_only=True))["data"]
    for name in ("digits_wide", "faces_cnn"):
        for path in (f"reports/train/{name}/3/plots/metrics/eval/accuracy.tsv", f"reports/eval/{name}/3/roc.json",
                     f"reports/eval/{name}/3/predictions.json", f"reports/eval/{name}/3/precision_recall.json",
                     f"reports/eval/{name}/3/misclassified.png"):
            assert any(path in plot_id for plot_id in plots), (path, sorted(plots))
    assert any("reports/figures/roc_faces.png" in plot_id for plot_id in plots)
    assert "plots" not in yaml.safe_load((repo.root / "dvc.yaml").read_text()), "no top-level plot list"

    repo.run("git", "add", "-A")
    repo.run("git", "commit", "-qm", "with digits_wide")
    shown = json.loads(repo.dvc("exp", "show", "--json", stdout_only=True))
    metrics = {}
    for revision in shown:  # the workspace and the commit
        for path, content in revision["data"]["metrics"].items():
            metrics.update((f"{path}:{key}", value) for key, value in leaves(content["data"]))
    assert any(key.endswith("digits_wide/3.json:ci95.accuracy.low") for key in metrics), sorted(metrics)[:20]
    assert any(key.endswith("summary/models/digits_wide.json:test.accuracy.sd") for key in metrics)
    not_numbers = {key: value for key, value in metrics.items()
                   if isinstance(value, (str, list)) or value is None}
    assert not not_numbers, not_numbers

    compared = json.loads(repo.dvc("plots", "diff", "HEAD~1", "--json", "--split", stdout_only=True))["data"]
    for path in ("reports/train/digits_cnn/3/plots/metrics/eval/loss.tsv", "reports/eval/faces_cnn/3/roc.json",
                 "reports/eval/digits_wide/3/predictions.json", "reports/figures/scores.png"):
        assert any(path in plot_id for plot_id in compared), (path, sorted(compared))

    # One more training seed: its own train and evaluate stages per model, and compare; nothing else.
    repo.params["seeds"] = [3, 4]
    repo.write_params(repo.params)
    added = repo.dvc("repro")
    assert stages_run(added) == ["compare", *(f"{stage}@{model}-4" for stage in ("evaluate", "train")
                                              for model in ("digits_cnn", "digits_wide", "faces_cnn"))], added
    summary = json.loads((repo.root / "reports/summary/models/digits_cnn.json").read_text())
    assert summary["seeds"] == 2 and set(summary["test"]["accuracy"]["per_seed"]) == {"3", "4"}


def leaves(data, path=""):
    """(dotted path, value) of every leaf of nested dicts."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from leaves(value, f"{path}.{key}" if path else key)
    else:
        yield path, data


@pytest.mark.slow
def test_a_second_repro_at_the_same_time_is_refused_and_harms_nothing(one_model_repo, tmp_path):
    repo = one_model_repo
    log_path = tmp_path / "first.log"
    with open(log_path, "w") as log:
        first = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo.root, env=repo.env,
                                 stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "Running stage" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo.root, env=repo.env,
                                capture_output=True, text=True, timeout=600)
        first_status = first.wait(timeout=600)
    # DVC locks the files of the stage being run, not the whole repository: whichever run reaches a
    # stage the other holds stops there with DVC's message (normally the second, which starts later).
    refused = [output for status, output in ((first_status, log_path.read_text()),
                                             (second.returncode, second.stdout + second.stderr)) if status != 0]
    assert refused, "one of the two runs should have been refused"
    for output in refused:
        assert "failed to reproduce" in output and "is busy, it is being blocked by" in output, output
    repo.dvc("repro")  # finishes whatever the refused run left undone
    assert "Data and pipelines are up to date" in repo.dvc("status")
