"""The course's Happy House model, written with the Sequential API."""

import keras

from stages.models.augmentation import augmentation_layers
from stages.models.heads import classifier_output


def build_happy_cnn(input_shape, num_classes, filters=32, kernel_size=7, augmentation=None):
    """ZeroPad(3) -> Conv 7x7 -> BN -> ReLU -> MaxPool -> Flatten -> Dense(1, sigmoid): 37,633 params on 64x64x3."""
    if num_classes != 2:
        raise ValueError(f"happy_cnn is a binary classifier; the dataset has {num_classes} classes")
    return keras.Sequential([
        keras.Input(shape=input_shape, name="images"),
        *augmentation_layers(augmentation),
        keras.layers.ZeroPadding2D(padding=3, name="zero_padding"),
        keras.layers.Conv2D(filters, kernel_size, strides=1, name="conv"),
        keras.layers.BatchNormalization(axis=3, name="conv_bn"),
        keras.layers.ReLU(name="conv_relu"),
        keras.layers.MaxPooling2D(name="max_pool"),
        keras.layers.Flatten(name="flatten"),
        classifier_output(num_classes),
    ], name="happy_cnn")
