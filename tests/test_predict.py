"""predict: classifying new image files with a saved model, and its errors."""

import json

import numpy as np
import pytest
from helpers import run_python
from PIL import Image

from stages import predict
from stages.images import load_image

pytestmark = pytest.mark.backends  # run again on JAX by the README's second pass


def test_prediction_uses_the_preprocess_pipeline(saved_model, tiny_project, capsys):
    predict.main(["digits_cnn", "red.png", "grey.jpg", "--json"])

    results = json.loads(capsys.readouterr().out)
    expected = saved_model.predict(np.stack([load_image("red.png", 16), load_image("grey.jpg", 16)]), verbose=0)
    assert [r["image"] for r in results] == ["red.png", "grey.jpg"]
    for result, probabilities in zip(results, expected):
        assert result["predicted"] == str(probabilities.argmax())
        assert result["probability"] == pytest.approx(probabilities.max(), rel=1e-5)
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, rel=1e-5)


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
    (["faces_cnn", "red.png"], "predict: error: models/faces_cnn.keras is missing: run `dvc repro train@faces_cnn`"),
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

    colours = dominant_colours(predict.load_images([tmp_path / "photo.jpg"], 8)[0])

    assert (colours[:, :3] == "b").all() and (colours[:, 5:] == "r").all()


def test_a_wide_photo_is_centre_cropped_not_squashed(tmp_path):
    pixels = np.zeros((20, 60, 3), dtype=np.uint8)
    pixels[:, :, 2] = 255          # blue margins
    pixels[:, 20:40] = (255, 0, 0)  # a red square in the middle
    Image.fromarray(pixels).save(tmp_path / "wide.png")

    image = predict.load_images([tmp_path / "wide.png"], 8)[0]

    assert image.shape == (8, 8, 3) and (dominant_colours(image) == "r").all()
