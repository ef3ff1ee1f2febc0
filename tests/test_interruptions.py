"""Killed stages: training resumes where it stopped, and nothing half-written passes for an output."""

import json
import signal

import keras
import numpy as np
import pytest
from helpers import TENSORFLOW_PASS_ONLY, read_train_report, run_python, run_stage, save_params

from stages import evaluate, resume, train
from stages.config import load_params, model_spec
from stages.files import staged_path
from stages.resume import run_fingerprint

# Runs the train stage and SIGKILLs it after the first batch of the epoch that follows `after` completed
# epochs: mid-epoch, with no chance to clean up. Checkpoints are written after every epoch up to
# `checkpointed` and no later (as when CHECKPOINT_SECONDS have not passed since); the kill waits for the
# last one to be on disk.
KILLED_MID_EPOCH = """
import os, signal, sys
from stages import resume, train
after, checkpointed = int(sys.argv[2]), int(sys.argv[3])
resume.CHECKPOINT_SECONDS = 0
save = resume.Checkpoint.save
def save_until(self, state, model, best_weights):
    if state.epochs_done <= checkpointed:
        save(self, state, model, best_weights)
def kill_mid_epoch(self, batch, logs=None):
    if self.state.epochs_done == after and batch == 0:
        self.checkpoint.wait()
        os.kill(os.getpid(), signal.SIGKILL)
resume.Checkpoint.save = save_until
resume.EpochCheckpoint.on_train_batch_end = kill_mid_epoch
train.main(sys.argv[1:2])
"""


def train_killed_after(project, name, epochs, checkpointed=None):
    checkpointed = epochs if checkpointed is None else checkpointed
    result = run_python("-c", KILLED_MID_EPOCH, name, str(epochs), str(checkpointed), cwd=project)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def outputs_of(project, name):
    """(weights, report, curve values) of a finished training run."""
    weights = [w.numpy() for w in keras.models.load_model(project / "models" / name / "5.keras").weights]
    report = read_train_report(project, name)
    curves_dir = project / "reports/train" / name / "5/plots/metrics"
    curves = {path.relative_to(curves_dir).as_posix(): path.read_text() for path in curves_dir.rglob("*.tsv")}
    assert curves
    return weights, report, curves


def remove_outputs(project, name):
    """What DVC does before it re-runs a stage: delete the stage's outputs."""
    (project / "models" / name / "5.keras").unlink()
    (project / "reports/train" / name / "5.json").unlink()
    (project / "reports/runs" / name / "5.json").unlink()


EVERY_AUGMENTATION = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "shift": 0.1, "brightness": 0.1,
                      "contrast": 0.1, "blur": 0.5}


def use_transfer_with_dropout_and_augmentation(project):
    """Every random layer there is (dropout and each augmentation), so resuming must restore their states."""
    params = load_params()
    params["models"]["digits_transfer"]["network"].update(dropout=0.3, augmentation=EVERY_AUGMENTATION)
    params["models"]["digits_cnn"]["network"] = {"augmentation": EVERY_AUGMENTATION}
    params["models"]["digits_transfer"]["train"] = {"epochs": 2, "fine_tune": {"epochs": 2, "layers": 5,
                                                                               "learning_rate": 0.001}}
    save_params(project, params)


@pytest.mark.backends
@pytest.mark.slow
@pytest.mark.parametrize("name, kill_points", [
    # mid-run, checkpointed after the epoch before the kill, then after an earlier one only (a phase
    # like any other: the transfer model's first is no different)
    ("digits_cnn", [(2, 2), (2, 1)]),
    # Between the phases and in the fine-tuning phase, against one uninterrupted run; then in the
    # fine-tuning phase with only the first phase's first epoch checkpointed, so the first phase is
    # finished again. The phases' bookkeeping is the same on both backends, and XLA compiling
    # MobileNet takes minutes on this CPU: the JAX pass resumes the CNN alone.
    pytest.param("digits_transfer", [(2, 2), (3, 3), (3, 1)], marks=TENSORFLOW_PASS_ONLY),
])
def test_killed_run_resumes_and_ends_like_an_uninterrupted_one(tiny_project, name, kill_points, caplog):
    use_transfer_with_dropout_and_augmentation(tiny_project)
    assert run_stage(train, name) is None
    uninterrupted_weights, uninterrupted_report, uninterrupted_curves = outputs_of(tiny_project, name)
    caplog.set_level("INFO")

    for killed_after, checkpointed in kill_points:
        remove_outputs(tiny_project, name)
        train_killed_after(tiny_project, name, killed_after, checkpointed)
        assert not (tiny_project / "models" / name / "5.keras").exists()
        assert not (tiny_project / "reports/train" / name / "5.json").exists()
        state = json.loads((tiny_project / "models/resume" / name / "5" / "state.json").read_text())
        assert state["epochs_done"] == checkpointed

        caplog.clear()
        assert run_stage(train, name) is None

        assert f"resuming from models/resume/{name}/5 after epoch {checkpointed}" in caplog.text
        weights, report, curves = outputs_of(tiny_project, name)
        for resumed, expected in zip(weights, uninterrupted_weights, strict=True):
            np.testing.assert_array_equal(resumed, expected)
        assert report["resumed_after_epoch"] == checkpointed and uninterrupted_report["resumed_after_epoch"] == 0
        for key in ("epochs_run", "best_epoch", "best_val_loss", "best_val_accuracy"):
            assert report[key] == uninterrupted_report[key], key
        assert curves == uninterrupted_curves
        assert not (tiny_project / "models/resume" / name / "5").exists(), "a finished run deletes its checkpoint"


@pytest.mark.slow
def test_changed_params_start_fresh(tiny_project, caplog):
    train_killed_after(tiny_project, "digits_cnn", 2)
    params = load_params()
    params["models"]["digits_cnn"]["train"]["learning_rate"] = 0.003
    save_params(tiny_project, params)

    caplog.set_level("INFO")
    assert run_stage(train, "digits_cnn") is None

    assert "comes from other params, data or code: starting fresh" in caplog.text
    assert "resuming" not in caplog.text
    report = read_train_report(tiny_project, "digits_cnn")
    assert report["resumed_after_epoch"] == 0 and report["epochs_run"] == 4


@pytest.mark.slow
def test_changed_data_start_fresh(tiny_project, caplog):
    train_killed_after(tiny_project, "digits_cnn", 1)
    labels_path = tiny_project / "data/processed/digits/train/labels.npy"
    labels = np.load(labels_path)
    np.save(labels_path, labels[::-1].copy())

    caplog.set_level("INFO")
    assert run_stage(train, "digits_cnn") is None

    assert "starting fresh" in caplog.text
    assert read_train_report(tiny_project, "digits_cnn")["resumed_after_epoch"] == 0


def test_fingerprint_covers_settings_and_file_contents(tmp_path):
    data = tmp_path / "images.npy"
    data.write_bytes(b"one")
    first = run_fingerprint({"learning_rate": 0.1}, [data])
    assert run_fingerprint({"learning_rate": 0.1}, [data]) == first
    assert run_fingerprint({"learning_rate": 0.2}, [data]) != first
    data.write_bytes(b"two")
    assert run_fingerprint({"learning_rate": 0.1}, [data]) != first


@pytest.mark.backends
def test_checkpoint_holds_the_values_of_its_epoch_not_later_ones(tmp_path):
    """The checkpoint is written in the background while training changes the variables: save()
    must copy them, not hand the writer views that the next steps overwrite."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    saved = [np.array(variable.numpy()) for variable in resume.training_variables(model)]
    checkpoint = resume.Checkpoint(tmp_path / "resume", "fingerprint")
    checkpoint.save(resume.TrainingState("fingerprint"), model, None)
    for variable in model.weights:
        variable.assign(variable.numpy() + 1.0)
    model.optimizer.iterations.assign(7)
    checkpoint.wait()
    written = resume.load_arrays(tmp_path / "resume" / resume.VARIABLES_FILE)
    assert len(written) == len(saved)
    assert all(np.array_equal(before, after) for before, after in zip(saved, written))


@pytest.mark.backends
def test_later_checkpoints_write_their_own_epochs_values_into_the_reused_arrays(tmp_path):
    """Each save copies into the arrays of the one before (no fresh memory each epoch); a new phase's
    optimizer, with other variables, gets arrays of its own."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    checkpoint = resume.Checkpoint(tmp_path / "resume", "fingerprint")
    checkpoint.save(resume.TrainingState("fingerprint"), model, None)
    first = checkpoint.snapshot
    for variable in model.weights:
        variable.assign(variable.numpy() * 2.0 + 3.0)
    model.optimizer.iterations.assign(5)
    expected = [np.array(variable.numpy()) for variable in resume.training_variables(model)]
    checkpoint.save(resume.TrainingState("fingerprint"), model, None)
    checkpoint.wait()
    assert all(now is before for now, before in zip(checkpoint.snapshot, first))
    written = resume.load_arrays(tmp_path / "resume" / resume.VARIABLES_FILE)
    assert all(np.array_equal(value, back) for value, back in zip(expected, written, strict=True))

    model.compile(optimizer="sgd", loss="mse")  # a new phase: other optimizer variables
    model.optimizer.build(model.trainable_variables)
    checkpoint.save(resume.TrainingState("fingerprint"), model, None)
    checkpoint.wait()
    written = resume.load_arrays(tmp_path / "resume" / resume.VARIABLES_FILE)
    expected = [np.array(variable.numpy()) for variable in resume.training_variables(model)]
    assert all(np.array_equal(value, back) for value, back in zip(expected, written, strict=True))


class RecordedSaves:
    """Stands in for a Checkpoint: notes how many epochs each save held and the logs it carried."""

    def __init__(self):
        self.saves = []

    def save(self, state, model, best_weights):
        self.saves.append((state.epochs_done, len(state.epoch_logs)))


def test_a_checkpoint_is_saved_once_checkpoint_seconds_have_passed_since_the_last(monkeypatch):
    clock = iter([0.0, 25.0, 50.0, 70.0, 100.0, 125.0, 131.0])  # fit begins, then six epochs end
    monkeypatch.setattr(resume.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 60)
    recorder, state = RecordedSaves(), resume.TrainingState("fingerprint")
    stopper = resume.ResumableEarlyStopping(patience=6)
    stopper.on_train_begin()
    callback = resume.EpochCheckpoint(recorder, state, stopper, end_epoch=6, seconds_before=0.0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # as fit sets it
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(6):
        callback.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1)})

    assert recorder.saves == [(3, 3), (6, 6)]  # 70 s after the start, then 61 s after that save
    assert state.epoch_seconds == [25.0, 25.0, 20.0, 30.0, 25.0, 6.0] and state.fit_seconds == 131.0
    assert state.phase_finished


def test_checkpoint_arrays_read_back_with_their_dtypes_shapes_and_values(tmp_path):
    arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.int64(7), np.zeros((0, 5), np.float16),
              np.array([True, False]), np.arange(6, dtype=np.uint8).reshape(2, 3)[:, ::2]]  # the last not contiguous
    resume.save_arrays(tmp_path / "arrays.npy", arrays)
    read = resume.load_arrays(tmp_path / "arrays.npy")
    assert len(read) == len(arrays)
    for written, back in zip(arrays, read):
        assert back.dtype == np.asarray(written).dtype and back.shape == np.shape(written)
        assert np.array_equal(back, written)


@pytest.mark.slow
def test_unreadable_checkpoint_starts_fresh(tiny_project, caplog):
    train_killed_after(tiny_project, "digits_cnn", 1)
    (tiny_project / "models/resume/digits_cnn/5/state.json").write_text("{not json")

    caplog.set_level("INFO")
    assert run_stage(train, "digits_cnn") is None

    assert "is unreadable" in caplog.text and "starting fresh" in caplog.text


KILLED_WHILE_SAVING = """
import os, signal, sys
from stages import files, train
real_staged_path = files.staged_path
class KillInside:
    def __init__(self, path, directory=False):
        self.inner = real_staged_path(path, directory)
    def __enter__(self):
        self.temporary = self.inner.__enter__()
        return self.temporary
    def __exit__(self, *exc):
        if self.temporary.suffix == ".keras":  # the model is written in full, not yet moved into place
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.__exit__(*exc)
files.staged_path = KillInside  # save_model looks it up when it saves
train.main(sys.argv[1:])
"""


@pytest.mark.slow
def test_stage_killed_while_writing_its_model_leaves_nothing_that_passes_for_it(tiny_project):
    result = run_python("-c", KILLED_WHILE_SAVING, "digits_cnn", cwd=tiny_project)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]

    assert not (tiny_project / "models/digits_cnn/5.keras").exists()
    leftovers = [path.name for path in (tiny_project / "models/digits_cnn").iterdir() if path.is_file()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".5.keras.partial-")
    assert not (tiny_project / "reports/train/digits_cnn/5.json").exists()
    with pytest.raises(SystemExit, match=r"models/digits_cnn/5.keras is missing: run `dvc repro train@digits_cnn-5`"):
        evaluate.main(["digits_cnn"])

    assert run_stage(train, "digits_cnn") is None  # the next run resumes, finishes and clears the leftover
    assert [path.name for path in (tiny_project / "models/digits_cnn").iterdir() if path.is_file()] == ["5.keras"]
    assert model_spec(load_params(), "digits_cnn").report_path.is_file()


STAGED_WRITE_THEN_KILL = """
import os, signal, sys
from pathlib import Path
from stages.files import staged_path
with staged_path(Path(sys.argv[1]), directory=sys.argv[2] == "dir") as temporary:
    if sys.argv[2] == "dir":
        (temporary / "images.npy").write_bytes(b"half")
    else:
        temporary.write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "dir"])
def test_a_write_killed_midway_never_replaces_the_output(tmp_path, kind):
    target = tmp_path / "out" / ("split" if kind == "dir" else "report.json")
    with staged_path(target, directory=kind == "dir") as temporary:
        (temporary / "images.npy").write_bytes(b"whole") if kind == "dir" else temporary.write_bytes(b"whole")

    result = run_python("-c", STAGED_WRITE_THEN_KILL, str(target), kind, cwd=tmp_path)

    assert result.returncode == -signal.SIGKILL
    complete = target / "images.npy" if kind == "dir" else target
    assert complete.read_bytes() == b"whole", "the previous complete output is untouched"
    assert len(list(target.parent.iterdir())) == 2, "plus one hidden partial"
    with staged_path(target, directory=kind == "dir") as temporary:
        pass
    assert [path.name for path in target.parent.iterdir()] == [target.name], "the next write clears the partial"
