"""Turning any image into model input: one function, shared by preprocess and by prediction on new images."""

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Errors Pillow raises for a file that is not a readable image (truncated, corrupt, not an image).
UNREADABLE_IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def to_model_input(image, image_size):
    """An image as float32 (image_size, image_size, 3) in [0, 1].

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
    return np.asarray(rgb, dtype=np.float32) / 255.0


def load_image(path, image_size):
    """Decode an image file into model input; raises one of UNREADABLE_IMAGE_ERRORS if it cannot."""
    with Image.open(path) as image:
        image.load()
        return to_model_input(image, image_size)


def array_to_model_input(pixels, image_size):
    """A uint8 HxW, HxWx1 or HxWx3 array (as in the course's HDF5 files) as model input."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return to_model_input(Image.fromarray(pixels), image_size)
