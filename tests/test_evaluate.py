"""The evaluate stage on a tiny trained model: metrics, predictions, pictures, errors."""

import json

import keras
import numpy as np
import pytest
from helpers import run_stage
from PIL import Image
from sklearn.metrics import roc_auc_score

from stages import evaluate, train
from stages.data import read_split

pytestmark = pytest.mark.backends  # run again on JAX by the README's second pass


@pytest.fixture
def trained(tiny_project):
    for name in ("digits_cnn", "faces_cnn"):
        assert run_stage(train, name) is None
    return tiny_project


def read(project, relative):
    return json.loads((project / relative).read_text())


@pytest.mark.slow
def test_multiclass_metrics_match_the_models_predictions(trained):
    assert run_stage(evaluate, "digits_cnn") is None

    metrics = read(trained, "reports/metrics/digits_cnn/5.json")
    test_images, test_labels = read_split(trained / "data/processed/digits", "test")
    model = keras.models.load_model(trained / "models/digits_cnn/5.keras")
    predicted = model.predict(test_images[:], verbose=0).argmax(axis=1)
    actual = test_labels.argmax(axis=1)
    assert metrics["test_images"] == 12
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == actual))
    assert set(metrics["per_class"]) == {"0", "1", "2"}
    assert sum(scores["support"] for scores in metrics["per_class"].values()) == 12
    assert "roc_auc" not in metrics
    assert metrics["size"]["parameter_count"] == model.count_params()
    assert metrics["size"]["file_bytes"] == (trained / "models/digits_cnn/5.keras").stat().st_size
    assert metrics["inference"]["images_per_second"] > 0 and metrics["inference"]["single_image_latency_ms"] > 0

    rows = read(trained, "reports/eval/digits_cnn/5/predictions.json")
    assert len(rows) == 12 and set(rows[0]) == {"actual", "predicted", "probabilities"}
    assert [row["predicted"] for row in rows] == [str(p) for p in predicted]
    np.testing.assert_allclose([row["probabilities"] for row in rows], model.predict(test_images[:], verbose=0),
                               atol=1e-6)
    with Image.open(trained / "reports/eval/digits_cnn/5/misclassified.png") as picture:
        assert picture.format == "PNG"


@pytest.mark.slow
def test_binary_model_reports_roc_auc(trained):
    assert run_stage(evaluate, "faces_cnn") is None

    metrics = read(trained, "reports/metrics/faces_cnn/5.json")
    test_images, test_labels = read_split(trained / "data/processed/faces", "test")
    scores = keras.models.load_model(trained / "models/faces_cnn/5.keras").predict(test_images[:], verbose=0)[:, 0]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(test_labels[:, 0], scores), abs=1e-6)
    assert set(metrics["per_class"]) == {"no", "yes"}
    assert {row["actual"] for row in read(trained, "reports/eval/faces_cnn/5/predictions.json")} == {"no", "yes"}


def test_untrained_model_is_a_clear_error(tiny_project):
    message = run_stage(evaluate, "digits_cnn")
    assert message == "evaluate digits_cnn: error: models/digits_cnn/5.keras is missing: run `dvc repro train@digits_cnn-5` first"
    assert not (tiny_project / "reports/metrics/digits_cnn/5.json").exists()
