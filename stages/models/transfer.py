"""Transfer-learning models: one builder over keras.applications backbones.

The model takes the pipeline's [0, 1] images, optionally augments them, resizes them to the
backbone's input size and scales them as the backbone was trained, then adds a small head
(global average pooling, dropout, dense). The backbone is the layer named `backbone`: with pretrained
weights it is frozen at build time and the train stage unfreezes its top layers for fine-tuning;
with `weights: none` nothing is frozen and the whole network trains from scratch.

ImageNet weights come from Keras's servers, or, on machines without internet, from the folder
named by LOCAL_WEIGHTS_DIR: it holds the backbone files and a SHA256SUMS list (`<hex digest>  <file
name>` per line, as `sha256sum` writes it). The pipeline looks there first and refuses a file whose
hash is not listed or does not match.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import keras

from stages.config import LOCAL_WEIGHTS_ENV, local_dir
from stages.files import file_sha256
from stages.models import BACKBONE_LAYER, pretrained_weights
from stages.models.augmentation import augment
from stages.models.heads import classifier_output

HASH_LIST = "SHA256SUMS"
# Input sizes for which Keras publishes ImageNet weights under a size-specific file name.
KERAS_WEIGHT_SIZES = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class Backbone:
    constructor: object
    input_scaling: object  # () -> the layer that scales [0, 1] images as the backbone was trained
    local_names: object  # (alpha, input_size) -> candidate weight file names, preferred first


def _sizes_first(input_size):
    return sorted(KERAS_WEIGHT_SIZES, key=lambda size: (size != input_size, size != 224, size))


def _mobilenet_alpha_text(alpha):
    return {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}.get(float(alpha), str(alpha))


BACKBONES = {
    "ResNet50": Backbone(
        keras.applications.ResNet50, lambda: CaffeInput(name="backbone_input"),
        lambda alpha, size: ["resnet50_imagenet_no_top.weights.h5",
                             "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"]),
    "MobileNetV2": Backbone(
        keras.applications.MobileNetV2, lambda: keras.layers.Rescaling(2.0, offset=-1.0, name="backbone_input"),
        lambda alpha, size: [f"mobilenet_v2_{float(alpha)}_imagenet_no_top.weights.h5"] + [
            f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
            for rows in _sizes_first(size)]),
    "MobileNet": Backbone(
        keras.applications.MobileNet, lambda: keras.layers.Rescaling(2.0, offset=-1.0, name="backbone_input"),
        lambda alpha, size: [f"mobilenet_{float(alpha)}_imagenet_no_top.weights.h5"] + [
            f"mobilenet_{_mobilenet_alpha_text(alpha)}_{rows}_tf_no_top.h5" for rows in _sizes_first(size)]),
}


class WeightsError(RuntimeError):
    """Pretrained weights that cannot be found, verified or loaded."""


def read_hash_list(directory):
    """{file name: sha256 hex} from directory/SHA256SUMS."""
    path = directory / HASH_LIST
    if not path.is_file():
        raise WeightsError(f"{directory} has no {HASH_LIST}: list each weights file's sha256 there")
    hashes = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            hashes[name.lstrip("*").strip()] = digest.lower()
    return hashes


def find_local_weights(directory, candidates):
    """The first of the candidate file names present in directory, checked against SHA256SUMS."""
    for name in candidates:
        path = directory / name
        if path.is_file():
            expected = read_hash_list(directory).get(name)
            if expected is None:
                raise WeightsError(f"{path} is not listed in {directory / HASH_LIST}; add its sha256 to use it")
            found = file_sha256(path)
            if found != expected:
                raise WeightsError(f"{path}: sha256 {found} does not match {expected} in {HASH_LIST}; "
                                   "the file is damaged or not the one listed")
            return path
    raise WeightsError(f"no ImageNet weights for this backbone in {directory}: it needs one of "
                       f"{', '.join(candidates)} (with its sha256 in {HASH_LIST}), or set weights: none")


@keras.saving.register_keras_serializable(package="pipeline")
class CaffeInput(keras.layers.Layer):
    """[0, 1] RGB to the BGR, mean-subtracted 0-255 pixels of ResNet50's ImageNet weights.

    The MobileNets take [-1, 1], which Keras's own Rescaling gives, so their models load anywhere
    without this project's code.
    """

    def call(self, images):
        return keras.applications.resnet.preprocess_input(images * 255.0)


def make_backbone(name, input_size, alpha=1.0, weights="imagenet"):
    """A headless keras.applications backbone with weights `imagenet`, `none` or a weights file path."""
    backbone = BACKBONES[name]
    options = {"include_top": False, "input_shape": (input_size, input_size, 3), "name": BACKBONE_LAYER}
    if name != "ResNet50":
        options["alpha"] = alpha
    weights = pretrained_weights(weights)
    if weights == "imagenet" and local_dir(LOCAL_WEIGHTS_ENV) is None:
        return _download_imagenet(backbone, name, options)
    model = backbone.constructor(weights=None, **options)
    if weights == "imagenet":
        path = find_local_weights(local_dir(LOCAL_WEIGHTS_ENV), backbone.local_names(alpha, input_size))
    elif weights != "none":
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file '{weights}' does not exist (use imagenet, none or a file path)")
    else:
        return model
    try:
        # Keras only warns when parts of a file do not match the model; a partial load is an error here.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.load_weights(path)
    except (ValueError, OSError, KeyError) as error:
        raise WeightsError(f"{path} does not fit {name} (alpha {alpha}): {error}") from error
    mismatches = [warning for warning in caught if issubclass(warning.category, UserWarning)]
    if mismatches:
        raise WeightsError(f"{path} does not fit {name} (alpha {alpha}): {mismatches[0].message}")
    return model


def _download_imagenet(backbone, name, options):
    """Keras's own download of the published weights, checked by hash where Keras publishes one."""
    try:
        return backbone.constructor(weights="imagenet", **options)
    except Exception as error:  # Keras raises a bare Exception for fetch failures
        raise WeightsError(f"could not fetch the ImageNet weights of {name} ({error}); without internet, "
                           f"set {LOCAL_WEIGHTS_ENV} to a folder of weight files with a SHA256SUMS") from error


def build_transfer(input_shape, num_classes, backbone, weights="imagenet", alpha=1.0, input_size=None,
                   dropout=0.2, augmentation=None):
    """Augment -> resize -> backbone scaling -> frozen backbone -> pooling -> dropout -> dense."""
    if backbone not in BACKBONES:
        raise ValueError(f"unknown backbone '{backbone}'; known backbones: {', '.join(BACKBONES)}")
    input_size = input_size or input_shape[0]
    images = keras.Input(shape=input_shape, name="images")
    x = augment(images, augmentation)
    if input_size != input_shape[0]:
        x = keras.layers.Resizing(input_size, input_size, name="resize")(x)
    x = BACKBONES[backbone].input_scaling()(x)
    base = make_backbone(backbone, input_size, alpha, weights)
    if pretrained_weights(weights) == "none":
        # Random weights give no features to transfer: the whole network trains from scratch.
        x = base(x)
    else:
        base.trainable = False  # frozen layers, batch norm included, run in inference mode
        x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(images, classifier_output(num_classes)(x), name=f"transfer_{backbone.lower()}")
