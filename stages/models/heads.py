"""Output layers shared by every architecture, so binary and multiclass models are built alike."""

import keras


def classifier_output(num_classes, name="predictions"):
    """Dense(1, sigmoid) for two classes, Dense(num_classes, softmax) otherwise; float32 under mixed precision."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=name)
    return keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name=name)
