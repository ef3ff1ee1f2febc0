"""The model registry: builder names used in params.yaml, each in its own module.

Modules are imported only when their builder is asked for, so a train stage depends on the one
architecture family it uses and editing the small CNN does not retrain ResNet50.
"""

import importlib

import numpy as np

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


def pretrained_weights(weights):
    """A transfer block's `weights` as one string: 'imagenet', a weights file's path, or 'none' (random)."""
    value = "none" if weights is None else str(weights)
    return "none" if value.lower() in ("none", "null") else value


def weights_origin(builder, network):
    """What a model starts from: pretrained weights for a transfer model that names them, else 'none'."""
    return pretrained_weights(network.get("weights", "imagenet")) if builder == "transfer" else "none"


def class_probabilities(outputs):
    """A model's outputs as probabilities (m, C) for every class: a sigmoid column becomes two."""
    return np.concatenate([1.0 - outputs, outputs], axis=1) if outputs.shape[1] == 1 else outputs


class ModelFileError(RuntimeError):
    """A trained model file that is missing or damaged; the message says the mend."""


def load_trained_model(spec):
    """The trained model of a ModelSpec, checked first as a whole Keras archive.

    Its builder's module is imported first so that its custom layers are known.
    """
    import warnings
    import zipfile

    import keras

    path, mend = spec.model_path, f"run `dvc repro train@{spec.name}-{spec.seed}`"
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: {mend} first")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged, members = archive.testzip(), set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFileError(f"{path}: expected a Keras model archive, found a damaged file ({error}): "
                             f"{mend} to rebuild it") from error
    if damaged or not {"config.json", "model.weights.h5"} <= members:
        found = f"a damaged member {damaged}" if damaged else f"members {sorted(members)}"
        raise ModelFileError(f"{path}: expected a Keras model archive (config.json, model.weights.h5), found "
                             f"{found}: {mend} to rebuild it")
    get_builder(spec.builder)
    try:
        # Keras compiles a model with rotation, zoom or shift layers without XLA, and warns; on JAX
        # stages.models.augmentation.compile_augmentation compiles it after all.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Model doesn't support `jit_compile=True`")
            return keras.models.load_model(path)
    except Exception as error:  # Keras raises many kinds, some misleading ("File not found")
        raise ModelFileError(f"{path} does not load as a Keras model ({error}): {mend} to rebuild it") from error


# A fixed time for every member of a .keras archive: zip entries carry a modification time.
ARCHIVE_TIME = (1980, 1, 1, 0, 0, 0)


def renumber_shared_objects(config):
    """The model config with `shared_object_id`s numbered 1, 2, ... in order of appearance.

    Keras writes the Python id() (a memory address) of each object that several layers share; the
    ids only pair the layers up on loading, so any consistent numbering loads the same model.
    """
    numbers = {}

    def renumber(value):
        if isinstance(value, dict):
            return {key: (numbers.setdefault(item, len(numbers) + 1) if key == "shared_object_id" else renumber(item))
                    for key, item in value.items()}
        if isinstance(value, list):
            return [renumber(item) for item in value]
        return value

    return renumber(config)


def save_model(model, path):
    """Save a .keras file, atomically, whose bytes depend only on the model.

    Keras writes the save time into the archive (metadata.json's date_saved and every member's zip
    time), so two runs that give identical weights would give files with different hashes, and DVC
    would re-run everything downstream. The archive is rewritten without them.
    """
    import json
    import shutil
    import zipfile

    from stages.files import staged_path

    with staged_path(path) as temporary:
        saved = temporary.with_name(temporary.name + "-keras.keras")  # staged_path clears it if we are killed
        try:
            model.save(saved)
            with zipfile.ZipFile(saved) as source, zipfile.ZipFile(temporary, "w") as target:
                for member in sorted(source.infolist(), key=lambda member: member.filename):
                    entry = zipfile.ZipInfo(member.filename, date_time=ARCHIVE_TIME)
                    entry.compress_type, entry.external_attr = member.compress_type, member.external_attr
                    if member.filename == "metadata.json":
                        metadata = json.loads(source.read(member))
                        metadata.pop("date_saved", None)
                        target.writestr(entry, json.dumps(metadata, sort_keys=True))
                        continue
                    if member.filename == "config.json":
                        target.writestr(entry, json.dumps(renumber_shared_objects(json.loads(source.read(member)))))
                        continue
                    with source.open(member) as reader, target.open(entry, "w", force_zip64=True) as writer:
                        shutil.copyfileobj(reader, writer, 1 << 20)
        finally:
            saved.unlink(missing_ok=True)
