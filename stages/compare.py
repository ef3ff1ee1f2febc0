"""compare stage: put every model's figures, over its training seeds, side by side in one report.

Reads each model's per-seed test metrics, training reports, curves and per-image predictions, and
the data summaries. Per model and test set (the test split and each external set) it gives the mean
over seeds with a pooled 95 % interval, the seeds' spread, and a seed ensemble (the seeds' class
probabilities averaged); per dataset an ensemble of all its models; between models, a paired sign test
over the same images and seeds, and whether the best model's lead holds in every seed. Writes
reports/comparison.md, reports/comparison.csv (one row per model and ensemble), a summary metrics
file per model and per dataset ensemble under reports/summary/, and the figures in reports/figures/.
Nothing in the report is written by hand: every number comes from those files.

    python -m stages.compare
"""

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from stages.cli import exit_on, parse_stage_arguments
from stages.config import ParamsError, load_params, model_spec, training_seeds
from stages.ensembles import EnsembleError, combine, read_predictions
from stages.files import remove_path, staged_path, write_json
from stages.metrics import (
    SCORES, classification_metrics, confusion_matrix, curve_points, paired_sign_test, pooled_intervals, seed_spread)
from stages.models import weights_origin
from stages.plots import plt, save_figure

log = logging.getLogger("compare")

REPORT_PATH = Path("reports/comparison.md")
TABLE_PATH = Path("reports/comparison.csv")
FIGURES_DIR = Path("reports/figures")
SUMMARY_DIR = Path("reports/summary")  # models/<model>.json and datasets/<dataset>.json: dvc metrics

TEST_SPLIT = "test"  # the held-out split's name among a dataset's test sets; external sets go by their own
# A score's name in the metrics files: its words in the report.
SCORE_WORDS = {"accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_f1": "macro F1"}
# Columns averaged over a model's seeds: where each value comes from ((file, dotted key)).
COLUMNS = {
    "ROC AUC": ("metrics", "roc_auc"),
    "test loss": ("metrics", "loss"),
    "best val accuracy": ("train", "best_val_accuracy"),
    "epochs run": ("train", "epochs_run"),
    "parameters": ("metrics", "size.parameter_count"),
    "size (MB)": ("metrics", "size.file_bytes"),
    "inference images/s": ("metrics", "inference.images_per_second"),
    "1-image latency (ms)": ("metrics", "inference.single_image_latency_ms"),
}
# External sets scored without the face step: their columns' middle word (comparison.csv; face_step_lines).
WHOLE_FRAME = "whole-frame"
SIGNIFICANCE = 0.05


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


def test_sets(dataset):
    """The dataset's test sets: the held-out split, then its external sets."""
    return [TEST_SPLIT, *dataset.external]


def column(test_set, score):
    """'test balanced accuracy', 'course_signs accuracy': a score's column on one test set."""
    return f"{test_set} {SCORE_WORDS[score]}"


def predictions(seed_specs, test_set):
    """The Predictions of a model's seeds (its list of ModelSpecs, one per seed) on one test set."""
    dataset = seed_specs[0].dataset
    return read_predictions([spec.eval_dir for spec in seed_specs], dataset.class_names,
                            None if test_set == TEST_SPLIT else test_set)


def score_cells(test_set, per_seed, interval):
    """A test set's score columns: the mean over seeds, its pooled interval and the seeds' spread."""
    cells = {}
    for score, values in per_seed.items():
        spread, name = seed_spread(values), column(test_set, score)
        cells[name] = spread["mean"]
        cells[f"{name} low"], cells[f"{name} high"] = interval[score]["low"], interval[score]["high"]
        for key in ("sd", "min", "max"):
            cells[f"{name} {key}"] = spread[key]
    return cells


def score_values(metrics):
    """{accuracy, balanced_accuracy, macro_f1} of one metrics block."""
    return {score: metrics[score] if score != "macro_f1" else metrics["macro"]["f1"] for score in SCORES}


def ensemble_cells(test_set, metrics):
    """A test set's score columns for an ensemble (one network's worth of figures, with its own interval)."""
    cells = {}
    for score, value in score_values(metrics).items():
        name = column(test_set, score)
        cells[name] = value
        cells[f"{name} low"], cells[f"{name} high"] = metrics["ci95"][score]["low"], metrics["ci95"][score]["high"]
    return cells


def ensemble_metrics(ensemble, class_names, split_seed):
    """An ensemble's classification metrics on one test set, from its averaged probabilities."""
    return classification_metrics(ensemble.actual, ensemble.predicted[0], class_names,
                                  positive_scores=ensemble.probabilities[0][:, 1], seed=split_seed)


def model_row(seed_specs, split_seed):
    """(the model's table row, its summary metrics, its seed ensemble's row, each test set's Predictions)."""
    first = seed_specs[0]
    dataset = first.dataset
    sources = [{"metrics": read_json(spec.metrics_path), "train": read_json(spec.report_path)} for spec in seed_specs]
    row = {"model": first.name, "kind": "model", "dataset": dataset.name, "builder": first.builder,
           "seeds": len(seed_specs)}
    ensemble_row = {"model": f"{first.name}: its {len(seed_specs)} seeds averaged", "kind": "seed ensemble",
                    "dataset": dataset.name, "builder": first.builder, "seeds": len(seed_specs)}
    seeds = [str(spec.seed) for spec in seed_specs]
    summary = {"seeds": len(seeds)}  # numbers only, for `dvc metrics diff`: the seeds are per_seed's keys
    results = {}
    for test_set in test_sets(dataset):
        found = results[test_set] = predictions(seed_specs, test_set)
        per_seed = {score: [float(np.asarray(function(found.actual, predicted, dataset.num_classes)))
                            for predicted in found.predicted] for score, function in SCORES.items()}
        interval = pooled_intervals(found.actual, found.predicted, dataset.num_classes, split_seed)
        row.update(score_cells(test_set, per_seed, interval))
        ensemble = ensemble_metrics(found.averaged(), dataset.class_names, split_seed)
        ensemble_row.update(ensemble_cells(test_set, ensemble))
        summary[test_set] = {score: {**seed_spread(values), "ci95": interval[score],
                                     "per_seed": dict(zip(seeds, values))}
                             for score, values in per_seed.items()}
        summary[test_set]["seed_ensemble"] = score_values(ensemble)
    for name, (source, key) in COLUMNS.items():
        values = [dotted(found[source], key) for found in sources]
        row[name] = float(np.mean(values)) if all(value is not None for value in values) else None
    row["size (MB)"] = None if row["size (MB)"] is None else round(row["size (MB)"] / 2**20, 2)
    for name in dataset.external if dataset.crop is not None else ():  # the external sets without the face step
        for score in ("accuracy", "balanced_accuracy"):
            values = [dotted(found["metrics"], f"external_whole.{name}.{score}") for found in sources]
            if all(value is not None for value in values):
                row[f"{name} {WHOLE_FRAME} {SCORE_WORDS[score]}"] = float(np.mean(values))
    row["weights"] = ensemble_row["weights"] = weights_origin(first.builder, first.network)
    return row, summary, ensemble_row, results


def dataset_ensemble(dataset, models, results, split_seed):
    """(the row of the ensemble of all the dataset's models, its summary): each model's seeds averaged, then
    the models averaged."""
    row = {"model": f"all {len(models)} {dataset.name} models averaged", "kind": "dataset ensemble",
           "dataset": dataset.name, "builder": "ensemble", "seeds": None}
    summary = {"models": len(models)}
    for test_set in test_sets(dataset):
        ensemble = combine([results[name][test_set] for name in models])
        metrics = ensemble_metrics(ensemble, dataset.class_names, split_seed)
        row.update(ensemble_cells(test_set, metrics))
        summary[test_set] = score_values(metrics)
    return row, summary


def baseline_row(dataset, summary, class_names, split_seed):
    """The figures of always answering the training split's most common class, on the test split's counts."""
    train, test = summary["train"]["per_class"], summary["test"]["per_class"]
    majority = max(class_names, key=lambda name: train[name])
    actual = np.repeat(np.arange(len(class_names)), [test[name] for name in class_names])
    metrics = classification_metrics(actual, np.full(len(actual), class_names.index(majority)), class_names,
                                     seed=split_seed)
    return {"model": f"baseline: always {majority}", "kind": "baseline", "dataset": dataset,
            "builder": "majority class", **ensemble_cells(TEST_SPLIT, metrics)}


def chance_flags(rows, external_sets, num_classes):
    """A line per model and external set where the model does no better, over its seeds, than answering one
    class for every image: mean balanced accuracy at or below 1 / classes."""
    chance = 1 / num_classes
    return [f"Flag: `{row['model']}` does no better than chance on `{name}`: balanced accuracy "
            f"{row[column(name, 'balanced_accuracy')]:.3f} over its seeds, what answering one class for every "
            f"image gets ({chance:.3f})."
            for _, row in rows.iterrows() for name in external_sets
            if row[column(name, "balanced_accuracy")] <= chance + 1e-9]


def baseline_flags(rows, baseline, headline):
    """A line per model that does not beat the majority-class baseline on the headline metric."""
    name = column(TEST_SPLIT, headline)
    return [f"Flag: `{row['model']}` does not beat the majority-class baseline on {name} "
            f"({row[name]:.3f} over its seeds against {baseline[name]:.3f})."
            for _, row in rows.iterrows() if not row[name] > baseline[name]]


def plural(count, word):
    return f"{count} {word}{'' if count == 1 else 's'}"


def best_model_line(rows, results, headline, test_set):
    """The best model on one test set by its mean headline figure over seeds; against each other model,
    whether its worst seed beats the other's best (the lead holds in every seed), and a paired sign test
    over the same images of each model's share of seeds right."""
    name = column(test_set, headline)
    ranked = rows.sort_values([name, column(TEST_SPLIT, headline)], ascending=False)
    best = ranked.iloc[0]
    seeds = plural(int(best["seeds"]), "seed")
    line = (f"Best on {name}: **{best['model']}**, {best[name]:.3f} over {seeds} [{best[f'{name} low']:.2f}, "
            f"{best[f'{name} high']:.2f}] (seeds {best[f'{name} min']:.3f} to {best[f'{name} max']:.3f}).")
    images = "test image" if test_set == TEST_SPLIT else f"{test_set} image"
    tied = []
    for _, other in ranked.iloc[1:].iterrows():
        holds = best[f"{name} min"] > other[f"{name} max"]
        higher, lower, p_value = paired_sign_test(results[best["model"]][test_set].correct_share,
                                                  results[other["model"]][test_set].correct_share)
        verdict = "significant" if p_value < SIGNIFICANCE else "not significant"
        line += (f" Against {other['model']} ({other[name]:.3f}): "
                 + ("the lead holds in every seed (its worst seed beats the other's best)" if holds else
                    f"the seeds overlap (its worst {best[f'{name} min']:.3f}, the other's best "
                    f"{other[f'{name} max']:.3f})")
                 + f"; {plural(higher, images)} it got right more often over the seeds, {lower} the other "
                   f"(paired sign test p = {p_value:.3g}, {verdict} at {SIGNIFICANCE:.0%}).")
        if p_value >= SIGNIFICANCE or not holds:
            tied.append(other["model"])
    if tied:
        line += (f" It cannot be told apart from {', '.join(tied)} on this test set: a lead that is not significant "
                 "or does not hold in every seed could be the luck of the seeds or of the images.")
    elif len(ranked) > 1:
        line += f" Its lead over every other model holds in every seed and is significant at {SIGNIFICANCE:.0%}."
    return line


def ensemble_line(rows, ensembles, dataset_row, headline, test_set):
    """Each ensemble on one test set against the mean of its members: a model's seeds, a dataset's models
    (dataset_row None: a dataset of one model has no ensemble of its own)."""
    name = column(test_set, headline)
    parts = []
    for (_, model), (_, ensemble) in zip(rows.iterrows(), ensembles.iterrows()):  # the same models, in order
        verdict = ("beats every seed" if ensemble[name] > model[f"{name} max"] else
                   "beats the mean of its seeds, not every seed" if ensemble[name] > model[name] else
                   "does not beat the mean of its seeds")
        parts.append(f"{model['model']} {ensemble[name]:.3f} against its seeds' mean {model[name]:.3f} ({verdict})")
    line = f"Ensembles on {name}: seeds averaged, " + "; ".join(parts) + "."
    if dataset_row is None:
        return line
    better = int(np.sum(ensembles[name].to_numpy() < dataset_row[name]))
    return (line + f" All models averaged: {dataset_row[name]:.3f} [{dataset_row[f'{name} low']:.2f}, "
            f"{dataset_row[f'{name} high']:.2f}] against its models' mean {rows[name].mean():.3f}; it beats {better} "
            f"of {len(ensembles)} models' seed ensembles.")


# How the Markdown table shows each column; the CSV keeps the raw values.
DISPLAY_FORMATS = {
    "parameters": "{:,.0f}", "size (MB)": "{:.1f}", "inference images/s": "{:.0f}", "1-image latency (ms)": "{:.1f}",
    "epochs run": "{:.1f}",
}


def markdown_table(table, dataset):
    """The dataset's rows as a Markdown table: per test set its accuracy and headline figure with their
    intervals and the headline's spread over seeds; then the training and size columns that have values."""
    shown = pd.DataFrame({"model": table["model"]})
    headline = dataset.headline
    for test_set in test_sets(dataset):
        for score in dict.fromkeys(("accuracy", headline)):
            name = column(test_set, score)
            shown[name] = ["" if pd.isna(value) else f"{value:.3f} [{low:.2f}, {high:.2f}]" for value, low, high in
                           zip(table[name], table[f"{name} low"], table[f"{name} high"])]
        name = column(test_set, headline)
        shown[f"{name}: seeds' sd (range)"] = [  # ensembles and the baseline have no seeds' spread
            "" if pd.isna(sd) else f"{sd:.3f} ({low:.3f}-{high:.3f})"
            for sd, low, high in zip(table[f"{name} sd"], table[f"{name} min"], table[f"{name} max"])]
    for name in COLUMNS:
        if name in table.columns and table[name].notna().any():
            shown[name] = table[name].map(
                lambda value, name=name: "" if pd.isna(value) else DISPLAY_FORMATS.get(name, "{:.3f}").format(value))
    alignment = ["left"] + ["right"] * (len(shown.columns) - 1)
    return shown.to_markdown(index=False, colalign=alignment, disable_numparse=True)


def plot_scores(table, datasets, path):
    """The headline figure: per dataset and test set, each model's mean over seeds with its pooled interval
    and its seeds as dots, and the dataset ensemble, so the test split and the external sets sit side by side."""
    figure, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.6), squeeze=False)
    for axis, dataset in zip(axes[0], datasets):
        rows = table[(table["dataset"] == dataset.name) & table["kind"].isin(["model", "dataset ensemble"])]
        sets, width = test_sets(dataset), 0.8 / len(rows)
        for offset, (_, row) in enumerate(rows.iterrows()):
            positions = np.arange(len(sets)) - 0.4 + width * (offset + 0.5)
            names = [column(test_set, dataset.headline) for test_set in sets]
            values = np.array([row[name] for name in names])
            errors = [values - [row[f"{name} low"] for name in names], [row[f"{name} high"] for name in names] - values]
            ensemble = row["kind"] == "dataset ensemble"
            axis.bar(positions, values, width=width * 0.9, yerr=errors, capsize=3, label=row["model"],
                     hatch="//" if ensemble else None, edgecolor="black" if ensemble else None, alpha=0.85)
            if not ensemble:
                for position, name in zip(positions, names):
                    axis.plot([position] * 2, [row[f"{name} min"], row[f"{name} max"]], linestyle="none", marker="D",
                              markersize=4, markerfacecolor="white", markeredgecolor="black")
        axis.set_xticks(np.arange(len(sets)), ["test split" if s == TEST_SPLIT else s for s in sets])
        axis.set_ylim(0, 1.15)
        axis.set_ylabel(SCORE_WORDS[dataset.headline])
        axis.axhline(1 / dataset.num_classes, color="grey", linestyle=":", linewidth=1)
        axis.legend(fontsize=7, loc="upper right", ncol=2)
        axis.set_title(f"{dataset.name}: {SCORE_WORDS[dataset.headline]}, mean over seeds")
    figure.suptitle("Each model on each test set: bars the mean over training seeds with a 95 % interval, dots "
                    "the worst and best seed; hatched, all models averaged; dotted, chance", fontsize=9)
    save_figure(figure, path)


def read_curve(spec, split, metric):
    path = spec.live_dir / "plots" / "metrics" / split / f"{metric}.tsv"
    return pd.read_csv(path, sep="\t") if path.is_file() else None


def plot_curves(dataset, models, path):
    """Validation accuracy and loss per epoch of every model and seed of one dataset, one colour per model."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, seed_specs in enumerate(models.values()):
        for number, spec in enumerate(seed_specs):
            for axis, metric in zip(axes, ("accuracy", "loss")):
                curve = read_curve(spec, "eval", metric)
                if curve is not None:
                    axis.plot(curve["step"] + 1, curve[metric], color=f"C{index}", alpha=0.8, linewidth=1,
                              label=spec.name if number == 0 else None)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"validation {metric}")
        axis.grid(alpha=0.3)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{dataset}: training curves of every seed (validation split)")
    save_figure(figure, path)


def plot_confusions(dataset, results, path):
    """Each model's seed ensemble's confusion matrix on the test split, side by side."""
    figure, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 4), squeeze=False,
                                layout="constrained")
    names = dataset.class_names
    for axis, (model, found) in zip(axes[0], results.items()):
        ensemble = found[TEST_SPLIT].averaged()
        counts = confusion_matrix(ensemble.actual, ensemble.predicted[0], len(names))
        axis.imshow(counts, cmap="Blues")
        for (i, j), count in np.ndenumerate(counts):
            axis.text(j, i, str(count), ha="center", va="center", fontsize=8,
                      color="white" if count > counts.max() / 2 else "black")
        axis.set_xticks(range(len(names)), names, fontsize=7, rotation=45 if len(names) == 2 else 0)
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.set_xlabel("predicted")
        axis.set_ylabel("actual")
        axis.set_title(model, fontsize=9)
    figure.suptitle(f"{dataset.name}: confusion matrices on the test split (each model's seeds averaged)")
    save_figure(figure, path)


def plot_roc_and_precision_recall(dataset, results, path):
    """Every model's seed-ensemble ROC and precision-recall curves on the test split (micro-averaged for
    multiclass)."""
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for model, found in results.items():
        ensemble = found[TEST_SPLIT].averaged()
        roc, precision_recall = curve_points(ensemble.actual, ensemble.probabilities[0])
        axes[0].plot([p["fpr"] for p in roc["roc"]], [p["tpr"] for p in roc["roc"]], label=model)
        axes[1].plot([p["recall"] for p in precision_recall["precision_recall"]],
                     [p["precision"] for p in precision_recall["precision_recall"]], label=model)
    axes[0].plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for axis, (x_label, y_label) in zip(axes, (("false positive rate", "true positive rate"),
                                               ("recall", "precision"))):
        axis.set_xlabel(x_label)
        axis.set_ylabel(y_label)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower left")
    kind = "positive class" if dataset.num_classes == 2 else "micro-averaged over classes"
    figure.suptitle(f"{dataset.name}: ROC and precision-recall on the test split, each model's seeds averaged "
                    f"({kind})")
    save_figure(figure, path)


def plot_gradcam_side_by_side(dataset, specs, path):
    """Each model's Grad-CAM strip of the dataset's shared test images (its first seed), one model per row."""
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
    figure.suptitle(f"{dataset}: where each model (its first seed) looked, on the same test images (Grad-CAM)")
    save_figure(figure, path)


def external_line(summary):
    """The dataset's external test sets, in a sentence (none: nothing)."""
    sets = summary.get("external") or {}
    if not sets:
        return []
    listed = "; ".join(f"`{name}`, {counts['total']} images" for name, counts in sets.items())
    return [f"External test sets, photos from elsewhere, never used to train or to choose settings: {listed}.", ""]


def face_step_lines(rows, summary, crop):
    """Where the dataset has a face step (crop: its settings): the faces found per set, and each
    external set's figures with and without the step, each a mean over seeds (none: nothing)."""
    found = summary.get("faces_found")
    if not found or crop is None:
        return []
    counts = "; ".join(f"{split.removeprefix('external/')} {c['found']:,} of {c['found'] + c['missed']:,}"
                       for split, c in found.items())
    lines = ["Face step: every image a model sees, photos from elsewhere too, is cut to the square around its "
             f"largest face ({crop['side']:g} eye-to-mouth distances wide, centred {crop['centre']:g} of that "
             "distance from the eyes toward the mouth)"
             f"{', turned grey,' if crop['colour'] == 'grey' else ''} before it is resized; an image with no face "
             f"found keeps its whole frame. Faces found: {counts}. Each model's mean over its seeds:", ""]
    table = []
    for name in summary.get("external") or {}:
        for _, row in rows.iterrows():
            cells = {"model": row["model"], "external set": name}
            for score in ("accuracy", "balanced accuracy"):
                cells[f"{score}, face step"] = row.get(f"{name} {score}")
                cells[f"{score}, whole frame"] = row.get(f"{name} {WHOLE_FRAME} {score}")
            table.append(cells)
    if table:
        lines += [pd.DataFrame(table).to_markdown(index=False, floatfmt=".3f"), ""]
    return lines


def provenance(params, specs):
    """What the report was built from, in words that stay true once the report is committed."""
    datasets = {spec.dataset.name: spec.dataset.fingerprint or "not pinned" for spec in specs}
    data = ", ".join(f"`{name}` {fingerprint[:19]}…" for name, fingerprint in datasets.items())
    seeds = ", ".join(map(str, training_seeds(params)))
    return (f"split seed {params['split_seed']}, training seeds {seeds}; raw data {data} (`fingerprint` in "
            "params.yaml); the settings below")


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


def untrained_note(spec):
    """Say so when a transfer model did not start from pretrained weights."""
    if spec.builder == "transfer" and weights_origin(spec.builder, spec.network) == "none":
        return (f"Note: `{spec.name}` was trained from random initial weights (`weights: none`), "
                "not from pretrained ImageNet weights.")
    return None


def dataset_section(params, dataset, models):
    """(the dataset's report lines, its table rows, its summary metrics files {path: data}, its best lines)."""
    split_seed = params["split_seed"]
    rows, ensemble_rows, summaries, results = [], [], {}, {}
    for name, seed_specs in models.items():
        row, summary, ensemble_row, results[name] = model_row(seed_specs, split_seed)
        rows.append(row)
        ensemble_rows.append(ensemble_row)
        summaries[SUMMARY_DIR / "models" / f"{name}.json"] = summary
    dataset_row = None
    if len(models) > 1:  # with one model, its seed ensemble is the dataset's
        dataset_row, summaries[SUMMARY_DIR / "datasets" / f"{dataset.name}.json"] = dataset_ensemble(
            dataset, models, results, split_seed)
    rows, ensembles = pd.DataFrame(rows), pd.DataFrame(ensemble_rows)
    data_summary = read_json(dataset.reports_dir / "summary.json")
    details = read_json(dataset.reports_dir / "details.json")
    baseline = baseline_row(dataset.name, data_summary, details["classes"], split_seed)
    plot_curves(dataset.name, models, FIGURES_DIR / f"curves_{dataset.name}.png")
    plot_confusions(dataset, results, FIGURES_DIR / f"confusion_{dataset.name}.png")
    plot_roc_and_precision_recall(dataset, results, FIGURES_DIR / f"roc_{dataset.name}.png")
    plot_gradcam_side_by_side(dataset.name, [seed_specs[0] for seed_specs in models.values()],
                              FIGURES_DIR / f"gradcam_{dataset.name}.png")
    best_lines = [best_model_line(rows, results, dataset.headline, test_set) for test_set in test_sets(dataset)]
    lines = [f"## {dataset.name}", "",
             f"{len(details['classes'])} classes ({', '.join(details['classes'])}); "
             f"{data_summary['train']['total']} training images (of which each model and seed holds out a validation "
             f"share) and {data_summary['test']['total']} test images of "
             f"{'x'.join(map(str, details['train']['image_shape']))}.", "",
             *external_line(data_summary), *face_step_lines(rows, data_summary, dataset.crop)]
    lines += [line for best_line in best_lines for line in (best_line, "")]
    lines += [line for test_set in test_sets(dataset)
              for line in (ensemble_line(rows, ensembles, dataset_row, dataset.headline, test_set), "")]
    table = pd.concat([rows, ensembles, pd.DataFrame([row for row in (dataset_row, baseline) if row])],
                      ignore_index=True)
    lines += [markdown_table(table, dataset), ""]
    lines += baseline_flags(rows, baseline, dataset.headline)
    lines += chance_flags(rows, dataset.external, len(details["classes"]))
    first_specs = [seed_specs[0] for seed_specs in models.values()]
    lines += [note for note in (untrained_note(spec) for spec in first_specs) if note]
    lines += ["", "Settings:", ""] + [settings_line(spec) for spec in first_specs] + [""]
    lines += [f"![{dataset.name} training curves](figures/curves_{dataset.name}.png)", "",
              f"![{dataset.name} confusion matrices](figures/confusion_{dataset.name}.png)", "",
              f"![{dataset.name} ROC and precision-recall curves](figures/roc_{dataset.name}.png)", "",
              f"![{dataset.name} Grad-CAM of every model on the same test images](figures/gradcam_{dataset.name}.png)",
              ""]
    return lines, table, summaries, best_lines


def write_report(params, models):
    """reports/comparison.md, .csv, the summaries and the figures; returns each dataset's best-model lines."""
    specs = [seed_specs[0] for seed_specs in models.values()]
    datasets = {spec.dataset.name: spec.dataset for spec in specs}
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    lines = ["# Model comparison", "",
             "Generated by `stages/compare.py` from the files under `reports/`, built from "
             f"{provenance(params, specs)}. "
             "Every model is trained once per training seed and scored on the same test images: a figure is the "
             "mean over its seeds, with the seeds' spread beside it. Test figures are on each dataset's held-out "
             "test split, never seen in training; validation figures on the split each seed carves from the "
             "training set. Brackets hold 95 % intervals: for a model, a seeded bootstrap over the test images "
             "(1,000 resamples) of its mean over seeds; for an ensemble, Wilson's for accuracy and the same "
             "bootstrap for the rest. Training time, devices, processes and versions of each run are in "
             "`reports/runs/<model>/<seed>.json`.", "",
             "![Each model on each test set](figures/scores.png)", ""]
    tables, summaries, best_lines = [], {}, {}
    for name, dataset in datasets.items():
        dataset_models = {model: seed_specs for model, seed_specs in models.items()
                          if seed_specs[0].dataset.name == name}
        section, table, dataset_summaries, best_lines[name] = dataset_section(params, dataset, dataset_models)
        lines += section
        tables.append(table)
        summaries.update(dataset_summaries)
    table = pd.concat(tables, ignore_index=True)
    plot_scores(table, list(datasets.values()), FIGURES_DIR / "scores.png")
    remove_path(SUMMARY_DIR)  # no summary of a model params.yaml no longer has
    for path, data in summaries.items():
        write_json(path, data)
    with staged_path(REPORT_PATH) as temporary:
        temporary.write_text("\n".join(lines))
    with staged_path(TABLE_PATH) as temporary:
        table.to_csv(temporary, index=False)
    return best_lines


def main(argv=None):
    parse_stage_arguments(__doc__, argv)
    with exit_on("compare", CompareError, ParamsError, EnsembleError):
        params = load_params()
        seeds = training_seeds(params)
        models = {name: [model_spec(params, name, seed) for seed in seeds] for name in params.get("models") or {}}
        if not models:
            raise CompareError("params.yaml defines no models to compare")
        log.info("comparing %d models over %s on %s", len(models), plural(len(seeds), "training seed"),
                 ", ".join(dict.fromkeys(seed_specs[0].dataset.name for seed_specs in models.values())))
        best_lines = write_report(params, models)
    for dataset, lines in best_lines.items():
        for line in lines:
            log.info("%s: %s", dataset, line.replace("**", ""))
    log.info("wrote %s, %s, %s/ and %s/", REPORT_PATH, TABLE_PATH, SUMMARY_DIR, FIGURES_DIR)


if __name__ == "__main__":
    main()
