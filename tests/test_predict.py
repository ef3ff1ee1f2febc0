"""predict: classifying new image files with a saved model, and its errors."""

import json

import numpy as np
import pytest
import shutil

import yaml
from helpers import (
    CROP, SHARED_FACE_DETECTOR, drawn_face, face_detector_pin, needs_face_detector, run_python, save_params)
from PIL import Image

from stages import predict
from stages.images import load_pixels, to_unit_range

pytestmark = pytest.mark.backends  # run again on JAX by the README's second pass


def test_prediction_uses_the_preprocess_pipeline(saved_model, tiny_project, capsys):
    predict.main(["digits_cnn", "red.png", "grey.jpg", "--json"])

    results = json.loads(capsys.readouterr().out)
    inputs = to_unit_range(np.stack([load_pixels("red.png", 16), load_pixels("grey.jpg", 16)]))
    expected = saved_model.predict(inputs, verbose=0)
    assert [r["image"] for r in results] == ["red.png", "grey.jpg"]
    for result, probabilities in zip(results, expected):
        assert result["predicted"] == str(probabilities.argmax())
        assert result["probability"] == pytest.approx(probabilities.max(), rel=1e-5)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, rel=1e-5)


def test_by_default_every_seeds_model_answers_averaged_and_seed_picks_one(saved_model, tiny_project, capsys):
    import keras

    from stages.config import load_params
    from stages.models import get_builder, save_model

    params = load_params()
    params["seeds"] = [5, 6]
    save_params(tiny_project, params)
    keras.utils.set_random_seed(2)
    other = get_builder("signs_cnn")((16, 16, 3), 3)
    save_model(other, tiny_project / "models/digits_cnn/6.keras")
    inputs = to_unit_range(np.stack([load_pixels("red.png", 16), load_pixels("grey.jpg", 16)]))
    first, second = saved_model.predict(inputs, verbose=0), other.predict(inputs, verbose=0)
    assert not np.allclose(first, second)

    predict.main(["digits_cnn", "red.png", "grey.jpg", "--json"])
    averaged = [list(result["probabilities"].values()) for result in json.loads(capsys.readouterr().out)]
    np.testing.assert_allclose(averaged, (first + second) / 2, rtol=1e-5)

    predict.main(["digits_cnn", "red.png", "grey.jpg", "--json", "--seed", "6"])
    alone = [list(result["probabilities"].values()) for result in json.loads(capsys.readouterr().out)]
    np.testing.assert_allclose(alone, second, rtol=1e-5)


def test_plain_and_full_distribution_output(saved_model, tiny_project, capsys):
    predict.main(["digits_cnn", "red.png"])
    plain = capsys.readouterr().out.splitlines()
    assert len(plain) == 1 and plain[0].startswith("red.png: ")

    predict.main(["digits_cnn", "red.png", "--all"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and sorted(line.split(":")[0].strip() for line in lines[1:]) == ["0", "1", "2"]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["digits_cnn", "nothing.png"], "predict: error: no such file: nothing.png"),
    (["digits_cnn", "params.yaml"], "predict: error: params.yaml is not a readable image"),
    (["resnet9000", "red.png"], "predict: error: unknown model 'resnet9000'"),
    (["faces_cnn", "red.png"], "predict: error: models/faces_cnn/5.keras is missing: run `dvc repro train@faces_cnn-5`"),
    (["digits_cnn", "red.png", "--seed", "7"], "predict: error: models/digits_cnn/7.keras is missing"),
])
def test_errors_exit_non_zero_without_a_traceback(saved_model, tiny_project, args, message):
    result = run_python("-m", "stages.predict", *args, cwd=tiny_project)  # as a user runs it: real exit status
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def dominant_colours(image):
    """'r', 'g' or 'b' per pixel: the strongest channel."""
    return np.array(list("rgb"))[np.asarray(image).argmax(axis=-1)]


def test_a_phone_photo_is_turned_upright_by_its_exif_orientation(tmp_path):
    # Stored 40 wide x 20 high, red above blue, tagged "rotate 90 degrees clockwise to display" (orientation 6):
    # upright it is 20 x 40 with blue on the left and red on the right.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:10, :, 0] = 255
    pixels[10:, :, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)

    colours = dominant_colours(load_pixels(tmp_path / "photo.jpg", 8))

    assert (colours[:, :3] == "b").all() and (colours[:, 5:] == "r").all()


def test_a_wide_photo_is_centre_cropped_not_squashed(tmp_path):
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :, 2] = 255          # blue margins
    pixels[:, 20:40] = (255, 0, 0)  # a red square in the middle
    Image.fromarray(pixels).save(tmp_path / "wide.png")

    image = load_pixels(tmp_path / "wide.png", 8)

    assert image.shape == (8, 8, 3) and (dominant_colours(image) == "r").all()


@pytest.fixture
def faces_project(tiny_project):
    """The tiny project's two-class `faces` dataset with a face step, the detector where its stage puts it,
    an untrained faces_cnn, a photo of two people and one of nobody."""
    import keras

    from stages.models import get_builder, save_model

    params = yaml.safe_load((tiny_project / "params.yaml").read_text())
    params["datasets"]["faces"].update(crop=dict(CROP), face_detector=face_detector_pin())
    (tiny_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tiny_project / "data/raw/faces").mkdir(parents=True)
    shutil.copyfile(SHARED_FACE_DETECTOR, tiny_project / "data/raw/faces/face_detector.onnx")
    keras.utils.set_random_seed(1)
    save_model(get_builder("happy_cnn")((16, 16, 3), 2), tiny_project / "models/faces_cnn/5.keras")
    photo = Image.new("RGB", (600, 300), (70, 110, 150))
    photo.paste(drawn_face(120, scale=0.4), (40, 90))
    photo.paste(drawn_face(260, scale=1.0), (300, 20))
    photo.save(tiny_project / "two.jpg", quality=95)
    Image.new("RGB", (80, 60), (30, 160, 90)).save(tiny_project / "nobody.png")
    return tiny_project


@needs_face_detector
def test_each_face_in_a_photo_gets_its_own_answer_largest_first(faces_project, capsys):
    predict.main(["faces_cnn", "two.jpg", "nobody.png", "--json"])
    results = json.loads(capsys.readouterr().out)

    assert [result["image"] for result in results] == ["two.jpg", "two.jpg", "nobody.png"]
    big, small, nobody = (result["face"] for result in results)
    assert big["box"][0] > 300 and small["box"][0] < 200 and big["box"][2] > small["box"][2]
    assert nobody is None
    assert all(sum(result["probabilities"].values()) == pytest.approx(1.0, rel=1e-5) for result in results)

    predict.main(["faces_cnn", "nobody.png", "two.jpg"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("nobody.png: no face found, judged whole: ")
    assert lines[1].startswith("two.jpg: face at (") and lines[2].startswith("two.jpg: face at (")


@needs_face_detector
def test_the_explanation_shows_each_face_in_its_photo(faces_project):
    predict.main(["faces_cnn", "two.jpg", "nobody.png", "--explain", "why.png"])
    with Image.open(faces_project / "why.png") as picture:
        width, height = picture.size
    assert width > 2.5 * height  # three entries of three panels in one row
