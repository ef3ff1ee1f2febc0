"""The model registry: builder names used in params.yaml, each in its own module.

Modules are imported only when their builder is asked for, so a train stage depends on the one
architecture family it uses and editing the small CNN does not retrain ResNet50.
"""

import importlib

# The name of the pretrained base inside a transfer model: the part fine-tuning unfreezes.
BACKBONE_LAYER = "backbone"

BUILDER_MODULES = {
    "happy_cnn": "stages.models.happy_cnn",
    "signs_cnn": "stages.models.signs_cnn",
    "resnet50": "stages.models.resnet50",
    "transfer": "stages.models.transfer",
}


class UnknownBuilderError(KeyError):
    """A builder name that the registry does not know."""

    def __str__(self):
        return self.args[0]


def get_builder(name):
    """The function build_<name>(input_shape, num_classes, **params) registered under name."""
    if name not in BUILDER_MODULES:
        raise UnknownBuilderError(f"unknown builder '{name}'; known builders: {', '.join(BUILDER_MODULES)}")
    module = importlib.import_module(BUILDER_MODULES[name])
    return getattr(module, f"build_{name}")


def builder_module_path(name):
    """The source file of a builder's module, as dvc.yaml lists it in deps."""
    return BUILDER_MODULES[name].replace(".", "/") + ".py"


class MissingModelError(FileNotFoundError):
    """A model that has not been trained yet."""


def load_trained_model(spec):
    """The trained model of a ModelSpec; its builder's module is imported first so its custom layers are known."""
    import keras

    if not spec.model_path.is_file():
        raise MissingModelError(f"{spec.model_path} is missing: run `dvc repro train@{spec.name}` first")
    get_builder(spec.builder)
    return keras.models.load_model(spec.model_path)
