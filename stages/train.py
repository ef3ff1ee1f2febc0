"""train stage: train one model of params.yaml on its processed dataset.

Carves a stratified validation split from the training set (never the test set), trains with the
model's merged `train` settings, keeps the best epoch by the validation monitor, and optionally
fine-tunes the top layers of a transfer model's backbone at a lower learning rate, on the Keras
backend that `train.backend` names (stages/backend.py), over several devices and processes with
`distribution: data_parallel`. Data stream from disk (stages/inputs.py). One run per training
seed (params.yaml's `seeds`; dvc.yaml's matrix): the seed draws the validation carve, the initial
weights, the augmentation and the order. Writes models/<model>/<seed>.keras,
reports/train/<model>/<seed>.json and dvclive's per-epoch curves under reports/train/<model>/<seed>/.
A run that is killed resumes from its last checkpoint when it is started again with the same
settings, data and code (stages/resume.py).

Keras is imported inside the functions: main() sets the backend first.

    python -m stages.train <model> [seed]
"""

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from stages.backend import (BackendError, backend_name, cpu_name, gpu_names, host_copy, make_deterministic, use_backend,
                            versions)
from stages.cli import exit_on, parse_stage_arguments, peak_memory_mib
from stages.code import REPO_ROOT, code_files
from stages.config import ParamsError, load_params, model_spec
from stages.data import DataError, class_indices, load_split, split_files
from stages.files import write_json
from stages.models import BACKBONE_LAYER, BUILDER_MODULES, UnknownBuilderError, get_builder, save_model, weights_origin
from stages.splits import SplitError, stratified_holdout

log = logging.getLogger("train")

# Keras's own variable for the number of processes training together (keras.distribution.initialize).
PROCESSES_ENV = "KERAS_DISTRIBUTION_NUM_PROCESSES"


class TrainError(RuntimeError):
    """A model that cannot be trained as params.yaml describes it."""


def process_count():
    """The processes training together: Keras's KERAS_DISTRIBUTION_NUM_PROCESSES, else 1."""
    value = os.environ.get(PROCESSES_ENV, "1").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise TrainError(f"{PROCESSES_ENV} must be a positive whole number, got {value!r}")
    return int(value)


def start_data_parallel():
    """Keras's DataParallel over every device of every process; returns (this process's Shard, devices).

    Several processes (on one host or many) join through Keras's own variables: the coordinator's
    host:port in KERAS_DISTRIBUTION_JOB_ADDRESSES, KERAS_DISTRIBUTION_NUM_PROCESSES and
    KERAS_DISTRIBUTION_PROCESS_ID (docs/training.md). Every process feeds its own part of each batch.
    """
    import keras

    from stages.inputs import Shard

    if backend_name() != "jax":
        raise TrainError("distribution: data_parallel needs train.backend: jax (Keras's distribution API "
                         f"trains across devices and processes on JAX), not {backend_name()}")
    if process_count() > 1:
        keras.distribution.initialize()
    import jax

    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False))
    return Shard(jax.process_index(), jax.process_count()), len(devices)


def configure_runtime(train, seed):
    """Seed Python, NumPy and the backend, make kernels deterministic, pick precision, compilation and devices.

    Returns this process's Shard of each batch and a description of the runtime for the report.
    """
    import keras

    from stages.inputs import Shard

    shard, devices = start_data_parallel() if train["distribution"] == "data_parallel" else (Shard(), 1)
    keras.utils.set_random_seed(seed)
    gpus, backend = gpu_names(), backend_name()
    mixed_precision = train["mixed_precision"] is True or (train["mixed_precision"] == "auto" and bool(gpus))
    # auto: JAX compiles every step with XLA anyway; TensorFlow only where a GPU makes it pay.
    jit_compile = train["jit_compile"] is True or (train["jit_compile"] == "auto" and (backend == "jax" or bool(gpus)))
    # TensorFlow's deterministic kernels and XLA exclude each other (Keras then quietly runs uncompiled),
    # so a TensorFlow run has one or the other. JAX asks XLA for deterministic kernels (stages/backend.py).
    deterministic = backend == "jax" or not jit_compile
    if deterministic:
        make_deterministic()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    runtime = {"backend": backend, "device": f"GPU: {', '.join(gpus)}" if gpus else "CPU", "cpu": cpu_name(),
               "mixed_precision": mixed_precision, "jit_compile": jit_compile, "deterministic_ops": deterministic,
               "distribution": train["distribution"], "devices": devices, "processes": shard.count,
               "versions": versions()}
    return shard, runtime


def validation_split(labels, fraction, seed):
    """(training indices, validation indices): a stratified holdout drawn with the training seed."""
    try:
        held_out = stratified_holdout(class_indices(labels), fraction, seed)
    except SplitError as error:
        raise TrainError(f"validation_fraction: {error}") from error
    return np.setdiff1d(np.arange(len(labels)), held_out), held_out


def balanced_class_weight(labels):
    """{class: n / (classes * n_class)}, so each class weighs the same in the loss."""
    indices = class_indices(labels)
    classes = np.unique(indices)
    weights = compute_class_weight("balanced", classes=classes, y=indices)
    return {int(c): float(weight) for c, weight in zip(classes, weights)}


def build_model(spec, input_shape):
    """The model's builder called with its `network` block; argument errors name the block."""
    network = {key: value for key, value in spec.network.items() if key != "gradcam_layer"}  # for Grad-CAM alone
    try:
        builder = get_builder(spec.builder)
        return builder(input_shape, spec.dataset.num_classes, **network)
    except (TypeError, ValueError, UnknownBuilderError) as error:
        raise TrainError(f"models.{spec.name}: cannot build '{spec.builder}' from network "
                         f"{spec.network}: {error}") from error
    except RuntimeError as error:  # e.g. pretrained weights that cannot be found or verified
        raise TrainError(f"models.{spec.name}: {error}") from error


def compile_model(model, optimizer, learning_rate, num_classes, jit_compile):
    import keras

    from stages.models.augmentation import compile_augmentation

    compile_augmentation(model)
    loss = "binary_crossentropy" if num_classes == 2 else "categorical_crossentropy"
    # A fixed name: Keras numbers unnamed optimizers per process (adam, adam_1, ...) and saves the name.
    config = {"learning_rate": learning_rate, "name": optimizer}
    model.compile(optimizer=keras.optimizers.get({"class_name": optimizer, "config": config}),
                  loss=loss, metrics=["accuracy"], jit_compile=jit_compile)


def unfreeze_top_layers(model, count):
    """Make the top `count` layers of the backbone trainable, the rest and every batch norm frozen.

    A frozen batch norm runs in inference mode, with its pretrained statistics. Calling the backbone
    with training=False does not do that in Keras 3: fit's training=True reaches the nested layers.
    """
    import keras

    try:
        backbone = model.get_layer(BACKBONE_LAYER)
    except ValueError as error:
        raise TrainError(f"fine_tune needs a transfer model (one with a layer named '{BACKBONE_LAYER}')") from error
    if backbone.trainable:
        log.info("the backbone already trains as a whole (random initial weights): nothing to unfreeze")
        return
    backbone.trainable = True
    for position, layer in enumerate(backbone.layers):
        layer.trainable = position >= len(backbone.layers) - count and not isinstance(
            layer, keras.layers.BatchNormalization)


def training_phases(train):
    """(epochs, learning rate, backbone layers to unfreeze or None) for each call to fit."""
    phases = [(train["epochs"], train["learning_rate"], None)]
    if train.get("fine_tune"):
        fine_tune = train["fine_tune"]
        phases.append((fine_tune["epochs"], fine_tune["learning_rate"], fine_tune["layers"]))
    return phases


def training_fingerprint(spec):
    """What a checkpoint must match to be resumed: the model's settings, its training data, the code.

    The code is what the stage imports, its builder's module included (stages/code.py): the same
    files as its dvc.yaml deps.
    """
    from stages.resume import run_fingerprint

    settings = {"model": spec.name, "dataset": spec.dataset.name, "classes": spec.dataset.class_names,
                "builder": spec.builder, "network": spec.network, "train": spec.train, "seed": spec.seed,
                "processes": process_count()}
    code = [REPO_ROOT / path for path in code_files("stages.train", BUILDER_MODULES[spec.builder])]
    return run_fingerprint(settings, [*split_files(spec.dataset.processed_dir, "train"), *code])


class TrainingSetup(NamedTuple):
    """What a run of spec's model starts from; the benchmark's plain-Keras baseline starts from it too."""

    shard: object  # this process's part of every batch (stages.inputs.Shard)
    runtime: dict
    images: object  # the training split on disk (stages.data.StoredImages)
    labels: np.ndarray
    train_indices: np.ndarray
    validation_indices: np.ndarray
    class_weight: dict | None
    model: object


def prepare_training(spec):
    """Seed and configure the runtime, read the training split, carve validation, weigh the classes, build."""
    train = spec.train
    shard, runtime = configure_runtime(train, spec.seed)
    devices = runtime["devices"]
    if train["batch_size"] % devices:
        raise TrainError(f"models.{spec.name}: batch_size {train['batch_size']} does not split evenly over "
                         f"the {devices} devices of the {train['distribution']} distribution")
    images, labels = load_split(spec.dataset, "train")
    train_indices, validation_indices = validation_split(labels, train["validation_fraction"], spec.seed)
    left_over = len(validation_indices) % devices
    if left_over:  # every validation batch must split evenly over the devices: the few left over train instead
        train_indices = np.sort(np.concatenate([train_indices, validation_indices[-left_over:]]))
        validation_indices = validation_indices[:-left_over]
    class_weight = balanced_class_weight(labels[train_indices]) if train["class_weight"] == "balanced" else None
    model = build_model(spec, images.shape[1:])
    return TrainingSetup(shard, runtime, images, labels, train_indices, validation_indices, class_weight, model)


def train_model(spec):
    """Train spec's model (resuming an interrupted run of the same settings), save it and its report.

    Under data-parallel training every process runs this; only the first writes reports, curves and
    checkpoints, and all of them save the model (Keras saves collectively), the others to scratch.
    """
    from dvclive import Live

    from stages.curves import LiveCurves
    from stages.inputs import ordered_batches, training_batches, whole_batches
    from stages.resume import ResumableRun

    train, batch_size = spec.train, spec.train["batch_size"]
    shard, runtime, images, labels, train_indices, validation_indices, class_weight, model = prepare_training(spec)
    lead = shard.index == 0
    validation = ordered_batches(images, labels, batch_size, validation_indices, shard)
    run = ResumableRun(spec.resume_dir, training_fingerprint(spec), writes=lead)
    log.info("%s: %s parameters; %d training and %d validation images of %s; %s on %s "
             "(%d device(s), %d process(es)); %s",
             spec.run_name, f"{model.count_params():,}", len(train_indices), len(validation_indices), spec.dataset.name,
             runtime["backend"], runtime["device"], runtime["devices"], runtime["processes"],
             f"resuming from {spec.resume_dir} after epoch {run.resumed_after_epoch}" if run.resumed_after_epoch
             else "from the first epoch")

    with Live(str(spec.live_dir), dvcyaml=False, save_dvc_exp=False) if lead else contextlib.nullcontext() as live:
        curves = LiveCurves(live)
        run.replay_logs(curves)
        for phase, (epochs, learning_rate, unfreeze) in enumerate(training_phases(train)):
            if unfreeze:
                unfreeze_top_layers(model, unfreeze)
            if run.skips(phase):
                continue
            compile_model(model, train["optimizer"], learning_rate, spec.dataset.num_classes, runtime["jit_compile"])
            # Keras compiles no model holding a layer it marks uncompilable, and says so only in a
            # warning: the run facts record what it did.
            runtime["jit_compile"] = bool(model.jit_compile)
            callbacks = run.phase_callbacks(phase, epochs, model, monitor=train["monitor"],
                                            patience=train["early_stopping_patience"] or epochs)
            if callbacks is None:
                continue
            log.info("%s: phase %d: epochs %d to %d at learning rate %g", spec.run_name, phase + 1, run.first_epoch + 1,
                     run.end_epoch(epochs), learning_rate)
            batches = training_batches(images, labels, train_indices, batch_size, spec.seed, run.first_epoch, shard,
                                       multiple=runtime["devices"])
            with ending_at_once_if_a_peer_fails(spec.run_name, shard, run):
                model.fit(batches, validation_data=validation, epochs=run.end_epoch(epochs),
                          initial_epoch=run.first_epoch, class_weight=class_weight, shuffle=False,
                          callbacks=[*callbacks, curves], verbose=2 if lead else 0)
    run.checkpoint.wait()

    if shard.count > 1:  # the processes' weights, to compare at a glance
        log.info("%s: process %d of %d holds weights sha256:%s", spec.run_name, shard.index + 1, shard.count,
                 weights_digest(model))
    if lead:
        save_model(model, spec.model_path)
        trained_per_epoch = whole_batches(len(train_indices), batch_size, runtime["devices"])
        write_reports(spec, model, run, runtime, len(train_indices), trained_per_epoch, len(validation_indices))
        run.finish()
    else:  # Keras saves collectively: every process must save, the others to scratch
        with tempfile.TemporaryDirectory() as scratch:
            save_model(model, Path(scratch) / "model.keras")
    return run


@contextlib.contextmanager
def ending_at_once_if_a_peer_fails(name, shard, run):
    """Under data parallel over processes, end this process at once, with one clear line, when training fails.

    A process that dies makes the others' next collective fail ("Connection reset by peer"); left to
    itself, JAX would then wait out its 100 s heartbeat at exit and abort with a C++ stack trace.
    The last checkpoint is on disk and nothing else is written, so a rerun resumes.
    """
    if shard.count == 1:
        yield
        return
    try:
        yield
    except Exception as error:  # JAX reports a lost peer as a ValueError or a runtime error
        run.checkpoint.wait()
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        checkpoint = run.checkpoint  # only the first process writes it, so only it knows its epoch
        resumes = f"after epoch {checkpoint.epochs_saved}" if checkpoint.writes else "from process 1's last checkpoint"
        log.error("%s: process %d of %d: training across processes failed (%s); another process probably died. "
                  "Nothing was written; run the stage again on every process to resume %s",
                  name, shard.index + 1, shard.count, first_line, resumes)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def weights_digest(model):
    """sha256 over the model's weights (this process's replica): equal digests, equal weights."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(host_copy(weight).tobytes())
    return digest.hexdigest()


def write_reports(spec, model, run, runtime, train_images, trained_per_epoch, validation_images):
    """The training metrics (what the same settings and data reproduce) and the facts of this run.

    Times and the machine go to the run facts, so a retrain that gives the same weights changes no
    file that evaluate or compare depend on.
    """
    history, best_epoch, state = run.history(), run.best_epoch, run.state
    write_json(spec.report_path, {
        "parameter_count": int(model.count_params()),
        "trainable_parameter_count": int(sum(np.prod(weight.shape) for weight in model.trainable_weights)),
        "train_images": train_images, "validation_images": validation_images,
        "epochs_run": state.epochs_done, "best_epoch": best_epoch + 1,
        "best_val_accuracy": float(history["val_accuracy"][best_epoch]),
        "best_val_loss": float(history["val_loss"][best_epoch]),
    })
    write_json(spec.run_path, {
        "weights": weights_origin(spec.builder, spec.network),
        "wall_time_seconds": round(state.fit_seconds, 2),
        "images_per_epoch": trained_per_epoch,  # whole batches only: a few training images sit out each epoch
        "images_per_second": round(trained_per_epoch * state.epochs_done / state.fit_seconds, 1),
        "epoch_seconds": state.epoch_seconds,
        "peak_memory_mib": peak_memory_mib(),
        "resumed_after_epoch": run.resumed_after_epoch,
        **runtime, "seed": spec.seed,
    })


def main(argv=None):
    args = parse_stage_arguments(__doc__, argv, seed=True, model="a key of the models section of params.yaml")
    with exit_on(f"train {args.model}", TrainError, ParamsError, DataError, BackendError):
        spec = model_spec(load_params(), args.model, args.seed)
        use_backend(spec.train["backend"])
        run = train_model(spec)
    if not run.checkpoint.writes:
        return
    log.info("%s: wrote %s and %s: best epoch %d of %d, validation loss %.4f, %.1f s of training",
             spec.run_name, spec.model_path, spec.report_path, run.best_epoch + 1, run.state.epochs_done,
             run.history()["val_loss"][run.best_epoch], run.state.fit_seconds)


if __name__ == "__main__":
    main()
