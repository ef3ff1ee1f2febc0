"""Every builder of the registry: shapes, parameter counts, layer order, blocks, weights, learning."""

import hashlib
import json

import keras
import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT

from stages.config import load_params
from stages.models import BACKBONE_LAYER, UnknownBuilderError, get_builder, resnet50, transfer

SHARED_WEIGHTS = REPO_ROOT.parent / "shared" / "weights"
SMALL_BACKBONE = {"backbone": "MobileNet", "alpha": 0.25, "weights": "none"}


def layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("builder, num_classes, expected_params, expected_output", [
    ("happy_cnn", 2, 37_633, (None, 1)),
    ("signs_cnn", 6, 1_310, (None, 6)),
    ("resnet50", 6, 23_600_006, (None, 6)),
])
def test_parameter_counts_and_outputs(builder, num_classes, expected_params, expected_output):
    model = get_builder(builder)((64, 64, 3), num_classes)
    assert model.count_params() == expected_params
    assert model.output_shape == expected_output


def test_resnet50_trainable_parameters():
    model = get_builder("resnet50")((64, 64, 3), 6)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 23_546_886


def test_happy_cnn_is_sequential_in_the_course_order():
    model = get_builder("happy_cnn")((64, 64, 3), 2)
    assert isinstance(model, keras.Sequential)
    assert layer_types(model) == ["ZeroPadding2D", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D",
                                  "Flatten", "Dense"]
    conv, batch_norm, dense = model.layers[1], model.layers[2], model.layers[-1]
    assert conv.kernel_size == (7, 7) and conv.strides == (1, 1) and conv.filters == 32
    assert batch_norm.axis in (3, [3])
    assert dense.units == 1 and dense.activation.__name__ == "sigmoid"


def test_happy_cnn_refuses_more_than_two_classes():
    with pytest.raises(ValueError, match="binary classifier; the dataset has 6 classes"):
        get_builder("happy_cnn")((64, 64, 3), 6)


def test_signs_cnn_is_functional_in_the_course_order():
    model = get_builder("signs_cnn")((64, 64, 3), 6)
    assert not isinstance(model, keras.Sequential)
    assert layer_types(model) == ["InputLayer", "Conv2D", "ReLU", "MaxPooling2D", "Conv2D", "ReLU", "MaxPooling2D",
                                  "Flatten", "Dense"]
    conv1, pool1, conv2, pool2 = (model.get_layer(name) for name in ("conv1", "pool1", "conv2", "pool2"))
    assert (conv1.filters, conv1.kernel_size, conv1.padding) == (8, (4, 4), "same")
    assert (pool1.pool_size, pool1.strides, pool1.padding) == ((8, 8), (8, 8), "same")
    assert (conv2.filters, conv2.kernel_size, conv2.padding) == (16, (2, 2), "same")
    assert (pool2.pool_size, pool2.strides, pool2.padding) == ((4, 4), (4, 4), "same")
    assert model.layers[-1].activation.__name__ == "softmax"


def test_identity_block_keeps_the_shape():
    inputs = keras.Input((15, 15, 256))
    outputs = resnet50.identity_block(inputs, (64, 64, 256), 3, "conv2_block2")
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 15, 15, 256)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)] == [
        "conv2_block2_1_conv", "conv2_block2_2_conv", "conv2_block2_3_conv"]
    assert model.get_layer("conv2_block2_2_conv").kernel_size == (3, 3)


def test_convolutional_block_changes_size_and_channels():
    inputs = keras.Input((15, 15, 256))
    outputs = resnet50.convolutional_block(inputs, (128, 128, 512), 3, "conv3_block1", strides=2)
    model = keras.Model(inputs, outputs)
    assert model.output_shape == (None, 8, 8, 512)
    shortcut = model.get_layer("conv3_block1_0_conv")
    assert shortcut.kernel_size == (1, 1) and shortcut.strides == (2, 2) and shortcut.filters == 512
    assert model.get_layer("conv3_block1_1_conv").strides == (2, 2)
    assert isinstance(model.get_layer("conv3_block1_0_bn"), keras.layers.BatchNormalization)


def test_resnet50_stages_and_block_names():
    model = get_builder("resnet50")((64, 64, 3), 6)
    adds = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 16
    assert adds[0] == "conv2_block1_add" and adds[-1] == "conv5_block3_add"
    for stage, channels, size in ((2, 256, 15), (3, 512, 8), (4, 1024, 4), (5, 2048, 2)):
        assert model.get_layer(f"conv{stage}_block1_out").output.shape[1:] == (size, size, channels)
    assert model.get_layer("avg_pool").output.shape[1:] == (1, 1, 2048)


def test_registry_refuses_unknown_builder():
    with pytest.raises(UnknownBuilderError, match="unknown builder 'vgg'; known builders: happy_cnn"):
        get_builder("vgg")


# --- transfer models ----------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes, output", [(2, (None, 1)), (6, (None, 6))])
def test_pretrained_transfer_model_has_a_head_and_a_frozen_backbone(tmp_path, num_classes, output):
    random_backbone_file(tmp_path / "pretrained.weights.h5")
    model = get_builder("transfer")((64, 64, 3), num_classes, backbone="MobileNet", alpha=0.25, input_size=32,
                                    dropout=0.3, weights=str(tmp_path / "pretrained.weights.h5"))
    assert model.output_shape == output
    backbone = model.get_layer(BACKBONE_LAYER)
    assert not backbone.trainable and backbone.input_shape == (None, 32, 32, 3)
    assert model.get_layer("resize").output.shape[1:] == (32, 32, 3)
    assert model.get_layer("dropout").rate == 0.3
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 256 * (1 if num_classes == 2 else num_classes) + output[1]


def test_transfer_model_without_pretrained_weights_trains_everything():
    model = get_builder("transfer")((32, 32, 3), 2, **SMALL_BACKBONE)
    assert model.get_layer(BACKBONE_LAYER).trainable
    assert len(model.trainable_weights) > 2


@pytest.mark.backends
@pytest.mark.parametrize("backbone, preprocess_input", [
    ("MobileNetV2", keras.applications.mobilenet_v2.preprocess_input),
    ("MobileNet", keras.applications.mobilenet.preprocess_input),
    ("ResNet50", keras.applications.resnet.preprocess_input),
])
def test_transfer_model_scales_input_as_keras_prepares_it_for_the_backbone(backbone, preprocess_input):
    images = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    scaled = transfer.BACKBONES[backbone].input_scaling()(images)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scaled), preprocess_input(images * 255.0), atol=1e-4)


def test_a_mobilenet_transfer_model_loads_with_plain_keras(tmp_path):
    """Built-in layers only: a file written here loads in any Keras, without this project's code."""
    model = get_builder("transfer")((32, 32, 3), 2, **SMALL_BACKBONE)
    assert isinstance(model.get_layer("backbone_input"), keras.layers.Rescaling)
    config = json.dumps(model.get_config())
    assert '"module": "keras' in config and "pipeline" not in config


EVERY_AUGMENTATION = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "shift": 0.1, "brightness": 0.2,
                      "contrast": 0.2, "blur": 0.5}


@pytest.mark.backends
@pytest.mark.parametrize("builder, num_classes, network", [
    ("happy_cnn", 2, {}),
    ("signs_cnn", 6, {}),
    ("resnet50", 6, {}),
    ("transfer", 3, SMALL_BACKBONE),
])
def test_every_builder_augments_in_training_only(builder, num_classes, network):
    model = get_builder(builder)((64, 64, 3), num_classes, augmentation=EVERY_AUGMENTATION, **network)
    names = [layer.name for layer in model.layers if layer.name.startswith("augment_")]
    assert names == [f"augment_{kind}" for kind in EVERY_AUGMENTATION]
    images = np.random.default_rng(0).random((4, 64, 64, 3)).astype("float32")
    at_inference = model.predict(images, verbose=0)
    np.testing.assert_array_equal(model.predict(images, verbose=0), at_inference)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images, training=False)), at_inference, atol=1e-6)
    # The same weights without the augmentation layers give the same outputs: they pass images through.
    plain = get_builder(builder)((64, 64, 3), num_classes, **network)
    plain.set_weights(model.get_weights())
    np.testing.assert_allclose(plain.predict(images, verbose=0), at_inference, atol=1e-6)
    in_training = keras.ops.convert_to_numpy(model(images, training=True))
    assert np.abs(in_training - at_inference).max() > 1e-4, "augmentation changes training inputs"


@pytest.mark.backends
def test_augmentation_layers_change_images_in_training_as_named():
    from stages.models.augmentation import augmentation_layers

    keras.utils.set_random_seed(1)
    images = np.random.default_rng(1).random((16, 16, 16, 3)).astype("float32")  # flip: each image 1 in 2
    for layer in augmentation_layers(EVERY_AUGMENTATION):
        changed = keras.ops.convert_to_numpy(layer(images, training=True))
        assert changed.shape == images.shape
        assert not np.allclose(changed, images), f"{layer.name} changed nothing"
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    assert augmentation_layers(None) == [] and augmentation_layers({"zoom": 0}) == []
    with pytest.raises(ValueError, match="unknown augmentation key.*cutout.*known: flip, rotation, zoom"):
        augmentation_layers({"cutout": 0.1})


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'VGG99'"):
        get_builder("transfer")((32, 32, 3), 2, backbone="VGG99", weights="none")


def random_backbone_file(path, seed=3):
    """Write the weights of a randomly initialised small backbone; return their values."""
    keras.utils.set_random_seed(seed)
    backbone = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_shape=(32, 32, 3))
    backbone.save_weights(path)
    return [w.numpy() for w in backbone.weights]


def backbone_values(model):
    return [w.numpy() for w in model.get_layer(BACKBONE_LAYER).weights]


def assert_same_values(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.backends
def test_weights_from_a_file_load_exactly(tmp_path):
    expected = random_backbone_file(tmp_path / "mine.weights.h5")
    keras.utils.set_random_seed(99)  # a different initialisation, which loading must overwrite
    model = get_builder("transfer")((32, 32, 3), 2, backbone="MobileNet", alpha=0.25,
                                    weights=str(tmp_path / "mine.weights.h5"))
    assert_same_values(backbone_values(model), expected)


def write_local_weights(directory, name, listed_hash=None):
    directory.mkdir()
    expected = random_backbone_file(directory / name)
    digest = listed_hash or hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / "SHA256SUMS").write_text(f"{digest}  {name}\n")
    return expected


def test_local_weights_dir_is_found_and_verified(tmp_path, monkeypatch):
    expected = write_local_weights(tmp_path / "weights", "mobilenet_0.25_imagenet_no_top.weights.h5")
    monkeypatch.setenv("LOCAL_WEIGHTS_DIR", str(tmp_path / "weights"))
    model = get_builder("transfer")((32, 32, 3), 2, backbone="MobileNet", alpha=0.25, weights="imagenet")
    assert_same_values(backbone_values(model), expected)


def test_local_weights_dir_without_the_file_names_it(tmp_path, monkeypatch):
    (tmp_path / "weights").mkdir()
    monkeypatch.setenv("LOCAL_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(transfer.WeightsError) as error:
        get_builder("transfer")((32, 32, 3), 2, backbone="MobileNet", alpha=0.25, weights="imagenet")
    assert str(tmp_path / "weights") in str(error.value)
    assert "mobilenet_2_5_224_tf_no_top.h5" in str(error.value)


def test_local_weights_hash_mismatch(tmp_path, monkeypatch):
    write_local_weights(tmp_path / "weights", "mobilenet_0.25_imagenet_no_top.weights.h5", listed_hash="0" * 64)
    monkeypatch.setenv("LOCAL_WEIGHTS_DIR", str(tmp_path / "weights"))
    with pytest.raises(transfer.WeightsError, match="does not match 0000"):
        get_builder("transfer")((32, 32, 3), 2, backbone="MobileNet", alpha=0.25, weights="imagenet")


def test_weights_file_of_another_backbone_is_refused(tmp_path):
    random_backbone_file(tmp_path / "mobilenet.weights.h5")
    with pytest.raises(transfer.WeightsError, match="does not fit MobileNetV2"):
        get_builder("transfer")((32, 32, 3), 2, backbone="MobileNetV2", alpha=0.35,
                                weights=str(tmp_path / "mobilenet.weights.h5"))


@pytest.mark.backends
@pytest.mark.skipif(not (SHARED_WEIGHTS / "SHA256SUMS").exists(), reason=f"no pretrained weights at {SHARED_WEIGHTS}")
def test_shared_mobilenetv2_weights_load_into_the_transfer_model(monkeypatch):
    monkeypatch.setenv("LOCAL_WEIGHTS_DIR", str(SHARED_WEIGHTS))
    model = get_builder("transfer")((64, 64, 3), 6, backbone="MobileNetV2", alpha=1.0, weights="imagenet",
                                    input_size=96)
    reference = keras.applications.MobileNetV2(alpha=1.0, include_top=False, weights=None, input_shape=(96, 96, 3))
    reference.load_weights(SHARED_WEIGHTS / "mobilenet_v2_1.0_imagenet_no_top.weights.h5")
    assert_same_values(backbone_values(model), [w.numpy() for w in reference.weights])
    assert sum(int(np.prod(w.shape)) for w in model.get_layer(BACKBONE_LAYER).weights) == 2_257_984


# --- learning: a few steps on a tiny batch lower the loss of every model in params.yaml ------------

def project_models():
    """(name, builder, network) of every model in params.yaml, with random weights (nothing to fetch)."""
    models = load_params(REPO_ROOT / "params.yaml")["models"]
    return [pytest.param(name, block["builder"], {**block.get("network", {}), **(
        {"weights": "none"} if block["builder"] == "transfer" else {})}, id=name) for name, block in models.items()]


@pytest.mark.slow
@pytest.mark.parametrize("name, builder, network", project_models())
def test_a_few_steps_lower_the_loss(name, builder, network):
    datasets = load_params(REPO_ROOT / "params.yaml")["datasets"]
    dataset = load_params(REPO_ROOT / "params.yaml")["models"][name]["dataset"]
    num_classes = len(datasets[dataset]["classes"])
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).random((8, 64, 64, 3), dtype=np.float32)
    class_ids = np.arange(8) % num_classes
    labels = class_ids.reshape(-1, 1).astype("float32") if num_classes == 2 else np.eye(num_classes)[class_ids]
    # Without random augmentation, so that the loss of the same batch can be compared between steps.
    network = {key: value for key, value in network.items() if key != "augmentation"}
    model = get_builder(builder)((64, 64, 3), num_classes, **network)
    loss = "binary_crossentropy" if num_classes == 2 else "categorical_crossentropy"
    # Eager steps: graph tracing of a ResNet50 costs far more than these few steps.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=True)
    # train_on_batch returns the loss in training mode (batch statistics), before its update.
    losses = [float(model.train_on_batch(images, labels)) for _ in range(6)]
    assert losses[-1] < losses[0], f"{name}: losses {losses}"


@pytest.mark.slow
def test_pretrained_resnet50_transfer_model_builds_from_a_local_weights_file(tmp_path, monkeypatch):
    """The block docs/models.md shows for signs_resnet50_pretrained, with a stand-in weights file."""
    folder = tmp_path / "weights"
    folder.mkdir()
    reference = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    name = "resnet50_imagenet_no_top.weights.h5"
    reference.save_weights(folder / name)
    (folder / "SHA256SUMS").write_text(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n")
    monkeypatch.setenv("LOCAL_WEIGHTS_DIR", str(folder))

    block = (REPO_ROOT / "docs/models.md").read_text().split("  signs_resnet50_pretrained:")[1].split("```")[0]
    network = yaml.safe_load("signs_resnet50_pretrained:" + block)["signs_resnet50_pretrained"]["network"]
    assert network["backbone"] == "ResNet50" and network["weights"] == "imagenet"

    model = get_builder("transfer")((32, 32, 3), 6, **network)

    assert not model.get_layer(BACKBONE_LAYER).trainable, "pretrained: the backbone starts frozen"
    assert_same_values(backbone_values(model), [w.numpy() for w in reference.weights])
