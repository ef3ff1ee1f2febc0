"""compare stage: put every model's figures side by side in one report.

Reads each model's test metrics, training report, curves and predictions, and the data summaries,
and writes reports/comparison.md (a table per dataset, the best model and its margin, figures),
reports/comparison.csv (the same numbers, one row per model) and the figures in reports/figures/.
Nothing in the report is written by hand: every number comes from those files.

    python -m stages.compare
"""

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from stages.cli import exit_on, parse_stage_arguments
from stages.config import ParamsError, load_params, model_spec
from stages.files import staged_path
from stages.metrics import confusion_matrix
from stages.plots import plt, save_figure

log = logging.getLogger("compare")

REPORT_PATH = Path("reports/comparison.md")
TABLE_PATH = Path("reports/comparison.csv")
FIGURES_DIR = Path("reports/figures")

# Column name in the report: where the value comes from ((file, dotted key)).
COLUMNS = {
    "test accuracy": ("metrics", "accuracy"),
    "balanced accuracy": ("metrics", "balanced_accuracy"),
    "macro F1": ("metrics", "macro.f1"),
    "ROC AUC": ("metrics", "roc_auc"),
    "test loss": ("metrics", "loss"),
    "best val accuracy": ("train", "best_val_accuracy"),
    "best epoch": ("train", "best_epoch"),
    "epochs run": ("train", "epochs_run"),
    "parameters": ("metrics", "size.parameter_count"),
    "size (MB)": ("metrics", "size.file_bytes"),
    "train time (s)": ("train", "wall_time_seconds"),
    "train images/s": ("train", "images_per_second"),
    "inference images/s": ("metrics", "inference.images_per_second"),
    "1-image latency (ms)": ("metrics", "inference.single_image_latency_ms"),
    "device": ("train", "device"),
    "weights": ("train", "weights"),
}


class CompareError(RuntimeError):
    """A model whose reports are missing."""


def read_json(path):
    if not Path(path).is_file():
        raise CompareError(f"{path} is missing: run `dvc repro` to build every model's reports first")
    return json.loads(Path(path).read_text())


def dotted(data, key):
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def collect(specs):
    """One row per model: the COLUMNS values, plus dataset and builder."""
    rows = []
    for spec in specs:
        sources = {"metrics": read_json(spec.metrics_path), "train": read_json(spec.report_path)}
        row = {"model": spec.name, "dataset": spec.dataset.name, "builder": spec.builder}
        for column, (source, key) in COLUMNS.items():
            row[column] = dotted(sources[source], key)
        row["size (MB)"] = round(row["size (MB)"] / 2**20, 2)
        rows.append(row)
    return pd.DataFrame(rows)


def best_model_line(table):
    """'best: X, test accuracy a (margin m over Y)' for one dataset's rows."""
    ranked = table.sort_values(["test accuracy", "macro F1"], ascending=False)
    best = ranked.iloc[0]
    line = f"Best: **{best['model']}**, test accuracy {best['test accuracy']:.3f}, macro F1 {best['macro F1']:.3f}"
    if len(ranked) > 1:
        runner_up = ranked.iloc[1]
        margin = best["test accuracy"] - runner_up["test accuracy"]
        if margin > 0:
            line += f"; {margin * 100:.1f} points of accuracy ahead of {runner_up['model']}"
        else:
            f1_margin = best["macro F1"] - runner_up["macro F1"]
            line += (f"; level on accuracy with {runner_up['model']}, "
                     f"{f1_margin * 100:.1f} points ahead on macro F1")
    return line + "."


# How the Markdown table shows each column; the CSV keeps the raw values.
DISPLAY_FORMATS = {
    "parameters": "{:,.0f}", "size (MB)": "{:.1f}", "train time (s)": "{:.0f}", "train images/s": "{:.0f}",
    "inference images/s": "{:.0f}", "1-image latency (ms)": "{:.1f}", "best epoch": "{:.0f}",
    "epochs run": "{:.0f}",
}
# Columns the Markdown table leaves to the CSV, to stay readable on a code host.
CSV_ONLY = ["dataset", "builder", "balanced accuracy", "device"]


def markdown_table(table):
    """The dataset's rows as a Markdown table, leaving out columns with no values (ROC AUC for multiclass)."""
    shown = table.drop(columns=CSV_ONLY).dropna(axis=1, how="all")
    for column in shown.columns:
        if column in DISPLAY_FORMATS:
            shown[column] = shown[column].map(DISPLAY_FORMATS[column].format)
        elif shown[column].dtype.kind == "f":
            shown[column] = shown[column].map("{:.3f}".format)
    alignment = ["left"] + ["right"] * (len(shown.columns) - 1)
    return shown.to_markdown(index=False, colalign=alignment, disable_numparse=True)


def plot_scores(table, path):
    """Test accuracy and macro F1 per model, grouped by dataset."""
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(table)), 4))
    positions = np.arange(len(table))
    axis.bar(positions - 0.2, table["test accuracy"], width=0.4, label="test accuracy")
    axis.bar(positions + 0.2, table["macro F1"], width=0.4, label="macro F1")
    for position, accuracy in zip(positions, table["test accuracy"]):
        axis.text(position - 0.2, accuracy + 0.01, f"{accuracy:.2f}", ha="center", fontsize=8)
    axis.set_xticks(positions, [f"{m}\n({d})" for m, d in zip(table["model"], table["dataset"])], fontsize=8,
                    rotation=20, ha="right")
    axis.set_ylim(0, 1.2)
    axis.set_ylabel("score on the test split")
    axis.legend(loc="upper right", ncol=2)
    axis.set_title("Test accuracy and macro F1 per model")
    save_figure(figure, path)


def read_curve(spec, split, metric):
    path = spec.live_dir / "plots" / "metrics" / split / f"{metric}.tsv"
    return pd.read_csv(path, sep="\t") if path.is_file() else None


def plot_curves(dataset, specs, path):
    """Validation accuracy and loss per epoch of every model of one dataset, on shared axes."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for spec in specs:
        for axis, metric in zip(axes, ("accuracy", "loss")):
            curve = read_curve(spec, "eval", metric)
            if curve is not None:
                axis.plot(curve["step"] + 1, curve[metric], label=spec.name)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"validation {metric}")
        axis.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{dataset}: training curves (validation split)")
    save_figure(figure, path)


def plot_confusions(dataset, specs, path):
    """Each model's test confusion matrix, side by side."""
    figure, axes = plt.subplots(1, len(specs), figsize=(3.6 * len(specs), 4), squeeze=False, layout="constrained")
    for axis, spec in zip(axes[0], specs):
        names = spec.dataset.class_names
        rows = read_json(spec.eval_dir / "predictions.json")
        index = {name: i for i, name in enumerate(names)}
        counts = confusion_matrix([index[r["actual"]] for r in rows], [index[r["predicted"]] for r in rows],
                                  len(names))
        axis.imshow(counts, cmap="Blues")
        for (i, j), count in np.ndenumerate(counts):
            axis.text(j, i, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > counts.max() / 2 else "black")
        axis.set_xticks(range(len(names)), names, fontsize=7, rotation=45 if len(names) == 2 else 0)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_ylabel("actual")
        axis.set_title(spec.name, fontsize=9)
    figure.suptitle(f"{dataset}: confusion matrices on the test split")
    save_figure(figure, path)


def current_commit():
    """The git commit the workspace is on, marked when it has uncommitted changes; None outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit.stdout.strip() + (" with uncommitted changes" if status.stdout.strip() else "")


def settings_line(spec):
    """The parameters that shape a model, as the report states them."""
    train = spec.train
    parts = [f"builder `{spec.builder}`", f"{train['optimizer']} at {train['learning_rate']:g}",
             f"batch {train['batch_size']}", f"up to {train['epochs']} epochs"]
    if train.get("fine_tune"):
        fine_tune = train["fine_tune"]
        parts.append(f"then {fine_tune['epochs']} fine-tuning epochs of the top {fine_tune['layers']} layers "
                     f"at {fine_tune['learning_rate']:g}")
    if spec.network:
        parts.append("network " + ", ".join(f"{key}: {value}" for key, value in spec.network.items()))
    return f"- `{spec.name}`: " + "; ".join(parts)


def write_report(params, specs, table):
    """reports/comparison.md, .csv and the figures."""
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    plot_scores(table, FIGURES_DIR / "scores.png")
    lines = ["# Model comparison", "",
             "Generated by `stages/compare.py` from the files under `reports/` "
             f"(commit {current_commit() or 'unknown'}; seed {params['seed']}; trained on "
             f"{', '.join(sorted(set(table['device'])))}). "
             "Test figures are on each dataset's held-out test split, never seen in training; "
             "validation figures on the split carved from the training set. Balanced accuracy and the "
             "builder of each model are in `comparison.csv`.", "",
             "![Test accuracy and macro F1 per model](figures/scores.png)", ""]
    for dataset in dict.fromkeys(spec.dataset.name for spec in specs):
        dataset_specs = [spec for spec in specs if spec.dataset.name == dataset]
        rows = table[table["dataset"] == dataset]
        summary = read_json(dataset_specs[0].dataset.reports_dir / "summary.json")
        plot_curves(dataset, dataset_specs, FIGURES_DIR / f"curves_{dataset}.png")
        plot_confusions(dataset, dataset_specs, FIGURES_DIR / f"confusion_{dataset}.png")
        lines += [f"## {dataset}", "",
                  f"{len(summary['classes'])} classes ({', '.join(summary['classes'])}); "
                  f"{summary['train']['total']} training images (of which each model holds out a validation "
                  f"share) and {summary['test']['total']} test images of "
                  f"{'x'.join(map(str, summary['train']['image_shape']))}.", "",
                  best_model_line(rows), "", markdown_table(rows), ""]
        lines += [note for note in (untrained_note(spec) for spec in dataset_specs) if note]
        lines += ["", "Settings:", ""] + [settings_line(spec) for spec in dataset_specs] + [""]
        lines += [f"![{dataset} training curves](figures/curves_{dataset}.png)", "",
                  f"![{dataset} confusion matrices](figures/confusion_{dataset}.png)", ""]
    with staged_path(REPORT_PATH) as temporary:
        temporary.write_text("\n".join(lines))
    with staged_path(TABLE_PATH) as temporary:
        table.to_csv(temporary, index=False)


def untrained_note(spec):
    """Say so when a transfer model did not start from pretrained weights."""
    weights = str(spec.network.get("weights", "imagenet"))
    if spec.builder == "transfer" and weights.lower() in ("none", "null"):
        return (f"Note: `{spec.name}` was trained from random initial weights (`weights: none`), "
                "not from pretrained ImageNet weights.")
    return None


def main(argv=None):
    parse_stage_arguments(__doc__, argv)
    with exit_on("compare", CompareError, ParamsError):
        params = load_params()
        specs = [model_spec(params, name) for name in params.get("models") or {}]
        if not specs:
            raise CompareError("params.yaml defines no models to compare")
        table = collect(specs)
        write_report(params, specs, table)
    for dataset, rows in table.groupby("dataset", sort=False):
        log.info("%s: %s", dataset, best_model_line(rows).replace("**", ""))
    log.info("wrote %s, %s and %s/", REPORT_PATH, TABLE_PATH, FIGURES_DIR)


if __name__ == "__main__":
    main()
