"""Turning any image into model input: one function, shared by preprocess and by prediction on new images.

A dataset with a face step (stages/faces.py) frames each image around its largest face first;
the others keep the whole frame.

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


def to_pixels(image, image_size, face_step=None):
    """An image as uint8 (image_size, image_size, 3): every image a model sees comes through here.

    Turned upright; with a face step, cut to the square around its largest face (the whole frame if
    none is found); then framed by frame_pixels.
    """
    image = upright(image)
    return face_pixels(image, image_size, face_step, face_step.largest_face(image) if face_step is not None else None)


def face_pixels(image, image_size, face_step, face):
    """An upright image framed on one of its faces as the face step frames it (face None: the whole frame;
    grey where the step says so); predict frames every face it finds through here."""
    return frame_pixels(image, image_size, face.region if face else None, face_step is not None and face_step.grey)


def upright(image):
    """The image turned as its EXIF orientation tag says (phone photos are stored sideways and tagged)."""
    return ImageOps.exif_transpose(image)


def central_square(width, height):
    """(left, top, right, bottom) of the largest square in the middle of a width x height image."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def frame_pixels(image, image_size, region=None, grey=False):
    """An upright image's `region` (left, top, right, bottom; None: its central square, so that it
    is not squashed) as uint8 (image_size, image_size, 3), grey in all three channels if asked,
    resized bilinearly."""
    region = region or central_square(*image.size)
    if tuple(region) != (0, 0, *image.size):
        image = image.crop(region)
    rgb = image.convert("L").convert("RGB") if grey else image.convert("RGB")
    if rgb.size != (image_size, image_size):
        rgb = rgb.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)


def to_unit_range(pixels):
    """uint8 pixels as the model's float32 input in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / np.float32(PIXEL_MAX)


def open_image(path):
    """A decoded image file; raises one of UNREADABLE_IMAGE_ERRORS if it cannot be."""
    with Image.open(path) as image:
        image.load()
        return image


def load_pixels(path, image_size, face_step=None):
    """Decode an image file into pixels; raises one of UNREADABLE_IMAGE_ERRORS if it cannot."""
    return to_pixels(open_image(path), image_size, face_step)


def array_to_pixels(pixels, image_size, face_step=None):
    """A uint8 HxW, HxWx1 or HxWx3 array (as in the course's HDF5 files) as stored pixels."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return to_pixels(Image.fromarray(pixels), image_size, face_step)
