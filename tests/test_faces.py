"""The face step: crop geometry, the real detector on drawn faces, the whole-frame fallback, and its errors."""

import hashlib
import json
import re
import sys

import numpy as np
import pytest
from helpers import (
    CROP, SHARED_FACE_DETECTOR, dataset_block, drawn_face, face_detector_pin, leftovers, needs_face_detector,
    run_stage, write_image_folders, write_params)
from PIL import Image

from stages import download
from stages.config import dataset_spec, load_params
from stages.faces import FaceStep, FaceStepError, face_step, framing, square_region
from stages.images import frame_pixels, to_pixels


@pytest.mark.parametrize("centre, side, size, expected", [
    ((50, 50), 40, (100, 100), (30, 30, 70, 70)),       # centred on the point
    ((10, 10), 40, (100, 100), (0, 0, 40, 40)),         # moved inside at a corner
    ((32, 32), 70.4, (64, 64), (0, 0, 64, 64)),         # larger than the image: the whole image
    ((95, 25), 80, (100, 50), (50, 0, 100, 50)),        # shrunk to the shorter side, moved inside
    ((50, 50), 0.2, (100, 100), (50, 50, 51, 51)),      # at least one pixel
])
def test_the_crop_is_the_square_around_the_point_inside_the_image(centre, side, size, expected):
    assert square_region(centre, side, *size) == expected


@pytest.mark.parametrize("landmarks, side, centre, expected", [
    # eyes at (40, 50) and (60, 50), mouth corners at (42, 80) and (58, 80): 30 px from eyes to mouth
    ([40, 50, 60, 50, 50, 65, 42, 80, 58, 80], 2.0, 0.5, ((50, 65), 60)),
    ([40, 50, 60, 50, 50, 65, 42, 80, 58, 80], 1.0, 0.0, ((50, 50), 30)),
    # a face lying on its side: eyes above one another, the mouth to their right, 40 px away
    ([10, 40, 10, 60, 25, 50, 50, 45, 50, 55], 2.5, 0.25, ((20, 50), 100)),
])
def test_the_square_is_placed_by_the_eyes_and_the_mouth(landmarks, side, centre, expected):
    (x, y), length = framing(np.array(landmarks, dtype=np.float32), side, centre)
    assert (x, y, length) == pytest.approx((*expected[0], expected[1]))


@pytest.fixture
def step():
    return FaceStep(CROP, SHARED_FACE_DETECTOR, face_detector_pin()["sha256"])


@needs_face_detector
def test_the_detector_finds_a_drawn_face_where_it_was_drawn(step):
    faces = step.faces(drawn_face(256, centre=(150, 120), scale=0.5))
    assert len(faces) == 1 and faces[0].score > CROP["min_score"]
    left, top, width, height = faces[0].box
    assert abs(left + width / 2 - 150) < 10 and abs(top + height / 2 - 120) < 15
    assert 50 < width < 100 and 70 < height < 130  # the face is drawn about 70 x 95 pixels at this scale
    # drawn eyes at y = 120 - 9, the mouth's corners at about 120 + 24: a square about 2 x 33 px wide,
    # centred about halfway between them
    left, top, right, bottom = faces[0].region
    assert right - left == bottom - top and 50 < right - left < 85
    assert abs((left + right) / 2 - 150) < 8 and abs((top + bottom) / 2 - 127) < 10


@needs_face_detector
def test_several_faces_come_largest_first(step):
    photo = Image.new("RGB", (600, 300), (70, 110, 150))
    photo.paste(drawn_face(120, scale=0.4), (40, 90))
    photo.paste(drawn_face(260, scale=1.0), (300, 20))
    faces = step.faces(photo)
    assert len(faces) == 2
    assert faces[0].box[0] > 300 and faces[1].box[0] < 200
    assert faces[0].box[2] * faces[0].box[3] > faces[1].box[2] * faces[1].box[3]


@needs_face_detector
def test_a_face_is_framed_grey_and_an_image_without_one_keeps_its_whole_frame(step):
    face, blank = drawn_face(256, centre=(100, 140), scale=0.6), Image.new("RGB", (90, 60), (30, 160, 90))
    pixels = to_pixels(face, 16, step)
    assert np.array_equal(pixels, frame_pixels(face, 16, step.faces(face)[0].region, grey=True))
    assert not np.array_equal(pixels, frame_pixels(face, 16, None, grey=True))
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    assert np.array_equal(to_pixels(blank, 16, step), frame_pixels(blank, 16, None, grey=True))
    assert step.counts() == {"found": 1, "missed": 1}


@needs_face_detector
def test_a_step_counting_anew_shares_the_detector_and_counts_only_its_own_images(step):
    blank = Image.new("RGB", (90, 60), (30, 160, 90))
    step.largest_face(blank)
    split_step = step.counting_anew()
    assert split_step.counts() == {"found": 0, "missed": 0}
    assert split_step.largest_face(drawn_face(256, centre=(100, 140), scale=0.6)) is not None
    assert split_step.counts() == {"found": 1, "missed": 0} and step.counts() == {"found": 0, "missed": 1}
    assert split_step._detector is step._detector


def test_a_missing_detector_says_how_to_fetch_it(tmp_path):
    with pytest.raises(FaceStepError, match=r"face detector .*none.onnx is missing: run the download stage"):
        FaceStep(CROP, tmp_path / "none.onnx")


def test_a_datasets_face_step_says_which_download_fetches_its_detector(project):
    write_params(project, {"tiny": dataset_block({"url": "unused"}, {"a": "a", "b": "b"}, crop=dict(CROP),
                                                 face_detector={"file": "x.onnx", "sha256": "0" * 64})})
    missing = r"data/raw/tiny/face_detector.onnx is missing: run `dvc repro download@tiny`"
    with pytest.raises(FaceStepError, match=missing):
        face_step(dataset_spec(load_params(), "tiny"))


def test_a_tampered_detector_is_refused(tmp_path):
    path = tmp_path / "yunet.onnx"
    path.write_bytes(b"not the pinned file")
    with pytest.raises(FaceStepError, match="has sha256 .* params.yaml pins 0{64}"):
        FaceStep(CROP, path, "0" * 64)


def test_a_file_opencv_cannot_load_is_refused(tmp_path):
    path = tmp_path / "yunet.onnx"
    path.write_bytes(b"not an ONNX model")
    with pytest.raises(FaceStepError, match="is not a face detector OpenCV can load"):
        FaceStep(CROP, path)


def test_an_opencv_without_yunet_is_named(tmp_path, monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "FaceDetectorYN")
    path = tmp_path / "yunet.onnx"
    path.write_bytes(b"whatever")
    with pytest.raises(FaceStepError, match=f"OpenCV {cv2.__version__} has no FaceDetectorYN") as raised:
        FaceStep(CROP, path)
    assert "pip install -r requirements-common.txt" in str(raised.value), "a mend that installs no backend"


def test_a_missing_opencv_is_named_with_a_mend_for_every_backend(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 then raises ImportError
    path = tmp_path / "yunet.onnx"
    path.write_bytes(b"whatever")
    with pytest.raises(FaceStepError, match="the face step needs OpenCV .*pip install -r requirements-common.txt"):
        FaceStep(CROP, path)


def dataset_with_detector(project, tmp_path, monkeypatch, detector_bytes, sha256):
    """A tiny folder dataset with a face step whose detector's mirror under LOCAL_WEIGHTS_DIR holds
    detector_bytes (None: no file), pinned by sha256."""
    source = write_image_folders(tmp_path / "source", {"a": 4, "b": 4})
    mirror = tmp_path / "weights"
    mirror.mkdir()
    if detector_bytes is not None:
        (mirror / "yunet.onnx").write_bytes(detector_bytes)
    monkeypatch.setenv("LOCAL_WEIGHTS_DIR", str(mirror))
    pin = {"file": "https://example.invalid/yunet.onnx", "mirror": "yunet.onnx", "sha256": sha256}
    write_params(project, {"tiny": dataset_block({"url": str(source)}, {"a": "a", "b": "b"}, crop=dict(CROP),
                                                 face_detector=pin)})


@needs_face_detector
def test_download_fetches_the_pinned_detector_from_the_offline_mirror(project, tmp_path, monkeypatch):
    dataset_with_detector(project, tmp_path, monkeypatch, SHARED_FACE_DETECTOR.read_bytes(),
                          face_detector_pin()["sha256"])
    assert run_stage(download, "tiny") is None
    assert (project / "data/raw/tiny/face_detector.onnx").read_bytes() == SHARED_FACE_DETECTOR.read_bytes()
    record = json.loads((project / "data/raw/tiny.json").read_text())
    assert record["face_detector_sha256"] == face_detector_pin()["sha256"]


@pytest.mark.parametrize("content, expected", [
    (b"another file", "datasets.tiny.face_detector: .*yunet.onnx has sha256 [0-9a-f]{64}, params.yaml expects 0{64}"),
    (None, "datasets.tiny.face_detector: the file .*yunet.onnx does not exist"),
])
def test_download_refuses_a_wrong_or_missing_detector_and_writes_nothing(project, tmp_path, monkeypatch, content,
                                                                        expected):
    dataset_with_detector(project, tmp_path, monkeypatch, content, "0" * 64)
    message = run_stage(download, "tiny")
    assert message is not None and re.search(expected, message), message
    assert leftovers(project / "data/raw") == []


def test_download_refuses_a_pinned_file_opencv_cannot_run(project, tmp_path, monkeypatch):
    content = b"not an ONNX model"
    dataset_with_detector(project, tmp_path, monkeypatch, content, hashlib.sha256(content).hexdigest())
    message = run_stage(download, "tiny")
    assert message is not None and "is not a face detector OpenCV can load" in message, message
    assert leftovers(project / "data/raw") == []
