"""Grad-CAM on tiny models: the heatmap's size and range, that it finds the signal, nested backbones, errors."""

import keras
import numpy as np
import pytest
from helpers import run_stage
from PIL import Image

from stages import gradcam, predict
from stages.models import get_builder, save_model

pytestmark = pytest.mark.backends  # run again on JAX by the README's second pass

SIZE, SQUARE = 24, 6


def bright_square_images(count, seed=0):
    """Dim noise; class 1 images also hold a bright SQUARE x SQUARE patch at a random place. Returns the patch masks."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 0.3, size=(count, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.arange(count) % 2
    masks = np.zeros((count, SIZE, SIZE), dtype=bool)
    for index in np.flatnonzero(labels == 1):
        row, column = rng.integers(0, SIZE - SQUARE, size=2)
        images[index, row:row + SQUARE, column:column + SQUARE] = 1.0
        masks[index, row:row + SQUARE, column:column + SQUARE] = True
    return images, labels.astype(np.float32).reshape(-1, 1), masks


def square_finder(nested):
    """Two convolutions, global pooling and a sigmoid; with `nested`, the convolutions are a model inside the model."""
    convolutions = [keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
                    keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")]
    images = keras.Input((SIZE, SIZE, 3), name="images")
    if nested:
        backbone = keras.Sequential([keras.Input((SIZE, SIZE, 3)), *convolutions], name="backbone")
        x = backbone(images)
    else:
        x = convolutions[1](convolutions[0](images))
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, keras.layers.Dense(1, activation="sigmoid", name="predictions")(x))


@pytest.mark.slow
@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested backbone"])
def test_heat_falls_on_the_bright_square(nested):
    keras.utils.set_random_seed(0)
    images, labels, masks = bright_square_images(256)
    model = square_finder(nested)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(images, labels, epochs=15, batch_size=32, verbose=0)
    test_images, test_labels, test_masks = bright_square_images(40, seed=1)
    assert model.evaluate(test_images, test_labels, verbose=0)[1] > 0.9, "the tiny CNN learned the task"

    expected_layer = "backbone" if nested else "conv2"
    assert gradcam.feature_layer(model).name == expected_layer
    maps, probabilities = gradcam.heatmaps(model, test_images)

    squares = [i for i in range(len(test_images)) if test_labels[i, 0] == 1 and probabilities[i, 1] > 0.5]
    assert len(squares) >= 15
    for i in squares:
        inside, outside = maps[i][test_masks[i]].mean(), maps[i][~test_masks[i]].mean()
        assert inside > 2 * outside, f"image {i}: mean heat {inside:.2f} on the square, {outside:.2f} elsewhere"
        hottest = np.unravel_index(maps[i].argmax(), maps[i].shape)
        assert test_masks[i][hottest], f"image {i}: the hottest pixel is off the square"


@pytest.mark.parametrize("builder, network, num_classes, layer", [
    ("happy_cnn", {}, 2, "conv_relu"),
    ("signs_cnn", {}, 3, "conv2_relu"),
    ("transfer", {"backbone": "MobileNet", "alpha": 0.25, "weights": "none", "input_size": 32,
                  "augmentation": {"flip": "horizontal", "rotation": 0.2}}, 3, "backbone"),
])
def test_heatmaps_have_the_input_size_and_lie_in_0_1(builder, network, num_classes, layer):
    keras.utils.set_random_seed(1)
    model = get_builder(builder)((16, 16, 3), num_classes, **network)
    images = np.random.default_rng(0).random((3, 16, 16, 3), dtype=np.float32)

    assert gradcam.feature_layer(model).name == layer
    maps, probabilities = gradcam.heatmaps(model, images)

    assert maps.shape == (3, 16, 16) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert probabilities.shape == (3, num_classes)
    outputs = model.predict(images, verbose=0)
    expected = np.concatenate([1 - outputs, outputs], axis=1) if num_classes == 2 else outputs
    np.testing.assert_allclose(probabilities, expected, atol=1e-5, err_msg="inference mode: augmentation is off")
    again, _ = gradcam.heatmaps(model, images)
    np.testing.assert_array_equal(maps, again)


def test_a_named_layer_is_used_and_an_unknown_one_refused():
    model = get_builder("signs_cnn")((16, 16, 3), 3)
    assert gradcam.feature_layer(model, "conv1_relu").name == "conv1_relu"
    with pytest.raises(gradcam.GradCamError, match="has no layer 'conv9'"):
        gradcam.feature_layer(model, "conv9")


def test_a_model_without_a_feature_map_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")], name="flat")
    with pytest.raises(gradcam.GradCamError, match="flat has no convolutional feature map"):
        gradcam.feature_layer(model)


def test_predict_explain_writes_the_overlay(saved_model, tiny_project, capsys):
    predict.main(["digits_cnn", "red.png", "--explain", "why.png"])

    assert capsys.readouterr().out.startswith("red.png: ")
    with Image.open(tiny_project / "why.png") as picture:
        assert picture.format == "PNG" and picture.width > 200


@pytest.mark.parametrize("target, message", [
    ("nowhere/why.png", "predict: error: --explain nowhere/why.png: no such folder nowhere"),
    ("why.jpg", "predict: error: --explain why.jpg: expected the path of a .png file to write"),
])
def test_predict_explain_errors(saved_model, tiny_project, target, message):
    assert run_stage(predict, "digits_cnn", "red.png", "--explain", target) == message
    assert not (tiny_project / target).exists()


def test_a_frozen_model_is_explained_too():
    keras.utils.set_random_seed(2)
    model = get_builder("signs_cnn")((16, 16, 3), 3)
    model.trainable = False
    maps, _ = gradcam.heatmaps(model, np.random.default_rng(1).random((2, 16, 16, 3), dtype=np.float32))
    assert maps.shape == (2, 16, 16) and maps.max() > 0


def test_a_sequential_model_loaded_from_its_file(tmp_path):
    """As evaluate and predict meet it: a Sequential model that Keras has loaded (and so already called)."""
    keras.utils.set_random_seed(3)
    save_model(get_builder("happy_cnn")((16, 16, 3), 2), tmp_path / "happy.keras")
    model = keras.models.load_model(tmp_path / "happy.keras")
    images = np.random.default_rng(2).random((2, 16, 16, 3), dtype=np.float32)

    maps, probabilities = gradcam.heatmaps(model, images)

    assert maps.shape == (2, 16, 16) and maps.max() > 0
    np.testing.assert_allclose(probabilities[:, 1], model.predict(images, verbose=0)[:, 0], atol=1e-5)


def test_a_head_that_is_not_a_chain_is_refused():
    images = keras.Input((16, 16, 3))
    first = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(images)
    second = keras.layers.Conv2D(4, 3, padding="same", name="conv2")(first)
    pooled = [keras.layers.GlobalAveragePooling2D(name=f"pool_{i}")(x) for i, x in enumerate((second, first))]
    merged = keras.layers.Add(name="skip")(pooled)
    model = keras.Model(images, keras.layers.Dense(3, activation="softmax", name="predictions")(merged), name="skippy")

    with pytest.raises(gradcam.GradCamError, match="skippy: the layers after 'conv2' do not form a chain"):
        gradcam.heatmaps(model, np.zeros((1, 16, 16, 3), dtype=np.float32))
