"""Resuming an interrupted training run from its last checkpoint.

The train stage talks to one ResumableRun; everything about resuming lives here. At the end of an
epoch, once CHECKPOINT_SECONDS have passed since the last, it writes a checkpoint folder,
models/resume/<model>/<seed>/, atomically:
the model's weights, the random-generator states of layers such as dropout (Keras's weights files
leave them out), the optimizer's state, the early stopper's best weights, and a JSON record
of where training stands and of every epoch's logs. The record carries a fingerprint of what the run
depends on (the model's params, the training seed, the training data, the code that builds and trains it,
the library versions): a checkpoint with another fingerprint is deleted and training starts fresh.
A finished run deletes its checkpoint.
"""

import hashlib
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from stages.backend import host_copy, versions
from stages.files import file_sha256, remove_path, staged_path

log = logging.getLogger("resume")

STATE_FILE = "state.json"
VARIABLES_FILE = "variables.npy"
BEST_WEIGHTS_FILE = "best_weights.npy"

# Training time between checkpoints: a kill loses at most this and the epoch under way. Each
# checkpoint costs ResNet50 about 1 s of a 21 s epoch on a 2-core CPU (docs/training.md); a run
# resumed from an older checkpoint still ends exactly like an uninterrupted one.
CHECKPOINT_SECONDS = 60


@dataclass
class TrainingState:
    """Where an interrupted run stands: `phase` is the fit call it was in, `epochs_done` the epochs finished."""

    fingerprint: str
    phase: int = 0
    phase_first_epoch: int = 0
    phase_finished: bool = False
    epochs_done: int = 0
    fit_seconds: float = 0.0
    epoch_seconds: list = field(default_factory=list)
    epoch_logs: list = field(default_factory=list)
    stopper: dict = field(default_factory=dict)


def run_fingerprint(settings, files):
    """sha256 over the JSON of `settings`, the Keras and backend versions, and the contents of `files`."""
    digest = hashlib.sha256()
    digest.update(json.dumps({**settings, **versions()}, sort_keys=True, default=str).encode())
    for path in sorted(str(path) for path in files):
        digest.update(f"{path}\t{file_sha256(path)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def generator_variables(model):
    """The model's variables that are not weights: the states of its layers' random generators."""
    weight_ids = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in weight_ids]


def training_variables(model):
    """Everything training changes, in a fixed order: weights, random-generator states, optimizer state."""
    return [*model.weights, *generator_variables(model), *model.optimizer.variables]


def save_arrays(path, arrays):
    """The arrays one after another in one file, each as np.save writes it. Not np.savez: its zip
    archive's Python-level writes and checksums took ResNet50's checkpoint 2-8x the CPU time, on a core
    that training needs (docs/training.md#interrupted-runs-and-atomic-outputs)."""
    with open(path, "wb") as file:
        np.save(file, np.int64(len(arrays)), allow_pickle=False)
        for array in arrays:
            np.save(file, array, allow_pickle=False)


def load_arrays(path):
    with open(path, "rb") as file:
        count = int(np.load(file, allow_pickle=False))
        return [np.load(file, allow_pickle=False) for _ in range(count)]


class Checkpoint:
    """The checkpoint folder of one model's training run.

    save() copies the values in the calling thread and writes them in a background thread, so
    training goes on while the files are written; one write is in flight at most. A run killed
    during a write resumes from the checkpoint before it. With writes=False (every process of a
    data-parallel run but the first) it reads the checkpoint and never changes it.
    """

    def __init__(self, directory, fingerprint, writes=True):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.writes = writes
        self.writer = None
        self.write_error = None
        self.snapshot = None  # the arrays the last save copied into, reused once its write is done
        self.epochs_saved = 0  # epochs done by the last checkpoint this process loaded or saved

    def load(self):
        """The saved TrainingState if it belongs to this run; a stale or unreadable one is deleted."""
        state_path = self.directory / STATE_FILE
        if not state_path.is_file():
            return None
        try:
            state = TrainingState(**json.loads(state_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError) as error:
            log.warning("%s is unreadable (%s): starting fresh", state_path, error)
            self.discard()
            return None
        if state.fingerprint != self.fingerprint:
            log.info("%s comes from other params, data or code: starting fresh", self.directory)
            self.discard()
            return None
        self.epochs_saved = state.epochs_done
        return state

    def save(self, state, model, best_weights):
        """Snapshot the state, the model's training variables and the best weights; write them in the background."""
        if not self.writes:
            return
        self.wait()
        values = self._snapshot(training_variables(model))
        best = None if best_weights is None else list(best_weights)  # the stopper replaces, never mutates, it
        record = json.dumps(asdict(state))
        self.writer = threading.Thread(target=self._write, args=(record, values, best), daemon=True)
        self.writer.start()
        self.epochs_saved = state.epochs_done

    def _snapshot(self, variables):
        """The variables' values, copied into the arrays of the previous snapshot where they fit: a fresh
        270 MiB for ResNet50 each epoch cost 0.3-0.8 s of page faults in the training thread."""
        previous = self.snapshot or []
        if [(a.shape, str(a.dtype)) for a in previous] != [(tuple(v.shape), v.dtype) for v in variables]:
            previous = [None] * len(variables)  # the first epoch, or a new phase's optimizer
        self.snapshot = [host_copy(variable, out=array) for variable, array in zip(variables, previous)]
        return self.snapshot

    def _write(self, record, values, best):
        try:
            with staged_path(self.directory, directory=True) as temporary:
                save_arrays(temporary / VARIABLES_FILE, values)
                if best is not None:
                    save_arrays(temporary / BEST_WEIGHTS_FILE, best)
                (temporary / STATE_FILE).write_text(record, encoding="utf-8")
        except OSError as error:  # re-raised in the training thread by wait()
            self.write_error = error

    def wait(self):
        """Block until the write in flight, if any, is on disk."""
        if self.writer is not None:
            self.writer.join()
            self.writer = None
        if self.write_error is not None:
            error, self.write_error = self.write_error, None
            raise error

    def restore_into(self, model):
        """Load weights, generator and optimizer states into a compiled model of the same shape."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for variable, value in zip(training_variables(model), load_arrays(self.directory / VARIABLES_FILE),
                                   strict=True):
            variable.assign(value)

    def best_weights(self):
        path = self.directory / BEST_WEIGHTS_FILE
        return load_arrays(path) if path.is_file() else None

    def discard(self):
        self.wait()
        if self.writes:
            remove_path(self.directory)


def _float_or_none(value):
    return None if value is None else float(value)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's EarlyStopping whose progress (best value, its epoch and weights, epochs waited) can be
    saved and carried into the fit call of a resumed run."""

    def __init__(self, restored=None, restored_best_weights=None, **kwargs):
        super().__init__(**kwargs)
        self.restored = restored or {}
        self.restored_best_weights = restored_best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.restored:
            self.best = self.restored["best"]
            self.best_epoch = self.restored["best_epoch"]
            self.wait = self.restored["wait"]
            self.best_weights = self.restored_best_weights

    def progress(self):
        return {"best": _float_or_none(self.best), "best_epoch": int(self.best_epoch), "wait": int(self.wait)}


class EpochCheckpoint(keras.callbacks.Callback):
    """Records each epoch and saves a Checkpoint at the end of the first epoch CHECKPOINT_SECONDS after
    the last one (or after the fit call began); goes after the early stopper in the callback list."""

    def __init__(self, checkpoint, state, stopper, end_epoch, seconds_before):
        super().__init__()
        self.checkpoint, self.state, self.stopper = checkpoint, state, stopper
        self.end_epoch, self.seconds_before = end_epoch, seconds_before

    def on_train_begin(self, logs=None):
        self.started = self.last_epoch_end = self.last_save = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        # Each epoch's time runs from the previous epoch's end, so it includes the previous checkpoint.
        now = time.perf_counter()
        state.epoch_seconds.append(round(now - self.last_epoch_end, 4))
        self.last_epoch_end = now
        state.epoch_logs.append({key: float(value) for key, value in (logs or {}).items()})
        state.epochs_done = epoch + 1
        state.phase_finished = bool(epoch + 1 >= self.end_epoch or self.model.stop_training)
        state.stopper = self.stopper.progress()
        state.fit_seconds = self.seconds_before + now - self.started
        if now - self.last_save >= CHECKPOINT_SECONDS:
            self.checkpoint.save(state, self.model, self.stopper.best_weights)
            self.last_save = now


class ResumableRun:
    """One model's training run as it may be resumed: its checkpoint, where it stands, and the callbacks
    that save it between epochs.

    The train stage runs its phases (one fit call each) in order and asks, per phase, whether it is
    already done and for its callbacks; this object restores what an interrupted run had reached.
    """

    def __init__(self, directory, fingerprint, writes=True):
        self.checkpoint = Checkpoint(directory, fingerprint, writes)
        self.state = self.checkpoint.load() or TrainingState(fingerprint)
        self.resumed_after_epoch = self.state.epochs_done

    def replay_logs(self, callback):
        """Hand the epochs logged before the interruption to a callback (dvclive's curves)."""
        for epoch, logs in enumerate(self.state.epoch_logs):
            callback.on_epoch_end(epoch, logs)

    def skips(self, phase):
        """Whether phase `phase` ended before the interrupted run's current phase began."""
        return phase < self.state.phase

    def phase_callbacks(self, phase, epochs, model, **early_stopping):
        """[early stopper, checkpoint saver] for phase `phase` of `epochs` epochs, or None when the
        interrupted run had finished it (its best weights are then back in the model).

        Call it with the model compiled for the phase: a phase under way when the run was
        interrupted gets its weights, random-generator and optimizer states restored.
        """
        state = self.state
        resumed = phase == state.phase and state.epochs_done > state.phase_first_epoch
        if resumed:
            self.checkpoint.restore_into(model)
            restored, best_weights = state.stopper, self.checkpoint.best_weights()
            if state.phase_finished:
                if best_weights is not None:
                    model.set_weights(best_weights)
                return None
        else:
            state.phase, state.phase_first_epoch, state.phase_finished = phase, state.epochs_done, False
            restored, best_weights = None, None
        stopper = ResumableEarlyStopping(restored, best_weights, restore_best_weights=True, **early_stopping)
        return [stopper, EpochCheckpoint(self.checkpoint, state, stopper, self.end_epoch(epochs), state.fit_seconds)]

    @property
    def first_epoch(self):
        """The epoch the current phase's fit call starts from."""
        return self.state.epochs_done

    def end_epoch(self, epochs):
        """The epoch after the current phase's last."""
        return self.state.phase_first_epoch + epochs

    @property
    def best_epoch(self):
        """The best epoch (0-based) of the last phase by its monitor."""
        return self.state.stopper.get("best_epoch", 0)

    def history(self):
        """{log key: [value per epoch]} over every epoch of the run."""
        logs = self.state.epoch_logs
        return {key: [epoch[key] for epoch in logs] for key in logs[-1]}

    def finish(self):
        """Delete the checkpoint: the run is complete and its outputs are written."""
        self.checkpoint.discard()
