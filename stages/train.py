"""train stage: train one model of params.yaml on its processed dataset.

Carves a stratified validation split from the training set (never the test set), trains with the
model's merged `train` settings, keeps the best epoch by the validation monitor, and optionally
fine-tunes the top layers of a transfer model's backbone at a lower learning rate. Data come
through tf.data (stages/inputs.py). Writes models/<model>.keras, reports/train/<model>.json and
dvclive's per-epoch curves under reports/train/<model>/. A run that is killed resumes from its last
completed epoch when it is started again with the same settings, data and code (stages/resume.py).

    python -m stages.train <model>
"""

import logging
from typing import NamedTuple

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from stages.cli import exit_on, parse_stage_arguments, peak_memory_mib
from stages.code import REPO_ROOT, code_files
from stages.config import ParamsError, load_params, model_spec
from stages.data import DataError, class_indices, load_split, split_files
from stages.files import write_json
from stages.inputs import ordered_batches, steps_per_epoch, training_batches
from stages.models import BACKBONE_LAYER, BUILDER_MODULES, UnknownBuilderError, get_builder, save_model, weights_origin
from stages.resume import ResumableRun, run_fingerprint
from stages.splits import SplitError, stratified_holdout

log = logging.getLogger("train")


class TrainError(RuntimeError):
    """A model that cannot be trained as params.yaml describes it."""


def make_strategy(distribution):
    """The tf.distribute strategy that `distribution` names.

    none: Keras's default (one device, chosen by TensorFlow); one_device: the first GPU, else the CPU;
    mirrored: every GPU of this machine (or, without GPUs, every logical CPU device), one model
    replica each.
    """
    import tensorflow as tf

    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    if distribution == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    if distribution == "mirrored":
        return tf.distribute.MirroredStrategy(gpus or [device.name for device in tf.config.list_logical_devices("CPU")])
    return tf.distribute.get_strategy()


def configure_runtime(train, seed):
    """Seed Python, NumPy and TensorFlow, make ops deterministic, pick precision and the distribution strategy.

    Returns the strategy and a description of the runtime for the report.
    """
    import keras
    import tensorflow as tf

    strategy = make_strategy(train["distribution"])
    keras.utils.set_random_seed(seed)
    gpus = gpu_names()
    mixed_precision = train["mixed_precision"] is True or (train["mixed_precision"] == "auto" and bool(gpus))
    jit_compile = train["jit_compile"] is True or (train["jit_compile"] == "auto" and bool(gpus))
    # Keras quietly compiles without XLA while TensorFlow's op determinism is on, so a run has one or
    # the other: deterministic ops by default, XLA when jit_compile asks for it.
    if not jit_compile:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    runtime = {"device": f"GPU: {', '.join(gpus)}" if gpus else "CPU", "mixed_precision": mixed_precision,
               "jit_compile": jit_compile, "deterministic_ops": not jit_compile, "distribution": train["distribution"],
               "replicas": int(strategy.num_replicas_in_sync),
               "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    return strategy, runtime


def gpu_names():
    """The names of the GPUs the Keras backend sees; empty on a machine without one."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [device.device_kind for device in jax.devices() if device.platform == "gpu"]
    if keras.backend.backend() == "torch":
        import torch

        return [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
    import tensorflow as tf

    return [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")]


def validation_split(labels, fraction, seed):
    """(training indices, validation indices): a stratified holdout drawn with the seed."""
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
    settings = {"model": spec.name, "dataset": spec.dataset.name, "classes": spec.dataset.class_names,
                "builder": spec.builder, "network": spec.network, "train": spec.train, "seed": spec.seed}
    code = [REPO_ROOT / path for path in code_files("stages.train", BUILDER_MODULES[spec.builder])]
    return run_fingerprint(settings, [*split_files(spec.dataset.processed_dir, "train"), *code])


class TrainingSetup(NamedTuple):
    """What a run of spec's model starts from; the benchmark's plain-Keras baseline starts from it too."""

    strategy: object
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
    strategy, runtime = configure_runtime(train, spec.seed)
    if train["batch_size"] % runtime["replicas"]:
        raise TrainError(f"models.{spec.name}: batch_size {train['batch_size']} does not split evenly over "
                         f"{runtime['replicas']} replicas of the {train['distribution']} distribution")
    images, labels = load_split(spec.dataset, "train")
    train_indices, validation_indices = validation_split(labels, train["validation_fraction"], spec.seed)
    class_weight = balanced_class_weight(labels[train_indices]) if train["class_weight"] == "balanced" else None
    with strategy.scope():
        model = build_model(spec, images.shape[1:])
    return TrainingSetup(strategy, runtime, images, labels, train_indices, validation_indices, class_weight, model)


def train_model(spec):
    """Train spec's model (resuming an interrupted run of the same settings), save it and its report."""
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    train, batch_size = spec.train, spec.train["batch_size"]
    strategy, runtime, images, labels, train_indices, validation_indices, class_weight, model = prepare_training(spec)
    validation = ordered_batches(images, labels, batch_size, validation_indices)
    run = ResumableRun(spec.resume_dir, training_fingerprint(spec))
    log.info("%s: %s parameters; %d training and %d validation images of %s on %s (%d replica(s)); %s",
             spec.name, f"{model.count_params():,}", len(train_indices), len(validation_indices), spec.dataset.name,
             runtime["device"], runtime["replicas"],
             f"resuming from {spec.resume_dir} after epoch {run.resumed_after_epoch}" if run.resumed_after_epoch
             else "from the first epoch")

    with Live(str(spec.live_dir), dvcyaml=False, save_dvc_exp=False) as live:
        live_callback = DVCLiveCallback(live=live)
        run.replay_logs(live_callback)
        for phase, (epochs, learning_rate, unfreeze) in enumerate(training_phases(train)):
            if unfreeze:
                unfreeze_top_layers(model, unfreeze)
            if run.skips(phase):
                continue
            with strategy.scope():
                compile_model(model, train["optimizer"], learning_rate, spec.dataset.num_classes, runtime["jit_compile"])
            # Keras compiles no model holding a layer that XLA cannot take (random rotation, zoom, shift)
            # and says so only in a warning: the run facts record what it did.
            runtime["jit_compile"] = bool(model.jit_compile)
            callbacks = run.phase_callbacks(phase, epochs, model, monitor=train["monitor"],
                                            patience=train["early_stopping_patience"] or epochs)
            if callbacks is None:
                continue
            log.info("%s: phase %d: epochs %d to %d at learning rate %g", spec.name, phase + 1, run.first_epoch + 1,
                     run.end_epoch(epochs), learning_rate)
            batches = training_batches(images, labels, train_indices, batch_size, spec.seed, run.first_epoch,
                                       run.end_epoch(epochs))
            model.fit(batches, steps_per_epoch=steps_per_epoch(len(train_indices), batch_size),
                      validation_data=validation, epochs=run.end_epoch(epochs), initial_epoch=run.first_epoch,
                      class_weight=class_weight, shuffle=False, callbacks=[*callbacks, live_callback], verbose=2)
    run.checkpoint.wait()

    save_model(model, spec.model_path)
    write_reports(spec, model, run, runtime, len(train_indices), len(validation_indices))
    run.finish()
    return run


def write_reports(spec, model, run, runtime, train_images, validation_images):
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
        "images_per_second": round(train_images * state.epochs_done / state.fit_seconds, 1),
        "epoch_seconds": state.epoch_seconds,
        "peak_memory_mib": peak_memory_mib(),
        "resumed_after_epoch": run.resumed_after_epoch,
        **runtime, "seed": spec.seed,
    })


def main(argv=None):
    args = parse_stage_arguments(__doc__, argv, model="a key of the models section of params.yaml")
    with exit_on(f"train {args.model}", TrainError, ParamsError, DataError):
        spec = model_spec(load_params(), args.model)
        run = train_model(spec)
    log.info("%s: wrote %s and %s: best epoch %d of %d, validation loss %.4f, %.1f s of training",
             spec.name, spec.model_path, spec.report_path, run.best_epoch + 1, run.state.epochs_done,
             run.history()["val_loss"][run.best_epoch], run.state.fit_seconds)


if __name__ == "__main__":
    main()
