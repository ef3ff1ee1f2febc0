"""compare stage: put every model's figures side by side in one report.

Reads each model's test metrics, training report, curves and predictions, and the data summaries,
and writes reports/comparison.md (a table per dataset, the best model and its margin, figures),
reports/comparison.csv (the same numbers, one row per model) and the figures in reports/figures/.
Nothing in the report is written by hand: every number comes from those files.

    python -m stages.compare
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.cli import exit_on, parse_stage_arguments
from stages.config import ParamsError, load_params, model_spec
from stages.files import staged_path
from stages.metrics import classification_metrics, confusion_matrix, mcnemar_test
from stages.models import weights_origin
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
    "inference images/s": ("metrics", "inference.images_per_second"),
    "1-image latency (ms)": ("metrics", "inference.single_image_latency_ms"),
}
# External sets scored without the face step: their columns' middle word (comparison.csv; face_step_lines).
WHOLE_FRAME = "whole-frame"
# Columns shown with their 95 % interval: column -> the interval's key under `ci95` in the metrics.
INTERVALS = {"test accuracy": "accuracy", "balanced accuracy": "balanced_accuracy", "macro F1": "macro_f1"}


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
        row.update(interval_cells(sources["metrics"].get("ci95", {})))
        for name, metrics in sources["metrics"].get("external", {}).items():  # test sets from elsewhere
            row[f"{name} accuracy"] = metrics["accuracy"]
            row[f"{name} accuracy low"], row[f"{name} accuracy high"] = (metrics["ci95"]["accuracy"][end]
                                                                         for end in ("low", "high"))
            row[f"{name} balanced accuracy"] = metrics["balanced_accuracy"]
            row[f"{name} balanced accuracy low"], row[f"{name} balanced accuracy high"] = (
                metrics["ci95"]["balanced_accuracy"][end] for end in ("low", "high"))
        for name, metrics in sources["metrics"].get("external_whole", {}).items():  # the same, without a face step
            row[f"{name} {WHOLE_FRAME} accuracy"] = metrics["accuracy"]
            row[f"{name} {WHOLE_FRAME} balanced accuracy"] = metrics["balanced_accuracy"]
        row["size (MB)"] = round(row["size (MB)"] / 2**20, 2)
        row["weights"] = weights_origin(spec.builder, spec.network)
        rows.append(row)
    return pd.DataFrame(rows)


def baseline_row(dataset, summary, class_names, seed):
    """The figures of always answering the training split's most common class, on the test split's counts."""
    train, test = summary["train"]["per_class"], summary["test"]["per_class"]
    majority = max(class_names, key=lambda name: train[name])
    actual = np.repeat(np.arange(len(class_names)), [test[name] for name in class_names])
    metrics = classification_metrics(actual, np.full(len(actual), class_names.index(majority)), class_names, seed=seed)
    return {"model": f"baseline: always {majority}", "dataset": dataset, "builder": "majority class",
            "test accuracy": metrics["accuracy"], "balanced accuracy": metrics["balanced_accuracy"],
            "macro F1": metrics["macro"]["f1"], **interval_cells(metrics["ci95"])}


def interval_cells(ci95):
    """{`<column> low`, `<column> high`} for each INTERVALS column, from a metrics file's `ci95` block."""
    cells = {}
    for column, key in INTERVALS.items():
        interval = ci95.get(key, {})
        cells[f"{column} low"], cells[f"{column} high"] = interval.get("low"), interval.get("high")
    return cells


def chance_flags(rows, external_sets, num_classes):
    """A line per model and external set where the model does no better than answering one class for
    every image: balanced accuracy at or below 1 / classes."""
    chance = 1 / num_classes
    return [f"Flag: `{row['model']}` does no better than chance on `{name}`: balanced accuracy "
            f"{row[f'{name} balanced accuracy']:.3f}, what answering one class for every image gets "
            f"({chance:.3f})."
            for _, row in rows.iterrows() for name in external_sets
            if pd.notna(row.get(f"{name} balanced accuracy")) and row[f"{name} balanced accuracy"] <= chance + 1e-9]


def baseline_flags(rows, baseline, headline):
    """A line per model that does not beat the majority-class baseline on the headline metric."""
    return [f"Flag: `{row['model']}` does not beat the majority-class baseline on {headline} "
            f"({row[headline]:.3f} against {baseline[headline]:.3f})."
            for _, row in rows.iterrows() if not row[headline] > baseline[headline]]


def correct_answers(spec, test_set=None):
    """Per image of the test split (test_set None) or of an external set, whether the model got it right,
    in the set's order (from predictions.json or predictions_external.json)."""
    if test_set is None:
        rows = read_json(spec.eval_dir / "predictions.json")
    else:
        rows = read_json(spec.eval_dir / "predictions_external.json").get(test_set)
        if rows is None:
            raise CompareError(f"{spec.eval_dir / 'predictions_external.json'} has no `{test_set}`: "
                               f"run `dvc repro evaluate@{spec.name}`")
    return np.array([row["actual"] == row["predicted"] for row in rows])


# A dataset's `headline` metric (a `ci95` key): the table column it names.
HEADLINE_COLUMNS = {key: column for column, key in INTERVALS.items()}


def best_model_line(table, specs, test_set=None, significance=0.05):
    """The best model on the test split (test_set None) or an external set, by the dataset's headline metric,
    and whether an exact McNemar test on the same images says it beats each other model."""
    headline = HEADLINE_COLUMNS[specs[0].dataset.headline]
    column = headline if test_set is None else f"{test_set} {headline.removeprefix('test ')}"
    images = "test image" if test_set is None else f"{test_set} image"
    ranked = table.sort_values([column, headline], ascending=False)
    best = ranked.iloc[0]
    line = (f"Best on {column}: **{best['model']}**, {best[column]:.3f} "
            f"[{best[f'{column} low']:.2f}, {best[f'{column} high']:.2f}].")
    by_name = {spec.name: spec for spec in specs}
    best_correct = correct_answers(by_name[best["model"]], test_set)
    tied = []
    for other in ranked["model"].iloc[1:]:
        only_best, only_other, p_value = mcnemar_test(best_correct, correct_answers(by_name[other], test_set))
        verdict = "significant" if p_value < significance else "not significant"
        line += (f" Against {other}: {only_best} {images}{'' if only_best == 1 else 's'} only {best['model']} got "
                 f"right, {only_other} only {other} (exact McNemar p = {p_value:.3g}, {verdict} at "
                 f"{significance:.0%}).")
        if p_value >= significance:
            tied.append(other)
    if tied:
        names = [best["model"], *tied]
        line += f" {', '.join(names[:-1])} and {names[-1]} cannot be told apart on this test set."
    elif len(ranked) > 1:
        line += f" Its lead over every other model is significant at {significance:.0%}."
    return line


# How the Markdown table shows each column; the CSV keeps the raw values.
DISPLAY_FORMATS = {
    "parameters": "{:,.0f}", "size (MB)": "{:.1f}", "inference images/s": "{:.0f}", "1-image latency (ms)": "{:.1f}", "best epoch": "{:.0f}",
    "epochs run": "{:.0f}",
}
# Columns the Markdown table leaves to the CSV, to stay readable on a code host (and every interval's ends).
CSV_ONLY = ["dataset", "builder"]


def interval_columns(table):
    """The columns that have a 95 % interval beside them (`<column> low`, `<column> high`)."""
    return [column for column in table.columns if f"{column} low" in table.columns]


def with_interval(table, column):
    """'0.952 [0.90, 0.98]': a figure and its 95 % interval."""
    return ["" if pd.isna(value) else f"{value:.3f} [{low:.2f}, {high:.2f}]" if pd.notna(low) else f"{value:.3f}"
            for value, low, high in zip(table[column], table[f"{column} low"], table[f"{column} high"])]


def formatter(pattern):
    """pattern.format for a value, and an empty cell for a missing one (the baseline row has no size)."""
    return lambda value: "" if pd.isna(value) else pattern.format(value)


def markdown_table(table):
    """The dataset's rows as a Markdown table, leaving out columns with no values (ROC AUC for multiclass)."""
    intervals = interval_columns(table)
    ends = [f"{column} {end}" for column in intervals for end in ("low", "high")]
    external_balanced = [column for column in table.columns if WHOLE_FRAME in column.split() or
                         (column.endswith(" balanced accuracy") and column != "balanced accuracy")]
    shown = table.drop(columns=CSV_ONLY + ends + external_balanced).dropna(axis=1, how="all")
    for column in intervals:
        if column in shown.columns:
            shown[column] = with_interval(table, column)
    for column in shown.columns:
        if column in DISPLAY_FORMATS:
            shown[column] = shown[column].map(formatter(DISPLAY_FORMATS[column]))
        elif shown[column].dtype.kind == "f" and column not in intervals:
            shown[column] = shown[column].map(formatter("{:.3f}"))
    alignment = ["left"] + ["right"] * (len(shown.columns) - 1)
    shown = shown.astype(object).where(shown.notna(), "")  # an empty cell, not "nan", where a row has no value
    return shown.to_markdown(index=False, colalign=alignment, disable_numparse=True)


def plot_scores(table, path):
    """Test accuracy and macro F1 per model, grouped by dataset."""
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(table)), 4))
    positions = np.arange(len(table))
    for offset, column in ((-0.2, "test accuracy"), (0.2, "macro F1")):
        errors = [table[column] - table[f"{column} low"], table[f"{column} high"] - table[column]]
        axis.bar(positions + offset, table[column], width=0.4, label=column, yerr=errors, capsize=3)
    for position, accuracy in zip(positions, table["test accuracy"]):
        axis.text(position - 0.2, 0.02, f"{accuracy:.2f}", ha="center", fontsize=8, color="white")
    axis.set_xticks(positions, [f"{m}\n({d})" for m, d in zip(table["model"], table["dataset"])], fontsize=8,
                    rotation=20, ha="right")
    axis.set_ylim(0, 1.2)
    axis.set_ylabel("score on the test split")
    axis.legend(loc="upper right", ncol=2)
    axis.set_title("Test accuracy and macro F1 per model, with 95 % intervals")
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


def plot_roc_and_precision_recall(dataset, specs, path):
    """Every model's ROC and precision-recall curves on the test split (micro-averaged for multiclass)."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for spec in specs:
        roc = read_json(spec.eval_dir / "roc.json")["roc"]
        precision_recall = read_json(spec.eval_dir / "precision_recall.json")["precision_recall"]
        axes[0].plot([p["fpr"] for p in roc], [p["tpr"] for p in roc], label=spec.name)
        axes[1].plot([p["recall"] for p in precision_recall], [p["precision"] for p in precision_recall],
                     label=spec.name)
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for axis, (x_label, y_label) in zip(axes, (("false positive rate", "true positive rate"),
                                               ("recall", "precision"))):
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower left")
    kind = "positive class" if specs[0].dataset.num_classes == 2 else "micro-averaged over classes"
    figure.suptitle(f"{dataset}: ROC and precision-recall on the test split ({kind})")
    save_figure(figure, path)


def plot_gradcam_side_by_side(dataset, specs, path):
    """Each model's Grad-CAM strip of the dataset's shared test images, one model per row."""
    paths = [spec.eval_dir / "gradcam_shared.png" for spec in specs]
    for strip_path in paths:
        if not strip_path.is_file():
            raise CompareError(f"{strip_path} is missing: run `dvc repro` to build every model's reports first")
    strips = [plt.imread(strip_path) for strip_path in paths]
    width = max(strip.shape[1] for strip in strips) / 100
    heights = [strip.shape[0] / 100 for strip in strips]
    figure, axes = plt.subplots(len(strips), 1, figsize=(width, sum(heights) + 0.6), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    for axis, strip in zip(axes[:, 0], strips):
        axis.imshow(strip)
        axis.axis("off")
    figure.suptitle(f"{dataset}: where each model looked, on the same test images (Grad-CAM)")
    save_figure(figure, path)


def external_line(summary):
    """The dataset's external test sets, in a sentence (none: nothing)."""
    sets = summary.get("external") or {}
    if not sets:
        return []
    listed = "; ".join(f"`{name}`, {counts['total']} images" for name, counts in sets.items())
    return [f"External test sets, photos from elsewhere, never used to train or to choose settings: {listed}. "
            "Their accuracy is in the `<name> accuracy` column, their balanced accuracy in `comparison.csv`.", ""]


def face_step_lines(rows, summary, crop):
    """Where the dataset has a face step (crop: its settings): the faces found per set, and each
    external set's figures with and without the step (none: nothing)."""
    found = summary.get("faces_found")
    if not found or crop is None:
        return []
    counts = "; ".join(f"{split.removeprefix('external/')} {c['found']:,} of {c['found'] + c['missed']:,}"
                       for split, c in found.items())
    lines = ["Face step: every image a model sees, photos from elsewhere too, is cut to the square around its "
             f"largest face ({crop['side']:g} eye-to-mouth distances wide, centred {crop['centre']:g} of that "
             "distance from the eyes toward the mouth)"
             f"{', turned grey,' if crop['colour'] == 'grey' else ''} before it is resized; an image with no face "
             f"found keeps its whole frame. Faces found: {counts}.", ""]
    table = []
    for name in summary.get("external") or {}:
        for _, row in rows.iterrows():
            cells = {"model": row["model"], "external set": name}
            for metric in ("accuracy", "balanced accuracy"):
                cells[f"{metric}, face step"] = row.get(f"{name} {metric}")
                cells[f"{metric}, whole frame"] = row.get(f"{name} {WHOLE_FRAME} {metric}")
            table.append(cells)
    if table:
        lines += [pd.DataFrame(table).to_markdown(index=False, floatfmt=".3f"), ""]
    return lines


def provenance(params, specs):
    """What the report was built from, in words that stay true once the report is committed."""
    datasets = {spec.dataset.name: spec.dataset.fingerprint or "not pinned" for spec in specs}
    data = ", ".join(f"`{name}` {fingerprint[:19]}…" for name, fingerprint in datasets.items())
    return f"seed {params['seed']}; raw data {data} (`fingerprint` in params.yaml); the settings below"


def settings_line(spec):
    """The parameters that shape a model, as the report states them."""
    train = spec.train
    parts = [f"builder `{spec.builder}`", f"Keras on {train['backend']}" + (
                 ", data parallel" if train["distribution"] == "data_parallel" else ""),
             f"{train['optimizer']} at {train['learning_rate']:g}", f"batch {train['batch_size']}",
             f"up to {train['epochs']} epochs"]
    if train.get("fine_tune"):
        fine_tune = train["fine_tune"]
        parts.append(f"then {fine_tune['epochs']} fine-tuning epochs of the top {fine_tune['layers']} layers "
                     f"at {fine_tune['learning_rate']:g}")
    if spec.network:
        parts.append("network " + ", ".join(f"{key}: {value}" for key, value in spec.network.items()))
    return f"- `{spec.name}`: " + "; ".join(parts)


def write_report(params, specs, table):
    """reports/comparison.md, .csv and the figures; returns each dataset's best-model lines, one per test set."""
    best_lines = {}
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    plot_scores(table, FIGURES_DIR / "scores.png")
    lines = ["# Model comparison", "",
             "Generated by `stages/compare.py` from the files under `reports/`, built from "
             f"{provenance(params, specs)}. "
             "Test figures are on each dataset's held-out test split, never seen in training; "
             "validation figures on the split carved from the training set. Brackets hold 95 % intervals: "
             "Wilson's for accuracy, a seeded bootstrap over the test images (1,000 resamples) for balanced "
             "accuracy and macro F1. Training time, devices, processes and versions of each run are in "
             "`reports/runs/<model>.json`.", "",
             "![Test accuracy and macro F1 per model](figures/scores.png)", ""]
    for dataset in dict.fromkeys(spec.dataset.name for spec in specs):
        dataset_specs = [spec for spec in specs if spec.dataset.name == dataset]
        rows = table[table["dataset"] == dataset]
        summary = read_json(dataset_specs[0].dataset.reports_dir / "summary.json")
        details = read_json(dataset_specs[0].dataset.reports_dir / "details.json")
        plot_curves(dataset, dataset_specs, FIGURES_DIR / f"curves_{dataset}.png")
        plot_confusions(dataset, dataset_specs, FIGURES_DIR / f"confusion_{dataset}.png")
        plot_roc_and_precision_recall(dataset, dataset_specs, FIGURES_DIR / f"roc_{dataset}.png")
        plot_gradcam_side_by_side(dataset, dataset_specs, FIGURES_DIR / f"gradcam_{dataset}.png")
        lines += [f"## {dataset}", "",
                  f"{len(details['classes'])} classes ({', '.join(details['classes'])}); "
                  f"{summary['train']['total']} training images (of which each model holds out a validation "
                  f"share) and {summary['test']['total']} test images of "
                  f"{'x'.join(map(str, details['train']['image_shape']))}.", "",
                  *external_line(summary), *face_step_lines(rows, summary, dataset_specs[0].dataset.crop)]
        best_lines[dataset] = [best_model_line(rows, dataset_specs)]
        best_lines[dataset] += [best_model_line(rows, dataset_specs, name) for name in summary.get("external") or {}]
        lines += [line for best_line in best_lines[dataset] for line in (best_line, "")]
        baseline = baseline_row(dataset, summary, details["classes"], params["seed"])
        headline = HEADLINE_COLUMNS[dataset_specs[0].dataset.headline]
        lines += [markdown_table(pd.concat([rows, pd.DataFrame([baseline])], ignore_index=True)), ""]
        lines += baseline_flags(rows, baseline, headline)
        lines += chance_flags(rows, summary.get("external") or {}, len(details["classes"]))
        lines += [note for note in (untrained_note(spec) for spec in dataset_specs) if note]
        lines += ["", "Settings:", ""] + [settings_line(spec) for spec in dataset_specs] + [""]
        lines += [f"![{dataset} training curves](figures/curves_{dataset}.png)", "",
                  f"![{dataset} confusion matrices](figures/confusion_{dataset}.png)", "",
                  f"![{dataset} ROC and precision-recall curves](figures/roc_{dataset}.png)", "",
                  f"![{dataset} Grad-CAM of every model on the same test images](figures/gradcam_{dataset}.png)", ""]
    with staged_path(REPORT_PATH) as temporary:
        temporary.write_text("\n".join(lines))
    with staged_path(TABLE_PATH) as temporary:
        table.to_csv(temporary, index=False)
    return best_lines


def untrained_note(spec):
    """Say so when a transfer model did not start from pretrained weights."""
    if spec.builder == "transfer" and weights_origin(spec.builder, spec.network) == "none":
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
        datasets = dict.fromkeys(spec.dataset.name for spec in specs)
        log.info("comparing %d models on %s", len(specs), ", ".join(datasets))
        table = collect(specs)
        best_lines = write_report(params, specs, table)
    for dataset, lines in best_lines.items():
        for line in lines:
            log.info("%s: %s", dataset, line.replace("**", ""))
    log.info("wrote %s, %s and %s/", REPORT_PATH, TABLE_PATH, FIGURES_DIR)


if __name__ == "__main__":
    main()
