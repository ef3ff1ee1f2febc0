"""Turning any image into model input: one function, shared by preprocess and by prediction on new images.

An image becomes uint8 pixels (what preprocess stores: a quarter of the bytes of floats) and the
model reads them scaled to [0, 1]. The scaling is exact (the pixels are whole numbers 0-255), so
stored and freshly decoded images reach the model as the same floats.
"""

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Errors Pillow raises for a file that is not a readable image (truncated, corrupt, not an image).
UNREADABLE_IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)

# Model input = pixels / PIXEL_MAX, in float32 (here and in the input pipeline's TensorFlow ops).
PIXEL_MAX = 255.0


def to_pixels(image, image_size):
    """An image as uint8 (image_size, image_size, 3).

    Turned upright by its EXIF orientation (phone photos are stored sideways and tagged), cropped to
    its central square so that it is not squashed (the datasets' images are square already), converted
    to RGB and resized bilinearly.
    """
    image = ImageOps.exif_transpose(image)
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    rgb = image.convert("RGB")
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def to_unit_range(pixels):
    """uint8 pixels as the model's float32 input in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(PIXEL_MAX)


def load_pixels(path, image_size):
    """Decode an image file into pixels; raises one of UNREADABLE_IMAGE_ERRORS if it cannot."""
    with Image.open(path) as image:
        image.load()
        return to_pixels(image, image_size)


def load_image(path, image_size):
    """Decode an image file into model input; raises one of UNREADABLE_IMAGE_ERRORS if it cannot."""
    return to_unit_range(load_pixels(path, image_size))


def array_to_pixels(pixels, image_size):
    """A uint8 HxW, HxWx1 or HxWx3 array (as in the course's HDF5 files) as stored pixels."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return to_pixels(Image.fromarray(pixels), image_size)
