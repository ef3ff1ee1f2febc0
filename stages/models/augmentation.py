"""Random changes to training images: one `network.augmentation` block that every builder accepts.

The layers sit right after the model's input. Keras runs them only while training; at inference
(evaluate, predict, Grad-CAM) they pass images through unchanged, so the saved model needs nothing
switched off. Their random states are saved with resumable checkpoints like dropout's.

    augmentation: {flip: horizontal, rotation: 0.05, zoom: 0.1, shift: 0.1, brightness: 0.2, contrast: 0.2,
                   blur: 0.5}

flip: horizontal, vertical or horizontal_and_vertical; rotation: a fraction of a full turn either
way; zoom and shift: a fraction of the image height and width; brightness and contrast: a fraction
of the [0, 1] range and of the contrast; blur: the chance that an image is blurred (a 5x5 Gaussian
of up to one pixel's sigma, drawn per batch), as a face a few dozen pixels wide looks once enlarged.
Layers run in the order of this docstring's example.
"""

import keras

LAYERS = {
    "flip": lambda value, name: keras.layers.RandomFlip(value, name=name),
    "rotation": lambda value, name: keras.layers.RandomRotation(value, name=name),
    "zoom": lambda value, name: keras.layers.RandomZoom(value, name=name),
    "shift": lambda value, name: keras.layers.RandomTranslation(value, value, name=name),
    "brightness": lambda value, name: keras.layers.RandomBrightness(value, value_range=(0.0, 1.0), name=name),
    "contrast": lambda value, name: keras.layers.RandomContrast(value, value_range=(0.0, 1.0), name=name),
    "blur": lambda value, name: keras.layers.RandomGaussianBlur((value, value), kernel_size=5, sigma=(0.0, 1.0),
                                                                value_range=(0.0, 1.0), name=name),
}


# Keras marks these uncompilable on every backend because TensorFlow's image transform has no XLA
# kernel; on JAX they are jax.numpy and XLA compiles them. A model holding one otherwise runs op by op.
UNCOMPILED_BY_KERAS = (keras.layers.RandomRotation, keras.layers.RandomZoom, keras.layers.RandomTranslation)


def compile_augmentation(model):
    """Let XLA compile the model's rotation, zoom and shift layers on JAX, and a loaded model with them.

    Call it before model.compile, or after loading a compiled model (which Keras compiled without XLA).
    Returns the model.
    """
    if keras.backend.backend() != "jax":
        return model
    for layer in model.layers:
        if isinstance(layer, UNCOMPILED_BY_KERAS):
            layer.supports_jit = True
    if model.compiled:
        model.jit_compile = True
    return model


def augmentation_layers(augmentation):
    """The random layers an augmentation block names, named augment_<kind>, in LAYERS's order."""
    augmentation = augmentation or {}
    unknown = set(augmentation) - set(LAYERS)
    if unknown:
        raise ValueError(f"unknown augmentation key(s) {', '.join(sorted(unknown))}; known: {', '.join(LAYERS)}")
    return [make(augmentation[kind], f"augment_{kind}") for kind, make in LAYERS.items() if augmentation.get(kind)]


def augment(x, augmentation):
    """x passed through the augmentation block's layers (unchanged when the block is empty)."""
    for layer in augmentation_layers(augmentation):
        x = layer(x)
    return x
