"""Damaged intermediate files: each stage checks what it reads and says what is wrong and how to mend it."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO_ROOT, run_stage, write_image_folders
from PIL import Image

from benchmarks.benchmark import stages_run
from stages import evaluate, predict, train
from stages.config import load_params, model_spec
from stages.files import file_sha256, remove_path
from stages.models import get_builder, save_model

MEND_DATA = "run `dvc repro preprocess@digits` to rebuild it"
MEND_MODEL = "run `dvc repro train@digits_cnn-5` to rebuild it"


def truncate(path, size):
    with open(path, "r+b") as handle:
        handle.truncate(size)


def assert_one_clear_line(message, *parts):
    assert message is not None and "\n" not in message and "Traceback" not in message
    for part in parts:
        assert part in message, message


def test_truncated_processed_split(tiny_project):
    images = tiny_project / "data/processed/digits/train/images.npy"
    truncate(images, 1000)

    message = run_stage(train, "digits_cnn")

    assert_one_clear_line(message, "train digits_cnn: error: data/processed/digits/train/images.npy is not a "
                          "readable .npy array", MEND_DATA)
    assert not (tiny_project / "models").exists()


def test_labels_with_fewer_rows_than_images(saved_model, tiny_project):
    labels_path = tiny_project / "data/processed/digits/test/labels.npy"
    np.save(labels_path, np.load(labels_path)[:-5])

    message = run_stage(evaluate, "digits_cnn")

    assert_one_clear_line(message, "data/processed/digits/test/labels.npy: expected 12 labels, one per image of "
                          "images.npy, found 7", MEND_DATA)
    assert not (tiny_project / "reports/metrics/digits_cnn/5.json").exists()


def test_images_of_another_shape_or_type(tiny_project):
    images_path = tiny_project / "data/processed/digits/train/images.npy"
    np.save(images_path, np.load(images_path).astype(np.float32) / 255)

    message = run_stage(train, "digits_cnn")

    assert_one_clear_line(message, "images.npy: expected uint8 images of 16x16x3, found float32 16x16x3", MEND_DATA)


def test_missing_split_file(tiny_project):
    (tiny_project / "data/processed/digits/train/labels.npy").unlink()
    assert_one_clear_line(run_stage(train, "digits_cnn"), "data/processed/digits/train/labels.npy is missing",
                          MEND_DATA)


@pytest.mark.parametrize("stage, arguments, prefix", [
    (evaluate, ["digits_cnn"], "evaluate digits_cnn: error: "),
    (predict, ["digits_cnn", "red.png"], "predict: error: "),
])
def test_truncated_model_file(saved_model, tiny_project, stage, arguments, prefix):
    truncate(tiny_project / "models/digits_cnn/5.keras", 2000)

    message = run_stage(stage, *arguments)

    assert_one_clear_line(message, prefix + "models/digits_cnn/5.keras: expected a Keras model archive", MEND_MODEL)
    assert "File not found" not in message
    assert not (tiny_project / "reports/metrics/digits_cnn/5.json").exists()


def test_model_file_that_is_not_an_archive(saved_model, tiny_project):
    (tiny_project / "models/digits_cnn/5.keras").write_text("not a model")
    assert_one_clear_line(run_stage(evaluate, "digits_cnn"), "models/digits_cnn/5.keras: expected a Keras model archive",
                          MEND_MODEL)


# --- a kill at any moment loses nothing ------------------------------------------------------------------

KILL_SEED = 15
STAGE_KINDS = ("download", "preprocess", "train", "evaluate", "compare")
KILLS_PER_KIND = 2
CHAINS = 1
# A kill comes at a random moment in the first WINDOW_SHARE of a stage's length in the uninterrupted run
# (well inside it: on a loaded machine the same stage's length varies by half from run to run).
WINDOW_SHARE = 0.6


def lasting_outputs(root):
    """What an interrupted pipeline must end with exactly as an uninterrupted one: every file under data/ and
    models/ (bytes), and every figure of the JSON reports except the measured times (inference speed, run facts)."""
    snapshot = {}
    for folder in ("data", "models"):
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                snapshot[path.relative_to(root).as_posix()] = file_sha256(path)
    for path in sorted((root / "reports").rglob("*.json")):
        if path.relative_to(root / "reports").parts[0] != "runs":
            report = json.loads(path.read_text())
            if isinstance(report, dict):
                report.pop("inference", None)
            snapshot[path.relative_to(root).as_posix()] = report
    return snapshot


def timed_repro(repo):
    """Run `dvc repro` uninterrupted; {stage kind: seconds from its start to the next stage's (or the end)}."""
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=repo.root,
                               env={**repo.env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    starts = []
    for line in process.stdout:
        starts += [(stage.split("@")[0], time.monotonic()) for stage in stages_run(line)]
    assert process.wait() == 0
    ends = [moment for _, moment in starts[1:]] + [time.monotonic()]
    return {kind: end - start for (kind, start), end in zip(starts, ends)}


def mend_dvc_rwlock(root):
    """DVC rewrites .dvc/tmp/rwlock in place: a kill in that instant leaves it unreadable, and every later
    dvc command refuses to run. The mend docs/troubleshooting.md gives: with no DVC running, delete it."""
    rwlock = root / ".dvc" / "tmp" / "rwlock"
    try:
        json.loads(rwlock.read_text())
    except FileNotFoundError:
        pass
    except ValueError:
        rwlock.unlink()


def repro_killed_in(repo, kind, delay, log_path):
    """Start `dvc repro`, and SIGKILL it with its stage process `delay` s after a stage of `kind` (or of a later
    kind, when this run has no `kind` stage left to run) starts.

    Returns the stage the kill hit (the last one started), or None when the run ended first.
    """
    markers = [f"Running stage '{later}" for later in STAGE_KINDS[STAGE_KINDS.index(kind):]]
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--no-run-cache"], cwd=repo.root,
                                   env={**repo.env, "PYTHONUNBUFFERED": "1"},  # each line as it is printed
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 300
        while process.poll() is None and not any(marker in log_path.read_text() for marker in markers):
            assert time.monotonic() < deadline, log_path.read_text()[-2000:]
            time.sleep(0.05)
        time.sleep(delay)
        if process.poll() is not None:
            return None
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    mend_dvc_rwlock(repo.root)
    started = stages_run(log_path.read_text())
    return started[-1] if started else "dvc, before any stage"


@pytest.mark.slow
def test_kill_at_random_moments_then_repro_ends_as_an_uninterrupted_run(one_model_repo, tmp_path, capsys):
    repo = one_model_repo
    stage_seconds = timed_repro(repo)
    reference = lasting_outputs(repo.root)
    assert any(key.startswith("models/") for key in reference) and "reports/metrics/digits_cnn/3.json" in reference

    rng = random.Random(KILL_SEED)
    hits = []
    for chain in range(CHAINS):
        for path in ("data", "models", "reports", "dvc.lock"):  # every stage has to run again, none restored
            remove_path(repo.root / path)
        for kind in STAGE_KINDS:
            killed = 0
            for _ in range(2 * KILLS_PER_KIND):  # a run can end before its kill comes: then try again
                delay = round(rng.uniform(0.0, WINDOW_SHARE * stage_seconds[kind]), 2)
                hit = repro_killed_in(repo, kind, delay, tmp_path / f"kill-{len(hits)}.log")
                hits.append((chain, kind, delay, hit or "nothing: the run had ended"))
                killed += hit is not None
                if killed == KILLS_PER_KIND:
                    break
        repo.dvc("repro")
        assert "Data and pipelines are up to date" in repo.dvc("status"), f"chain {chain}"
        assert lasting_outputs(repo.root) == reference, f"chain {chain}: outputs differ from the uninterrupted run"

    killed = [hit for *_, hit in hits if not hit.startswith("nothing")]
    with capsys.disabled():
        print(f"\nkill matrix: {len(hits)} kill points tried, {len(killed)} killed a running dvc repro:")
        for chain, kind, delay, hit in hits:
            print(f"  chain {chain}: {delay:5.2f} s into a {kind} stage -> {hit}")
    assert {hit.split("@")[0] for hit in killed} >= set(STAGE_KINDS), "every stage kind was hit"


# --- a full disk ----------------------------------------------------------------------------------------

def test_a_full_disk_is_one_clear_line_and_leaves_no_partial_output(tiny_project, monkeypatch):
    from stages import preprocess

    def full_disk(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    write_image_folders(tiny_project / "data/raw/digits", {"0": 4, "1": 4, "2": 4}, size=(16, 16))
    remove_path(tiny_project / "data/processed/digits")
    monkeypatch.setattr(np, "save", full_disk)

    message = run_stage(preprocess, "digits")

    assert_one_clear_line(message, "preprocess digits: error: no space left on the device while writing",
                          "free some space and run `dvc repro` again")
    assert sorted(path.name for path in (tiny_project / "data/processed").iterdir()) == ["faces"]


def mount_tmpfs(directory, size):
    """Mount a tmpfs of `size` on directory; False where this machine does not allow it."""
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_stage_that_fills_its_disk_fails_cleanly_and_the_next_repro_completes(one_model_repo):
    repo = one_model_repo
    models = repo.root / "models"
    if not mount_tmpfs(models, "8k"):
        pytest.skip("this machine does not allow mounting a tmpfs (needs root); the injected ENOSPC test covers it")
    try:
        failed = subprocess.run([sys.executable, "-m", "dvc", "repro"], cwd=repo.root, env=repo.env,
                                capture_output=True, text=True, timeout=600)
        assert failed.returncode != 0
        output = failed.stdout + failed.stderr
        assert "train digits_cnn: error: no space left on the device" in output, output[-3000:]
        assert "Traceback" not in output
        leftovers = [path.relative_to(models).as_posix() for path in models.rglob("*") if path.is_file()]
        assert all(path.startswith("resume/") for path in leftovers), f"only complete checkpoints may stay: {leftovers}"
    finally:
        subprocess.run(["umount", str(models)], check=True)  # space freed

    repo.dvc("repro")
    assert "Data and pipelines are up to date" in repo.dvc("status")
    assert (models / "digits_cnn/3.keras").is_file()


# --- reading a model while it is rewritten --------------------------------------------------------------

REWRITER = """
import sys, time
import keras
from stages.models import get_builder, save_model
models = []
for seed in (1, 2):
    keras.utils.set_random_seed(seed)
    models.append(get_builder("signs_cnn")((16, 16, 3), 3))
deadline = time.monotonic() + float(sys.argv[1])
count = 0
while time.monotonic() < deadline:
    save_model(models[count % 2], "models/digits_cnn/5.keras")
    count += 1
print(count)
"""


@pytest.mark.slow
def test_predict_reads_the_old_model_or_the_new_never_a_torn_one(tiny_project):
    """A writer process rewrites the model with two sets of weights, back to back, while predict reads it."""
    spec = model_spec(load_params(), "digits_cnn")
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tiny_project / "red.png")
    expected = []
    for seed in (1, 2):
        import keras

        keras.utils.set_random_seed(seed)
        save_model(get_builder("signs_cnn")((16, 16, 3), 3), spec.model_path)
        expected.append(predict.predict([spec], ["red.png"])[0]["probabilities"])
    assert expected[0] != expected[1]

    writer = subprocess.Popen([sys.executable, "-c", REWRITER, "20"], cwd=tiny_project, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    reads = []
    while writer.poll() is None:
        probabilities = predict.predict([spec], ["red.png"])[0]["probabilities"]
        reads.append(expected.index(probabilities) if probabilities in expected else "torn")
    saves = int(writer.communicate()[0].strip().splitlines()[-1])

    assert writer.returncode == 0 and saves > 20 and len(reads) > 20, (saves, len(reads))
    assert "torn" not in reads and set(reads) == {0, 1}, reads
