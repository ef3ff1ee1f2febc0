"""The compare stage on fixture reports: table, best-model line, CSV, figures."""

import json

import pandas as pd
import pytest
from conftest import TRAIN_DEFAULTS, dataset_block, save_params
from PIL import Image

from stages import compare

# model: (dataset, test accuracy, macro F1, weights)
FIXTURE_MODELS = {
    "digits_small": ("digits", 0.75, 0.70, None),
    "digits_big": ("digits", 0.90, 0.88, None),
    "digits_transfer": ("digits", 0.80, 0.79, "none"),
    "faces_cnn": ("faces", 0.65, 0.64, None),
}
CLASSES = {"digits": ["0", "1", "2"], "faces": ["no", "yes"]}


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


@pytest.fixture
def reports(project):
    """params.yaml and every report compare reads, for four models over two datasets."""
    models = {}
    for name, (dataset, accuracy, f1, weights) in FIXTURE_MODELS.items():
        models[name] = ({"dataset": dataset, "builder": "transfer",
                         "network": {"backbone": "MobileNet", "weights": weights}}
                        if weights else {"dataset": dataset, "builder": "signs_cnn"})
        metrics = {"accuracy": accuracy, "balanced_accuracy": accuracy, "macro": {"f1": f1}, "loss": 1 - accuracy,
                   "inference": {"images_per_second": 100.0, "single_image_latency_ms": 5.0},
                   "size": {"parameter_count": 1000, "file_bytes": 3 * 2**20}}
        if dataset == "faces":
            metrics["roc_auc"] = 0.7
        write(project / f"reports/metrics/{name}.json", metrics)
        write(project / f"reports/train/{name}.json",
              {"best_val_accuracy": accuracy, "best_epoch": 2, "epochs_run": 3, "wall_time_seconds": 12.5,
               "images_per_second": 40.0, "device": "CPU", "weights": weights or "none"})
        curves = project / f"reports/train/{name}/plots/metrics/eval"
        curves.mkdir(parents=True)
        (curves / "accuracy.tsv").write_text("step\taccuracy\n0\t0.5\n1\t0.6\n2\t0.7\n")
        (curves / "loss.tsv").write_text("step\tloss\n0\t1.0\n1\t0.8\n2\t0.7\n")
        names = CLASSES[dataset]
        write(project / f"reports/eval/{name}/predictions.json",
              [{"actual": a, "predicted": p} for a in names for p in names])
    for dataset, names in CLASSES.items():
        write(project / f"reports/data/{dataset}/summary.json",
              {"classes": names, "train": {"total": 30, "image_shape": [16, 16, 3]}, "test": {"total": 10}})
    save_params(project, {
        "seed": 5,
        "datasets": {dataset: dataset_block({"url": "unused"}, {n: n for n in names}) for dataset, names in CLASSES.items()},
        "train": dict(TRAIN_DEFAULTS), "models": models})
    return project


def test_report_table_best_model_and_csv(reports):
    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    assert "Best: **digits_big**, test accuracy 0.900, macro F1 0.880; 10.0 points of accuracy ahead of digits_transfer." in report
    assert "Best: **faces_cnn**, test accuracy 0.650" in report
    table_lines = [line for line in report.splitlines() if line.startswith("| digits_")]
    assert len(table_lines) == 3
    assert "ROC AUC" in report.split("## faces")[1] and "ROC AUC" not in report.split("## faces")[0]
    assert "`digits_transfer` was trained from random initial weights" in report
    assert "seed 5" in report and "30 training images" in report

    table = pd.read_csv(reports / "reports/comparison.csv")
    assert list(table["model"]) == list(FIXTURE_MODELS)
    assert table.set_index("model").loc["digits_big", "test accuracy"] == 0.9
    assert table.set_index("model").loc["faces_cnn", "size (MB)"] == 3.0


def test_every_figure_is_a_png_linked_from_the_report(reports):
    compare.main([])

    report = (reports / "reports/comparison.md").read_text()
    figures = sorted(p.name for p in (reports / "reports/figures").iterdir())
    assert figures == ["confusion_digits.png", "confusion_faces.png", "curves_digits.png", "curves_faces.png",
                       "scores.png"]
    for name in figures:
        with Image.open(reports / "reports/figures" / name) as picture:
            assert picture.format == "PNG" and picture.width > 300
        assert f"(figures/{name})" in report


def test_a_tie_on_accuracy_is_broken_by_macro_f1():
    table = pd.DataFrame({"model": ["a", "b"], "test accuracy": [0.9, 0.9], "macro F1": [0.85, 0.88]})
    assert compare.best_model_line(table) == ("Best: **b**, test accuracy 0.900, macro F1 0.880; "
                                              "level on accuracy with a, 3.0 points ahead on macro F1.")


def test_missing_report_is_a_clear_error(reports):
    (reports / "reports/metrics/faces_cnn.json").unlink()
    with pytest.raises(SystemExit, match="compare: error: reports/metrics/faces_cnn.json is missing"):
        compare.main([])
