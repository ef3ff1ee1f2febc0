"""train stage: train one model of params.yaml on its processed dataset.

Carves a stratified validation split from the training set (never the test set), trains with the
model's merged `train` settings, keeps the best epoch by the validation monitor, and optionally
fine-tunes the top layers of a transfer model's backbone at a lower learning rate. Writes
models/<model>.keras, reports/train/<model>.json and dvclive's per-epoch curves under
reports/train/<model>/.

    python -m stages.train <model>
"""

import logging
import time

import numpy as np

from stages.cli import exit_on, parse_stage_arguments
from stages.config import ParamsError, load_params, model_spec
from stages.data import MissingDataError, class_indices, label_width, load_split
from stages.files import staged_path, write_json
from stages.models import BACKBONE_LAYER, UnknownBuilderError, get_builder
from stages.splits import stratified_holdout

log = logging.getLogger("train")


class TrainError(RuntimeError):
    """A model that cannot be trained as params.yaml describes it."""


def make_strategy(distribution):
    """The tf.distribute strategy that `distribution` names.

    none: Keras's default (one device, chosen by TensorFlow); one_device: the first GPU, else the CPU;
    mirrored: every GPU of this machine (or, without GPUs, every logical CPU device), one model
    replica each; multi_worker: several machines, as TF_CONFIG describes them.
    """
    import tensorflow as tf

    if distribution == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
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

    # A multi-worker strategy must exist before TensorFlow runs anything else.
    strategy = make_strategy(train["distribution"])
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    gpus = tf.config.list_physical_devices("GPU")
    mixed_precision = train["mixed_precision"] is True or (train["mixed_precision"] == "auto" and bool(gpus))
    jit_compile = train["jit_compile"] is True or (train["jit_compile"] == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    if gpus:
        names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
        device = f"GPU: {', '.join(names)}"
    else:
        device = "CPU"
    runtime = {"device": device, "mixed_precision": mixed_precision, "jit_compile": jit_compile,
               "distribution": train["distribution"], "replicas": int(strategy.num_replicas_in_sync)}
    return strategy, runtime


def validation_split(images, labels, fraction, seed):
    """(train_images, train_labels), (val_images, val_labels): stratified, drawn with the seed."""
    held_out = stratified_holdout(class_indices(labels), fraction, np.random.default_rng(seed))
    keep = np.setdiff1d(np.arange(len(labels)), held_out)
    if len(held_out) == 0 or len(keep) == 0:
        raise TrainError(f"validation_fraction {fraction} of {len(labels)} training images leaves "
                         "an empty training or validation split")
    return (images[keep], labels[keep]), (images[held_out], labels[held_out])


def balanced_class_weight(labels):
    """{class: n / (classes * n_class)}, so each class weighs the same in the loss."""
    indices = class_indices(labels)
    classes, counts = np.unique(indices, return_counts=True)
    return {int(c): float(len(indices) / (len(classes) * count)) for c, count in zip(classes, counts)}


def build_model(spec, input_shape):
    """The model's builder called with its `network` block; argument errors name the block."""
    try:
        builder = get_builder(spec.builder)
        return builder(input_shape, spec.dataset.num_classes, **spec.network)
    except (TypeError, ValueError, UnknownBuilderError) as error:
        raise TrainError(f"models.{spec.name}: cannot build '{spec.builder}' from network "
                         f"{spec.network}: {error}") from error
    except RuntimeError as error:  # e.g. pretrained weights that cannot be found or verified
        raise TrainError(f"models.{spec.name}: {error}") from error


def compile_model(model, optimizer, learning_rate, num_classes, jit_compile):
    import keras

    loss = "binary_crossentropy" if num_classes == 2 else "categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.get({"class_name": optimizer, "config": {"learning_rate": learning_rate}}),
                  loss=loss, metrics=["accuracy"], jit_compile=jit_compile)


def unfreeze_top_layers(model, count):
    """Make the top `count` layers of the backbone trainable, the rest frozen."""
    try:
        backbone = model.get_layer(BACKBONE_LAYER)
    except ValueError as error:
        raise TrainError(f"fine_tune needs a transfer model (one with a layer named '{BACKBONE_LAYER}')") from error
    if backbone.trainable:
        log.info("the backbone already trains as a whole (random initial weights): nothing to unfreeze")
        return
    backbone.trainable = True
    for layer in backbone.layers[:-count]:
        layer.trainable = False


def training_phases(train):
    """(name, epochs, learning rate, backbone layers to unfreeze) for each call to fit."""
    phases = [("train", train["epochs"], train["learning_rate"], None)]
    if train.get("fine_tune"):
        fine_tune = train["fine_tune"]
        phases.append(("fine_tune", fine_tune["epochs"], fine_tune["learning_rate"], fine_tune["layers"]))
    return phases


def train_model(spec):
    """Train spec's model, save it and its report; return the report."""
    import keras
    from dvclive import Live
    from dvclive.keras import DVCLiveCallback

    train = spec.train
    strategy, runtime = configure_runtime(train, spec.seed)
    if train["batch_size"] % runtime["replicas"]:
        raise TrainError(f"models.{spec.name}: batch_size {train['batch_size']} does not split evenly over "
                         f"{runtime['replicas']} replicas of the {train['distribution']} distribution")
    images, labels = load_split(spec.dataset, "train")
    expected_width = label_width(spec.dataset.num_classes)
    if labels.shape[1] != expected_width:
        raise TrainError(f"{spec.dataset.processed_dir} has labels {labels.shape[1]} wide, but params.yaml declares "
                         f"{spec.dataset.num_classes} classes for '{spec.dataset.name}': re-run its preprocess stage")
    (train_images, train_labels), validation = validation_split(images, labels, train["validation_fraction"], spec.seed)
    with strategy.scope():
        model = build_model(spec, images.shape[1:])
    class_weight = balanced_class_weight(train_labels) if train["class_weight"] == "balanced" else None
    log.info("%s: %s parameters; %d training and %d validation images of %s on %s (%d replica%s)", spec.name,
             f"{model.count_params():,}", len(train_labels), len(validation[1]), spec.dataset.name, runtime["device"],
             runtime["replicas"], "" if runtime["replicas"] == 1 else "s")

    history, epochs_done, fit_seconds, best_epoch = {}, 0, 0.0, 0
    with Live(str(spec.live_dir), dvcyaml=False, save_dvc_exp=False) as live:
        for phase, epochs, learning_rate, unfreeze in training_phases(train):
            if unfreeze:
                unfreeze_top_layers(model, unfreeze)
            with strategy.scope():
                compile_model(model, train["optimizer"], learning_rate, spec.dataset.num_classes,
                              runtime["jit_compile"])
            stopper = keras.callbacks.EarlyStopping(monitor=train["monitor"], restore_best_weights=True,
                                                    patience=train["early_stopping_patience"] or epochs)
            log.info("%s: phase %s: %d epochs at learning rate %g", spec.name, phase, epochs, learning_rate)
            started = time.perf_counter()
            result = model.fit(train_images, train_labels, validation_data=validation, batch_size=train["batch_size"],
                               epochs=epochs_done + epochs, initial_epoch=epochs_done, class_weight=class_weight,
                               callbacks=[stopper, DVCLiveCallback(live=live)], verbose=2)
            fit_seconds += time.perf_counter() - started
            epochs_done += len(result.epoch)
            best_epoch = stopper.best_epoch
            for key, values in result.history.items():
                history.setdefault(key, []).extend(values)

    with staged_path(spec.model_path) as temporary:
        model.save(temporary)
    report = {
        "model": spec.name, "dataset": spec.dataset.name, "builder": spec.builder,
        "weights": str(spec.network.get("weights", "imagenet")) if spec.builder == "transfer" else "none",
        "parameter_count": int(model.count_params()),
        "trainable_parameter_count": int(sum(np.prod(weight.shape) for weight in model.trainable_weights)),
        "train_images": int(len(train_labels)), "validation_images": int(len(validation[1])),
        "epochs_run": epochs_done, "best_epoch": best_epoch + 1,
        "best_val_accuracy": float(history["val_accuracy"][best_epoch]),
        "best_val_loss": float(history["val_loss"][best_epoch]),
        "wall_time_seconds": round(fit_seconds, 2),
        "images_per_second": round(len(train_labels) * epochs_done / fit_seconds, 1),
        **runtime, "seed": spec.seed,
    }
    write_json(spec.report_path, report)
    return report


def main(argv=None):
    args = parse_stage_arguments(__doc__, argv, model="a key of the models section of params.yaml")
    with exit_on(f"train {args.model}", TrainError, ParamsError, MissingDataError):
        spec = model_spec(load_params(), args.model)
        report = train_model(spec)
    log.info("%s: wrote %s and %s: best epoch %d of %d, validation accuracy %.3f, %.0f images/s on %s",
             spec.name, spec.model_path, spec.report_path, report["best_epoch"], report["epochs_run"],
             report["best_val_accuracy"], report["images_per_second"], report["device"])


if __name__ == "__main__":
    main()
