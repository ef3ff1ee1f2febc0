"""The course's small SIGNS model, written with the Functional API."""

import keras

from stages.models.augmentation import augment
from stages.models.heads import classifier_output


def build_signs_cnn(input_shape, num_classes, filters=(8, 16), augmentation=None):
    """Conv 4x4 -> ReLU -> MaxPool 8/8 -> Conv 2x2 -> ReLU -> MaxPool 4/4 -> Flatten -> Dense.

    1,310 parameters for 6 classes."""
    images = keras.Input(shape=input_shape, name="images")
    x = augment(images, augmentation)
    x = keras.layers.Conv2D(filters[0], 4, padding="same", name="conv1")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(pool_size=8, strides=8, padding="same", name="pool1")(x)
    x = keras.layers.Conv2D(filters[1], 2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="conv2_relu")(x)
    x = keras.layers.MaxPooling2D(pool_size=4, strides=4, padding="same", name="pool2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(images, classifier_output(num_classes)(x), name="signs_cnn")
