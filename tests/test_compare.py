"""The compare stage on fixture reports: table, best-model line, CSV, figures."""

import functools
import json

import numpy as np
import pandas as pd
import pytest
from helpers import TRAIN_DEFAULTS, dataset_block, save_params
from PIL import Image

from stages import compare
from stages.config import load_params
from stages.metrics import classification_metrics, curve_points

# model: (dataset, test images it gets right of TEST_IMAGES, weights); the first k images are the right ones
FIXTURE_MODELS = {
    "digits_small": ("digits", 12, None),
    "digits_big": ("digits", 19, None),
    "digits_transfer": ("digits", 14, "none"),
    "faces_cnn": ("faces", 13, None),
}
# digits models: images of the external set `course` (also TEST_IMAGES) they get right, the first k
EXTERNAL_RIGHT = {"digits_small": 10, "digits_big": 14, "digits_transfer": 17}
CLASSES = {"digits": ["0", "1", "2"], "faces": ["no", "yes"]}
TEST_IMAGES = 20


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@functools.cache
def fixture_predictions(num_classes, right):
    """(actual, predicted, probabilities): the first `right` images right, the rest one class off."""
    actual = np.arange(TEST_IMAGES) % num_classes
    predicted = np.where(np.arange(TEST_IMAGES) < right, actual, (actual + 1) % num_classes)
    probabilities = np.full((TEST_IMAGES, num_classes), 0.1 / num_classes)
    probabilities[np.arange(TEST_IMAGES), predicted] += 0.9
    return actual, predicted, probabilities


@functools.cache
def fixture_metrics(names, right):
    """A model's metrics, computed once per session (the bootstrap takes a few seconds)."""
    actual, predicted, probabilities = fixture_predictions(len(names), right)
    return classification_metrics(actual, predicted, list(names), probabilities[:, 1], seed=5)


@pytest.fixture
def reports(project):
    """params.yaml and every report compare reads, for four models over two datasets."""
    models = {}
    for name, (dataset, right, weights) in FIXTURE_MODELS.items():
        models[name] = ({"dataset": dataset, "builder": "transfer",
                         "network": {"backbone": "MobileNet", "weights": weights}}
                        if weights else {"dataset": dataset, "builder": "signs_cnn"})
        names = CLASSES[dataset]
        actual, predicted, probabilities = fixture_predictions(len(names), right)
        metrics = dict(fixture_metrics(tuple(names), right))
        metrics.update(loss=0.5, inference={"images_per_second": 100.0, "single_image_latency_ms": 5.0},
                       size={"parameter_count": 1000, "file_bytes": 3 * 2**20})
        if dataset == "digits":  # an external test set
            right_there = EXTERNAL_RIGHT[name]
            metrics["external"] = {"course": {**fixture_metrics(tuple(names), right_there), "test_images": 20}}
            there_actual, there_predicted, _ = fixture_predictions(len(names), right_there)
            write(project / f"reports/eval/{name}/predictions_external.json",
                  {"course": [{"actual": names[a], "predicted": names[p]}
                              for a, p in zip(there_actual, there_predicted)]})
        write(project / f"reports/metrics/{name}.json", metrics)
        write(project / f"reports/train/{name}.json", {"best_val_accuracy": 0.8, "best_epoch": 2, "epochs_run": 3})
        curves = project / f"reports/train/{name}/plots/metrics/eval"
        curves.mkdir(parents=True)
        (curves / "accuracy.tsv").write_text("step\taccuracy\n0\t0.5\n1\t0.6\n2\t0.7\n")
        (curves / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.8\n2\t0.7\n")
        write(project / f"reports/eval/{name}/predictions.json",
              [{"actual": names[a], "predicted": names[p]} for a, p in zip(actual, predicted)])
        Image.new("RGB", (600, 150), (90, 90, 200)).save(project / f"reports/eval/{name}/gradcam_shared.png")
        roc, precision_recall = curve_points(actual, probabilities)
        write(project / f"reports/eval/{name}/roc.json", roc)
        write(project / f"reports/eval/{name}/precision_recall.json", precision_recall)
    for dataset, names in CLASSES.items():
        test_counts = {name: int(np.sum(np.arange(TEST_IMAGES) % len(names) == i)) for i, name in enumerate(names)}
        train_counts = {name: 10 + i for i, name in enumerate(names)}  # the last class is the most common
        write(project / f"reports/data/{dataset}/summary.json", {
            "train": {"total": sum(train_counts.values()), "per_class": train_counts},
            "test": {"total": 20, "per_class": test_counts},
            **({"external": {"course": {"total": 20}}} if dataset == "digits" else {})})
        write(project / f"reports/data/{dataset}/details.json", {"classes": names, "train": {"image_shape": [16, 16, 3]}})
    save_params(project, {
        "seed": 5,
        "datasets": {dataset: dataset_block({"url": "unused"}, {n: n for n in names}) for dataset, names in CLASSES.items()},
        "train": dict(TRAIN_DEFAULTS), "models": models})
    return project


def test_report_table_best_model_and_csv(reports):
    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    assert "Best on test accuracy: **digits_big**, 0.950 [0.76, 0.99]." in report
    # digits_big got 7 images right that digits_small got wrong, and none the other way: p = 2 / 2**7
    assert ("Against digits_small: 7 test images only digits_big got right, 0 only digits_small "
            "(exact McNemar p = 0.0156, significant at 5%)") in report
    assert "(exact McNemar p = 0.0625, not significant at 5%)" in report
    assert "digits_big and digits_transfer cannot be told apart on this test set." in report
    assert "Best on test accuracy: **faces_cnn**, 0.650" in report
    table_lines = [line for line in report.splitlines() if line.startswith("| digits_")]
    assert len(table_lines) == 3
    assert "| 0.950 [0.76, 0.99] |" in table_lines[1], "accuracy with its Wilson interval"
    assert "ROC AUC" in report.split("## faces")[1] and "ROC AUC" not in report.split("## faces")[0]
    assert "`digits_transfer` was trained from random initial weights" in report
    assert "seed 5" in report and "33 training images" in report
    backend = load_params()["train"]["backend"]
    assert f"- `digits_big`: builder `signs_cnn`; Keras on {backend}; adam at" in report, "each model's backend"
    assert "uncommitted" not in report
    assert "External test sets, photos from elsewhere, never used to train or to choose settings: `course`, 20 " \
           "images." in report
    assert "course accuracy" in report.split("## faces")[0] and "course accuracy" not in report.split("## faces")[1]
    assert "| 0.500 [0.30, 0.70] |" in table_lines[0], "the external set's accuracy with its Wilson interval"
    # On `course` the order differs: digits_transfer 17, digits_big 14, digits_small 10 of 20, each model's right
    # images a prefix of the next one's, so only the better model of a pair gets any image right alone.
    course_line = next(line for line in report.splitlines() if line.startswith("Best on course accuracy"))
    assert course_line.startswith("Best on course accuracy: **digits_transfer**, 0.850 [0.64, 0.95].")
    assert ("Against digits_big: 3 course images only digits_transfer got right, 0 only digits_big "
            "(exact McNemar p = 0.25, not significant at 5%)") in course_line
    assert ("Against digits_small: 7 course images only digits_transfer got right, 0 only digits_small "
            "(exact McNemar p = 0.0156, significant at 5%)") in course_line
    assert course_line.endswith("digits_transfer and digits_big cannot be told apart on this test set.")
    assert "Best on course" not in report.split("## faces")[1], "faces has no external set"

    table = pd.read_csv(reports / "reports/comparison.csv")
    assert list(table["model"]) == list(FIXTURE_MODELS)
    assert table.set_index("model").loc["digits_big", "test accuracy"] == 0.95
    assert table.set_index("model").loc["digits_big", "test accuracy low"] == pytest.approx(0.7639, abs=1e-4)
    assert table.set_index("model").loc["faces_cnn", "size (MB)"] == 3.0


def test_every_figure_is_a_png_linked_from_the_report(reports):
    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    figures = sorted(p.name for p in (reports / "reports/figures").iterdir())
    assert figures == ["confusion_digits.png", "confusion_faces.png", "curves_digits.png", "curves_faces.png",
                       "gradcam_digits.png", "gradcam_faces.png", "roc_digits.png", "roc_faces.png", "scores.png"]
    for name in figures:
        with Image.open(reports / "reports/figures" / name) as picture:
            assert picture.format == "PNG" and picture.width > 300
        assert f"(figures/{name})" in report


def test_a_baseline_row_per_dataset_and_the_headline_metric_ranks(reports, caplog):
    params = load_params()
    params["datasets"]["faces"]["headline"] = "balanced_accuracy"
    save_params(reports, params)
    caplog.set_level("INFO")

    compare.main([])

    assert "digits: Best on test accuracy: digits_big" in caplog.text, "each dataset by its own headline"
    assert "faces: Best on balanced accuracy: faces_cnn" in caplog.text

    report = (reports / "reports/comparison.md").read_text()
    digits, faces = report.split("## faces")
    # always "2", the most common training class: 6 of the 20 test images (indices 2, 5, ..., 17)
    baseline = next(line for line in digits.splitlines() if line.startswith("| baseline: always 2 "))
    cells = [cell.strip() for cell in baseline.split("|")[1:-1]]
    assert cells[1:3] == ["0.300 [0.15, 0.52]", "0.333 [0.33, 0.33]"], "accuracy 6/20, balanced accuracy 1/3"
    assert "nan" not in cells, "a baseline has no size or speed: empty cells"
    assert "Best on balanced accuracy: **faces_cnn**" in faces and "| baseline: always yes " in faces
    assert "Flag:" not in report, "every model beats its baseline"


def test_a_model_that_does_not_beat_the_baseline_is_flagged():
    rows = pd.DataFrame({"model": ["good", "tied", "bad"], "balanced accuracy": [0.7, 0.5, 0.4]})
    flags = compare.baseline_flags(rows, {"balanced accuracy": 0.5}, "balanced accuracy")
    assert flags == ["Flag: `tied` does not beat the majority-class baseline on balanced accuracy (0.500 against "
                     "0.500).", "Flag: `bad` does not beat the majority-class baseline on balanced accuracy (0.400 "
                     "against 0.500)."]


def test_a_model_no_better_than_chance_on_an_external_set_is_flagged():
    rows = pd.DataFrame({"model": ["sees", "guesses", "untested"],
                         "course balanced accuracy": [0.62, 0.5, np.nan]})
    flags = compare.chance_flags(rows, {"course": {"total": 150}}, num_classes=2)
    assert flags == ["Flag: `guesses` does no better than chance on `course`: balanced accuracy 0.500, what "
                     "answering one class for every image gets (0.500)."]
    assert compare.chance_flags(rows, {}, num_classes=2) == []


def test_the_face_step_lines_give_the_faces_found_and_each_external_set_with_and_without_the_step():
    rows = pd.DataFrame({"model": ["cnn", "mobilenet"],
                         "course accuracy": [0.8, 0.9], "course balanced accuracy": [0.75, 0.85],
                         "course whole-frame accuracy": [0.5, 0.6],
                         "course whole-frame balanced accuracy": [0.5, 0.55]})
    summary = {"external": {"course": {"total": 150}},
               "faces_found": {"train": {"found": 90, "missed": 10}, "external/course": {"found": 149, "missed": 1}}}
    crop = {"side": 2.0, "centre": 0.5, "colour": "grey"}

    lines = compare.face_step_lines(rows, summary, crop)

    assert "(2 eye-to-mouth distances wide, centred 0.5 of that distance from the eyes toward the mouth), turned " \
           "grey," in lines[0]
    assert lines[0].endswith("Faces found: train 90 of 100; course 149 of 150.")
    table = [line for line in "\n".join(lines).splitlines() if line.startswith("| mobilenet")]
    assert [cell.strip() for cell in table[0].split("|")[1:-1]] == ["mobilenet", "course", "0.900", "0.600", "0.850",
                                                                    "0.550"]
    assert compare.face_step_lines(rows, {"external": {"course": {"total": 150}}}, None) == []


def test_a_significant_lead_is_called_so(reports):
    models = load_params()["models"]
    del models["digits_transfer"]
    params = load_params()
    params["models"] = models
    save_params(reports, params)

    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    test_line = next(line for line in report.splitlines() if line.startswith("Best on test accuracy: **digits_"))
    assert test_line.endswith("Its lead over every other model is significant at 5%.")
    assert "cannot be told apart" not in test_line
    course_line = next(line for line in report.splitlines() if line.startswith("Best on course accuracy"))
    assert course_line.endswith("digits_big and digits_small cannot be told apart on this test set."), \
        "4 of 4 discordant images (p = 0.125) is no significant lead"


def test_missing_report_is_a_clear_error(reports):
    (reports / "reports/metrics/faces_cnn.json").unlink()
    with pytest.raises(SystemExit, match="compare: error: reports/metrics/faces_cnn.json is missing"):
        compare.main([])
