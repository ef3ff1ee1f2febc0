"""Grad-CAM: where in an image a classifier found the evidence for the class it predicted.

The gradient of the predicted class's score (before the softmax or sigmoid) with respect to the
model's last convolutional feature map, averaged over the map, weighs the map's channels; their
weighted sum, cut at zero and scaled to [0, 1], is the heatmap (Selvaraju et al., 2017). Every
layer runs in inference mode: batch norm uses its moving statistics and augmentation layers pass
images through unchanged.
"""

import numpy as np

from stages.models import class_probabilities

POOLING_LAYERS = ("MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D")


class GradCamError(ValueError):
    """A model with no feature map to explain, or a named layer it does not have."""


def feature_layer(model, name=None):
    """The top-level layer whose output is the model's last convolutional feature map.

    Found by structure: from the first convolution (or nested model) on, the last layer with a 4-D
    output that is not a pooling layer, preferring maps larger than 1x1. A nested backbone (a transfer
    model's `backbone`) counts as one layer. `name` (a model block's `network.gradcam_layer`) picks
    another.
    """
    import keras

    if name:
        try:
            return model.get_layer(name)
        except ValueError as error:
            raise GradCamError(f"{model.name} has no layer '{name}' (network.gradcam_layer)") from error
    convolutions = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D, keras.Model)
    first = next((i for i, layer in enumerate(model.layers) if isinstance(layer, convolutions)), None)
    candidates = [layer for layer in model.layers[first:] if first is not None and len(layer.output.shape) == 4
                  and type(layer).__name__ not in POOLING_LAYERS]
    if not candidates:
        raise GradCamError(f"{model.name} has no convolutional feature map (no layer with a 4-D output) to explain")
    larger = [layer for layer in candidates if (layer.output.shape[1] or 0) * (layer.output.shape[2] or 0) > 1]
    return (larger or candidates)[-1]


def _feature_map(model, layer, images):
    """The output of `layer` for the images, in inference mode."""
    import keras

    try:  # a layer of the top-level graph
        return keras.Model(model.inputs, layer.output)(images, training=False)
    except (ValueError, AttributeError):  # a nested backbone, or a Sequential model never called: run up to it
        x = images
        for current in model.layers:
            if type(current).__name__ != "InputLayer":
                x = current(x, training=False)
            if current is layer:
                return x
        raise GradCamError(f"{model.name}: layer '{layer.name}' is not one of its top-level layers")


def _head_input(model, layer, features):
    """The input of the model's last layer, computed from `layer`'s output through the layers after it."""
    x = features
    for current in model.layers[model.layers.index(layer) + 1:-1]:
        x = current(x, training=False)
    return x


def heatmaps(model, images, layer_name=None):
    """(heatmaps (n, H, W) in [0, 1] at the images' size, class probabilities (n, C)) for a batch of images.

    The gradient is that of the predicted class's score before the softmax (or sigmoid): a confident
    prediction's probability barely moves, its score still does.
    """
    import keras
    from keras import ops

    from stages.backend import gradient

    layer = feature_layer(model, layer_name)
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise GradCamError(f"{model.name}: expected a Dense output layer to take class scores from, "
                           f"found {type(last).__name__}")
    images = ops.convert_to_tensor(np.asarray(images, dtype=np.float32))
    features = _feature_map(model, layer, images)
    not_a_chain = GradCamError(f"{model.name}: the layers after '{layer.name}' do not form a chain, so the class "
                               "scores cannot be traced back to it; name another layer as network.gradcam_layer")

    def class_scores(features):
        """Every class's score from the feature map; a sigmoid unit's class 0 scores its logit's negative."""
        head_input = _head_input(model, layer, features)
        logits = ops.matmul(ops.cast(head_input, "float32"), ops.cast(last.kernel, "float32"))
        logits = logits + ops.cast(last.bias, "float32")
        return ops.concatenate([-logits, logits], axis=-1) if last.units == 1 else logits

    try:
        logits = ops.convert_to_numpy(class_scores(features))
    except (ValueError, TypeError) as error:
        raise not_a_chain from error
    predicted = np.eye(logits.shape[-1], dtype=np.float32)[logits.argmax(axis=-1)]
    gradients = gradient(lambda features: class_scores(features) * predicted, features)
    weights = ops.mean(ops.cast(gradients, "float32"), axis=(1, 2), keepdims=True)
    cams = ops.convert_to_numpy(ops.relu(ops.sum(weights * ops.cast(features, "float32"), axis=-1)))
    peaks = cams.max(axis=(1, 2), keepdims=True)
    cams = np.divide(cams, peaks, out=np.zeros_like(cams), where=peaks > 0)
    resized = ops.convert_to_numpy(ops.image.resize(cams[..., None], images.shape[1:3], interpolation="bilinear"))
    # The model's own probabilities: a sigmoid of the two-column logits' difference is their softmax.
    scaled = logits if last.units > 1 else logits / 2.0
    exponentials = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    probabilities = exponentials / exponentials.sum(axis=-1, keepdims=True)
    expected = class_probabilities(np.asarray(ops.convert_to_numpy(model(images, training=False)), dtype=np.float32))
    if not np.allclose(probabilities, expected, atol=1e-3):
        raise not_a_chain
    return np.clip(resized[..., 0], 0.0, 1.0), probabilities


def overlay(image, heatmap, alpha=0.45):
    """The image with the heatmap laid over it in the `jet` colours (RGB floats in [0, 1])."""
    from matplotlib import colormaps

    colours = colormaps["jet"](heatmap)[..., :3]
    return np.clip((1 - alpha) * np.asarray(image) + alpha * colours, 0.0, 1.0)


def in_photo(photo, region, heatmap, longest=512):
    """The whole photo (uint8 HxWx3) with the heatmap laid over the face region it was computed on, and
    that region outlined: where in the photo the model looked. Shrunk so its longer side is at most
    `longest` pixels."""
    from PIL import Image

    image = Image.fromarray(np.asarray(photo, dtype=np.uint8))
    scale = min(1.0, longest / max(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    picture = np.asarray(image, dtype=np.float32) / 255.0
    left, top, right, bottom = (int(round(value * scale)) for value in region)
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    patch = np.asarray(Image.fromarray(np.uint8(255 * heatmap)).resize((right - left, bottom - top),
                                                                       Image.Resampling.BILINEAR)) / 255.0
    picture[top:bottom, left:right] = overlay(picture[top:bottom, left:right], patch)
    line = max(1, round(max(picture.shape[:2]) / 200))
    across, down = slice(left, right), slice(top, bottom)
    for rows, columns in ((slice(top, top + line), across), (slice(bottom - line, bottom), across),
                          (down, slice(left, left + line)), (down, slice(right - line, right))):
        picture[rows, columns] = (0.0, 1.0, 0.0)  # the box in green
    return picture


def plot_explanations(images, maps, titles, heading, path, columns=3, photos=None):
    """Each image beside its heatmap overlay, titled; `columns` entries per row. With `photos` (one
    picture per image, as in_photo makes them), each entry also shows where it lies in its photo."""
    import math

    from stages.plots import plt, save_figure

    count = max(len(images), 1)
    rows = math.ceil(count / columns)
    per_entry = 2 if photos is None else 3
    entries = min(columns, count)
    figure, axes = plt.subplots(rows, per_entry * entries, figsize=(2.2 * per_entry * entries, 2.5 * rows + 0.5),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index, (image, heatmap, title) in enumerate(zip(images, maps, titles)):
        row, column = divmod(index, columns)
        first = per_entry * column
        axes[row, first].imshow(image)
        axes[row, first].set_title(title, fontsize=8)
        axes[row, first + 1].imshow(overlay(image, heatmap))
        axes[row, first + 1].set_title("Grad-CAM", fontsize=8)
        if photos is not None:
            axes[row, first + 2].imshow(photos[index])
            axes[row, first + 2].set_title("in the photo", fontsize=8)
    figure.suptitle(heading)
    save_figure(figure, path)
