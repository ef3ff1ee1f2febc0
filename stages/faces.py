"""The face step: find the face in a photo and frame it as the dataset's own images are framed.

SMILEsmileD's images are faces cropped tightly and turned grey; a photo of a person shows a head in
a scene. A dataset with a `crop` block in params.yaml sends every image its models see (training
and test images, external photos, predict's photos) through stages.images.to_pixels with a
FaceStep: the largest face, cut to a square placed by its eyes and mouth as SMILEsmileD frames its
faces, then the dataset's colour rule and resize. The same function frames both sides, so train and
test framing match by construction. An image with no face found keeps its whole frame, and is counted.

The detector is OpenCV's YuNet (an ONNX model, MIT), pinned by `face_detector` in the dataset's
block: the download stage fetches it into data/raw/<dataset>/face_detector.onnx.
"""

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.files import file_sha256

# YuNet's own post-processing: boxes overlapping more than this are one face; at most this many faces.
NMS_THRESHOLD = 0.3
MAX_FACES = 50
# The pinned OpenCV is in requirements-common.txt, which the TensorFlow, JAX and GPU files all include:
# naming requirements.txt would send a JAX user to install TensorFlow.
INSTALL_OPENCV = "pip install -r requirements-common.txt (the pinned opencv-python-headless)"


class FaceStepError(RuntimeError):
    """A face detector that is missing, damaged or cannot run here; the message says the mend."""


@dataclass(frozen=True)
class Face:
    """A detected face: its box in the upright image's pixels, the detector's score, and the square
    region (left, top, right, bottom) the face step cuts out of the image."""

    box: tuple
    score: float
    region: tuple


def square_region(centre, side, width, height):
    """The square of `side` pixels centred on `centre` (x, y), moved inside the image and shrunk to the
    image's shorter side if larger: no invented pixels at the edges. (left, top, right, bottom) in whole pixels."""
    side = int(min(max(round(side), 1), width, height))
    x, y = int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2))
    x, y = min(max(x, 0), width - side), min(max(y, 0), height - side)
    return x, y, x + side, y + side


def framing(landmarks, side, centre):
    """(centre (x, y), side) of the square a face is cut to, from YuNet's five landmarks (eyes, nose tip,
    mouth corners): `side` eye-to-mouth distances wide, centred `centre` of that distance from the eyes'
    midpoint toward the mouth's. Landmarks, not the box, since SMILEsmileD cuts its faces brow to chin,
    tighter than any detector's box around the head."""
    points = np.asarray(landmarks, dtype=float).reshape(5, 2)
    eyes, mouth = points[:2].mean(axis=0), points[3:].mean(axis=0)
    return tuple(eyes + centre * (mouth - eyes)), side * float(np.hypot(*(mouth - eyes)))


class FaceStep:
    """One dataset's face step: its detector and crop rule, and how many images had a face.

    `found` and `missed` count the images framed by `largest_face` so far, for the stage's report.
    """

    def __init__(self, crop, detector_path, sha256=None, fetch="run the download stage"):
        self.side, self.centre, self.grey = crop["side"], crop["centre"], crop["colour"] == "grey"
        self.min_score, self.detection_size = crop["min_score"], crop["detection_size"]
        self.found = self.missed = 0
        self._detector = load_detector(Path(detector_path), sha256, self.min_score, fetch)

    def faces(self, image):
        """Every face in an upright PIL image, largest box first."""
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        scale = self.detection_size / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        import cv2

        bgr = cv2.resize(np.ascontiguousarray(rgb[..., ::-1]), size, interpolation=cv2.INTER_LINEAR)
        self._detector.setInputSize(size)
        _, rows = self._detector.detect(bgr)
        faces = []
        for row in [] if rows is None else rows:
            box = tuple(float(value) / scale for value in row[:4])
            square = framing(row[4:14] / scale, self.side, self.centre)
            faces.append(Face(box, float(row[14]), square_region(*square, width, height)))
        return sorted(faces, key=lambda face: -face.box[2] * face.box[3])

    def largest_face(self, image):
        """The largest face of an upright PIL image, or None; counted in `found` or `missed`."""
        faces = self.faces(image)
        if faces:
            self.found += 1
            return faces[0]
        self.missed += 1
        return None

    def counts(self):
        return {"found": self.found, "missed": self.missed}

    def counting_anew(self):
        """A FaceStep sharing this one's detector (loaded and checked once) whose counts start at zero:
        one per split, so each split's faces are counted on their own."""
        step = copy.copy(self)
        step.found = step.missed = 0
        return step


def load_detector(path, sha256, min_score, fetch="run the download stage"):
    """OpenCV's FaceDetectorYN over the ONNX file at path, checked against sha256 when given; `fetch`
    says how to fetch the file again."""
    if not path.is_file():
        raise FaceStepError(f"the face detector {path} is missing: {fetch} to fetch it")
    found = None if sha256 is None else file_sha256(path)
    if found != sha256:
        raise FaceStepError(f"{path} has sha256 {found}, params.yaml pins {sha256}: the file was changed "
                            f"or damaged; {fetch} to fetch it again")
    try:
        import cv2
    except ImportError as error:
        raise FaceStepError(f"the face step needs OpenCV ({error}): {INSTALL_OPENCV}") from error
    if not hasattr(cv2, "FaceDetectorYN"):
        raise FaceStepError(f"OpenCV {cv2.__version__} has no FaceDetectorYN (YuNet needs OpenCV 4.8 or later): "
                            f"{INSTALL_OPENCV}")
    try:
        return cv2.FaceDetectorYN.create(str(path), "", (320, 320), min_score, NMS_THRESHOLD, MAX_FACES)
    except cv2.error as error:
        raise FaceStepError(f"{path} is not a face detector OpenCV can load ({error.err}): "
                            f"{fetch} to fetch it again") from error


def face_step(dataset):
    """The dataset's FaceStep, or None where its params.yaml block has no `crop`."""
    if dataset.crop is None:
        return None
    return FaceStep(dataset.crop, dataset.face_detector_path, dataset.face_detector["sha256"],
                    f"run `dvc repro download@{dataset.name}`")
