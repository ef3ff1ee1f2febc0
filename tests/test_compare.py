"""The compare stage on fixture reports of two training seeds per model: table, best-model and ensemble
lines, summaries, CSV, figures."""

import functools
import json

import numpy as np
import pandas as pd
import pytest
from helpers import TRAIN_DEFAULTS, dataset_block, save_params
from PIL import Image

from stages import compare
from stages.config import load_params
from stages.metrics import classification_metrics

SEEDS = [5, 6]
# model: (dataset, test images each seed gets right of TEST_IMAGES, weights); the first k images are the right ones
FIXTURE_MODELS = {
    "digits_small": ("digits", (12, 10), None),
    "digits_big": ("digits", (19, 17), None),
    "digits_transfer": ("digits", (14, 15), "none"),
    "faces_cnn": ("faces", (13, 13), None),
}
# digits models: images of the external set `course` (also TEST_IMAGES) each seed gets right, the first k
EXTERNAL_RIGHT = {"digits_small": (10, 8), "digits_big": (14, 17), "digits_transfer": (17, 16)}
CLASSES = {"digits": ["0", "1", "2"], "faces": ["no", "yes"]}
TEST_IMAGES = 20


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@functools.cache
def fixture_predictions(num_classes, right, confidence):
    """(actual, predicted, probabilities): the first `right` images right, the rest one class off, each
    answer given with `confidence`."""
    actual = np.arange(TEST_IMAGES) % num_classes
    predicted = np.where(np.arange(TEST_IMAGES) < right, actual, (actual + 1) % num_classes)
    probabilities = np.full((TEST_IMAGES, num_classes), (1 - confidence) / (num_classes - 1))
    probabilities[np.arange(TEST_IMAGES), predicted] = confidence
    return actual, predicted, probabilities


def seed_confidence(index):
    """The first seed answers surer than the second, so their average follows the first where they differ."""
    return 0.9 - 0.1 * index


@functools.cache
def fixture_metrics(names, right, confidence):
    """A model's metrics, computed once per session (the bootstrap takes a few seconds)."""
    actual, predicted, probabilities = fixture_predictions(len(names), right, confidence)
    return classification_metrics(actual, predicted, list(names), probabilities[:, 1], seed=5)


def prediction_rows(names, right, confidence):
    actual, predicted, probabilities = fixture_predictions(len(names), right, confidence)
    return [{"actual": names[a], "predicted": names[p], "probabilities": list(row)}
            for a, p, row in zip(actual, predicted, probabilities)]


@pytest.fixture
def reports(project):
    """params.yaml and every report compare reads, for four models over two datasets, two seeds each."""
    models = {}
    for name, (dataset, rights, weights) in FIXTURE_MODELS.items():
        models[name] = ({"dataset": dataset, "builder": "transfer",
                         "network": {"backbone": "MobileNet", "weights": weights}}
                        if weights else {"dataset": dataset, "builder": "signs_cnn"})
        names = CLASSES[dataset]
        for index, (seed, right) in enumerate(zip(SEEDS, rights)):
            confidence = seed_confidence(index)
            metrics = dict(fixture_metrics(tuple(names), right, confidence))
            metrics.update(loss=0.5, inference={"images_per_second": 100.0 + index, "single_image_latency_ms": 5.0},
                           size={"parameter_count": 1000, "file_bytes": 3 * 2**20})
            if dataset == "digits":  # an external test set
                write(project / f"reports/eval/{name}/{seed}/predictions_external.json",
                      {"course": prediction_rows(names, EXTERNAL_RIGHT[name][index], confidence)})
            write(project / f"reports/metrics/{name}/{seed}.json", metrics)
            write(project / f"reports/train/{name}/{seed}.json",
                  {"best_val_accuracy": 0.8, "best_epoch": 2, "epochs_run": 3 + index})
            curves = project / f"reports/train/{name}/{seed}/plots/metrics/eval"
            curves.mkdir(parents=True)
            (curves / "accuracy.tsv").write_text("step\taccuracy\n0\t0.5\n1\t0.6\n2\t0.7\n")
            (curves / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.8\n2\t0.7\n")
            write(project / f"reports/eval/{name}/{seed}/predictions.json", prediction_rows(names, right, confidence))
            Image.new("RGB", (600, 150), (90, 90, 200)).save(project / f"reports/eval/{name}/{seed}/gradcam_shared.png")
    for dataset, names in CLASSES.items():
        test_counts = {name: int(np.sum(np.arange(TEST_IMAGES) % len(names) == i)) for i, name in enumerate(names)}
        train_counts = {name: 10 + i for i, name in enumerate(names)}  # the last class is the most common
        write(project / f"reports/data/{dataset}/summary.json", {
            "train": {"total": sum(train_counts.values()), "per_class": train_counts},
            "test": {"total": 20, "per_class": test_counts},
            **({"external": {"course": {"total": 20}}} if dataset == "digits" else {})})
        write(project / f"reports/data/{dataset}/details.json", {"classes": names, "train": {"image_shape": [16, 16, 3]}})
    course = {"course": {"file": "https://example.invalid/course.h5", "classes": {"0": 0, "1": 1, "2": 2}}}
    save_params(project, {
        "split_seed": 5, "seeds": SEEDS,
        "datasets": {dataset: dataset_block({"url": "unused"}, {n: n for n in names},
                                            external=course if dataset == "digits" else None)
                     for dataset, names in CLASSES.items()},
        "train": dict(TRAIN_DEFAULTS), "models": models})
    return project


def report_line(report, start):
    return next(line for line in report.splitlines() if line.startswith(start))


def test_best_model_line_over_seeds_with_a_paired_sign_test(reports):
    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    line = report_line(report, "Best on test accuracy: **")
    # digits_big 19 and 17 of 20 right: mean 0.900; seeds 0.85 and 0.95
    assert line.startswith("Best on test accuracy: **digits_big**, 0.900 over 2 seeds [")
    assert "(seeds 0.850 to 0.950)." in line
    # Shares right per image, big against small: images 10-11 1 against 1/2, 12-16 1 against 0, 17-18 1/2
    # against 0: 9 images to none, p = 2 / 2**9. Against transfer (14, 15): 5 to none, p = 2 / 2**5.
    assert ("Against digits_small (0.550): the lead holds in every seed (its worst seed beats the other's best); "
            "9 test images it got right more often over the seeds, 0 the other (paired sign test p = 0.00391, "
            "significant at 5%).") in line
    assert ("Against digits_transfer (0.725): the lead holds in every seed (its worst seed beats the other's best); "
            "5 test images it got right more often over the seeds, 0 the other (paired sign test p = 0.0625, "
            "not significant at 5%).") in line
    assert "It cannot be told apart from digits_transfer on this test set" in line
    # On course: transfer (17, 16) 0.825 leads big (14, 17) 0.775, whose best seed (0.85) beats transfer's worst
    course = report_line(report, "Best on course accuracy: **")
    assert course.startswith("Best on course accuracy: **digits_transfer**, 0.825 over 2 seeds")
    assert ("Against digits_big (0.775): the seeds overlap (its worst 0.800, the other's best 0.850); 2 course "
            "images it got right more often over the seeds, 0 the other (paired sign test p = 0.5, not significant "
            "at 5%).") in course
    assert "Best on course" not in report.split("## faces")[1], "faces has no external set"
    faces = report_line(report, "Best on test accuracy: **faces_cnn**")
    assert "Against" not in faces and "cannot be told apart" not in faces


def test_a_lead_that_holds_in_every_seed_and_is_significant_is_called_so(reports):
    params = load_params()
    del params["models"]["digits_transfer"]
    save_params(reports, params)

    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    line = report_line(report, "Best on test accuracy: **digits_")
    assert line.endswith("Its lead over every other model holds in every seed and is significant at 5%.")
    course = report_line(report, "Best on course accuracy")
    # big (14, 17) against small (10, 8) on course: images 8-9 1/2 or 1 against 1/2, 10-13 1 against 0, 14-16 1/2
    # against 0: 9 images to none
    assert "9 course images it got right more often over the seeds, 0 the other (paired sign test p = 0.00391" in course
    assert course.endswith("Its lead over every other model holds in every seed and is significant at 5%.")


def test_summaries_per_model_and_per_dataset_ensemble(reports):
    compare.main([])

    summary = json.loads((reports / "reports/summary/models/digits_big.json").read_text())
    assert summary["seeds"] == len(SEEDS)
    accuracy = summary["test"]["accuracy"]
    assert accuracy["per_seed"] == {"5": 0.95, "6": 0.85}
    assert accuracy["mean"] == pytest.approx(0.9) and accuracy["sd"] == pytest.approx(0.1 / np.sqrt(2))
    assert (accuracy["min"], accuracy["max"]) == (0.85, 0.95)
    assert accuracy["ci95"]["low"] < 0.9 < accuracy["ci95"]["high"]
    # the surer first seed decides where the two differ: the seed ensemble gets the first seed's 19 right
    assert summary["test"]["seed_ensemble"]["accuracy"] == 0.95
    assert summary["course"]["accuracy"]["per_seed"] == {"5": 0.7, "6": 0.85}
    assert sorted(p.name for p in (reports / "reports/summary/datasets").iterdir()) == ["digits.json"], \
        "faces has one model: its seed ensemble is the dataset's"


def test_the_dataset_ensemble_averages_each_models_seeds_then_the_models(reports):
    compare.main([])

    names = CLASSES["digits"]
    per_model = []
    for model in ("digits_small", "digits_big", "digits_transfer"):
        seeds = [fixture_predictions(3, right, seed_confidence(index))[2]
                 for index, right in enumerate(FIXTURE_MODELS[model][1])]
        per_model.append(np.mean(seeds, axis=0))
    actual = fixture_predictions(3, 1, 0.9)[0]
    expected = float(np.mean(np.mean(per_model, axis=0).argmax(axis=1) == actual))
    ensemble = json.loads((reports / "reports/summary/datasets/digits.json").read_text())
    assert ensemble["models"] == 3
    assert ensemble["test"]["accuracy"] == pytest.approx(expected)
    table = pd.read_csv(reports / "reports/comparison.csv").set_index("model")
    assert table.loc["all 3 digits models averaged", "test accuracy"] == pytest.approx(expected)
    assert table.loc["all 3 digits models averaged", "kind"] == "dataset ensemble"
    assert len(names) == 3

    report = (reports / "reports/comparison.md").read_text()
    line = report_line(report, "Ensembles on test accuracy: ")
    assert "digits_big 0.950 against its seeds' mean 0.900 (beats the mean of its seeds, not every seed)" in line
    assert f"All models averaged: {expected:.3f} [" in line
    faces = report.split("## faces")[1]
    assert "faces_cnn 0.650 against its seeds' mean 0.650 (does not beat the mean of its seeds)." in faces
    assert "All models averaged" not in faces and "faces models averaged" not in faces


def test_report_table_and_csv(reports):
    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    digits = report.split("## faces")[0]
    rows = [line for line in digits.splitlines() if line.startswith("| digits_")]
    assert len(rows) == 6, "three models and their three seed ensembles"
    header = next(line for line in digits.splitlines() if line.startswith("| model"))
    columns = [cell.strip() for cell in header.split("|")[1:-1]]
    big = dict(zip(columns, (cell.strip() for cell in rows[1].split("|")[1:-1])))
    assert big["test accuracy"].startswith("0.900 [")
    assert big["test accuracy: seeds' sd (range)"] == "0.071 (0.850-0.950)"
    assert big["course accuracy"].startswith("0.775 [")
    assert big["epochs run"] == "3.5" and big["inference images/s"] == "100", "means over seeds"
    assert "ROC AUC" in report.split("## faces")[1] and "ROC AUC" not in digits
    assert "`digits_transfer` was trained from random initial weights" in report
    assert "split seed 5, training seeds 5, 6" in report and "33 training images" in report
    backend = load_params()["train"]["backend"]
    assert f"- `digits_big`: builder `signs_cnn`; Keras on {backend}; adam at" in report, "each model's backend"
    assert "External test sets, photos from elsewhere, never used to train or to choose settings: `course`, 20 " \
           "images." in report

    table = pd.read_csv(reports / "reports/comparison.csv").set_index("model")
    assert list(table[table["kind"] == "model"].index) == list(FIXTURE_MODELS)
    assert table.loc["digits_big", "test accuracy"] == pytest.approx(0.9)
    assert table.loc["digits_big", "test accuracy max"] == 0.95
    assert table.loc["digits_big: its 2 seeds averaged", "kind"] == "seed ensemble"
    assert table.loc["faces_cnn", "size (MB)"] == 3.0


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
    assert "faces: Best on test balanced accuracy: faces_cnn" in caplog.text

    report = (reports / "reports/comparison.md").read_text()
    digits, faces = report.split("## faces")
    # always "2", the most common training class: 6 of the 20 test images (indices 2, 5, ..., 17)
    baseline = next(line for line in digits.splitlines() if line.startswith("| baseline: always 2 "))
    cells = [cell.strip() for cell in baseline.split("|")[1:-1]]
    assert cells[1] == "0.300 [0.15, 0.52]", "accuracy 6/20 with its Wilson interval"
    assert "nan" not in cells and "" in cells, "a baseline has no external figures, spread, size or speed: empty cells"
    assert "Best on test balanced accuracy: **faces_cnn**" in faces and "| baseline: always yes " in faces
    assert "Flag:" not in report, "every model beats its baseline"


def test_a_model_that_does_not_beat_the_baseline_is_flagged():
    rows = pd.DataFrame({"model": ["good", "tied", "bad"], "test balanced accuracy": [0.7, 0.5, 0.4]})
    flags = compare.baseline_flags(rows, {"test balanced accuracy": 0.5}, "balanced_accuracy")
    assert flags == ["Flag: `tied` does not beat the majority-class baseline on test balanced accuracy (0.500 over "
                     "its seeds against 0.500).", "Flag: `bad` does not beat the majority-class baseline on test "
                     "balanced accuracy (0.400 over its seeds against 0.500)."]


def test_a_model_no_better_than_chance_on_an_external_set_is_flagged():
    rows = pd.DataFrame({"model": ["sees", "guesses"], "course balanced accuracy": [0.62, 0.5]})
    flags = compare.chance_flags(rows, {"course": {}}, num_classes=2)
    assert flags == ["Flag: `guesses` does no better than chance on `course`: balanced accuracy 0.500 over its "
                     "seeds, what answering one class for every image gets (0.500)."]
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
    assert "Faces found: train 90 of 100; course 149 of 150." in lines[0]
    table = [line for line in "\n".join(lines).splitlines() if line.startswith("| mobilenet")]
    assert [cell.strip() for cell in table[0].split("|")[1:-1]] == ["mobilenet", "course", "0.900", "0.600", "0.850",
                                                                    "0.550"]
    assert compare.face_step_lines(rows, {"external": {"course": {"total": 150}}}, None) == []


def test_a_summary_of_a_model_no_longer_in_params_is_removed(reports):
    stale = reports / "reports/summary/models/gone.json"
    write(stale, {"test": {}})
    compare.main([])
    assert not stale.exists() and (reports / "reports/summary/models/faces_cnn.json").is_file()


def test_missing_report_is_a_clear_error(reports):
    (reports / "reports/metrics/faces_cnn/6.json").unlink()
    with pytest.raises(SystemExit, match="compare: error: reports/metrics/faces_cnn/6.json is missing"):
        compare.main([])


def test_predictions_without_probabilities_are_a_clear_error(reports):
    path = reports / "reports/eval/faces_cnn/5/predictions.json"
    path.write_text(json.dumps([{"actual": "no", "predicted": "no"}]))
    with pytest.raises(SystemExit, match="holds no probabilities: it was written by an older evaluate"):
        compare.main([])
