"""evaluate stage: score one trained model, of one training seed, on its dataset's test split.

Writes reports/metrics/<model>/<seed>.json (loss, accuracy, balanced accuracy, per-class and macro
precision/recall/F1, 95 % intervals, ROC AUC for binary models, inference speed, size) and, under
reports/eval/<model>/<seed>/, the data of DVC's plots (predictions.json: the true and predicted class
and every class's probability per image, for the confusion matrix and compare's paired tests and
ensembles; roc.json and precision_recall.json: of the positive class for binary models,
micro-averaged otherwise), a picture of the misclassified test images, misclassified.png, and
Grad-CAM pictures of where the model looked: gradcam.png (per class, a test image it got right and
one it got wrong, drawn with the split seed) and gradcam_shared.png (one test image per class drawn
with the split seed alone, the same for every model and seed of the dataset, which compare puts side
by side). Each external test set of the dataset is scored the same way (`external.<name>` in the
metrics; predictions_external.json holds its per-image rows; gradcam_external.png shows the images
the model saw). A dataset with a face step has its external sets scored whole as well, as without
the step (`external_whole.<name>`), so the report can show what the step changes.

    python -m stages.evaluate <model> [seed]
"""

import logging
import time
from typing import NamedTuple

import numpy as np

from stages import gradcam
from stages.backend import BackendError, use_backend
from stages.cli import exit_on, parse_stage_arguments
from stages.config import ParamsError, load_params, model_spec
from stages.data import DataError, class_indices, load_split
from stages.files import write_json
from stages.metrics import classification_metrics, curve_points
from stages.models import ModelFileError, class_probabilities, load_trained_model
from stages.plots import image_grid

log = logging.getLogger("evaluate")

LATENCY_REPEATS = 20
SPEED_BATCHES = 8
MAX_MISCLASSIFIED_SHOWN = 24


class EvaluateError(RuntimeError):
    """A model that does not fit its data."""


def predict_outputs(model, images, batch_size):
    """The model's outputs (m, units) on a split's StoredImages, in order."""
    from stages.inputs import ordered_batches

    return model.predict(ordered_batches(images, None, batch_size), verbose=0)


def mean_loss(model, labels, outputs):
    """The model's loss over a set, from outputs already predicted: model.evaluate's value, without its pass."""
    import keras

    losses = keras.losses.get(model.loss)(keras.ops.convert_to_tensor(labels), keras.ops.convert_to_tensor(outputs))
    return float(keras.ops.convert_to_numpy(keras.ops.mean(losses)))


def measure_speed(model, images, batch_size):
    """Batch throughput and per-batch and single-image latency, timed after the scoring pass.

    Throughput is timed on at most SPEED_BATCHES whole batches: that pass has run the model on their
    shape already, so a backend that compiles per shape (JAX) is timed compiled.
    """
    from stages.inputs import ordered_batches, whole_batches

    count = whole_batches(min(len(images), SPEED_BATCHES * batch_size), batch_size)
    started = time.perf_counter()
    model.predict(ordered_batches(images, None, batch_size, np.arange(count)), verbose=0)
    batch_seconds = time.perf_counter() - started
    single = images[:1]
    model.predict_on_batch(single)
    latencies = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        model.predict_on_batch(single)
        latencies.append(time.perf_counter() - started)
    batch_count = int(np.ceil(count / batch_size))
    return {"images_per_second": round(count / batch_seconds, 1),
            "batch_latency_ms": round(1000 * batch_seconds / batch_count, 2),
            "single_image_latency_ms": round(1000 * float(np.median(latencies)), 2),
            "batch_size": batch_size, "timed_images": count}


def evaluate_model(spec):
    """Evaluate spec's model on the test split and the external test sets; write and return its metrics."""
    from stages.models.augmentation import compile_augmentation  # imports Keras: after main() chose the backend

    model = compile_augmentation(load_trained_model(spec))
    images, labels = load_split(spec.dataset, "test")
    # Every input is checked before anything is written.
    external = {name: load_split(spec.dataset, f"external/{name}") for name in spec.dataset.external}
    whole = {name: load_split(spec.dataset, f"external_whole/{name}") for name in spec.dataset.external
             if spec.dataset.crop is not None}
    if model.output_shape[-1] != labels.shape[1]:
        raise EvaluateError(f"{spec.model_path} outputs {model.output_shape[-1]} values per image but "
                            f"{spec.dataset.processed_dir} has labels {labels.shape[1]} wide: retrain the model")
    test = score(spec, model, images, labels)
    names = spec.dataset.class_names
    report = {
        **test.metrics,
        "inference": measure_speed(model, images, spec.train["batch_size"]),
        "size": {"parameter_count": int(model.count_params()), "file_bytes": spec.model_path.stat().st_size},
    }
    scored = {name: score(spec, model, *arrays) for name, arrays in external.items()}
    if scored:
        report["external"] = {name: result.metrics for name, result in scored.items()}
    if whole:
        report["external_whole"] = {name: score(spec, model, *arrays).metrics for name, arrays in whole.items()}
    write_json(spec.metrics_path, report)
    write_json(spec.eval_dir / "predictions.json", prediction_rows(test, names))
    write_json(spec.eval_dir / "predictions_external.json",
               {name: prediction_rows(result, names) for name, result in scored.items()})
    roc, precision_recall = curve_points(test.actual, test.probabilities)
    write_json(spec.eval_dir / "roc.json", roc)
    write_json(spec.eval_dir / "precision_recall.json", precision_recall)
    plot_misclassified(spec, images, test.actual, test.predicted, test.probabilities)
    started = time.perf_counter()
    explain(spec, model, images, test.actual, test.predicted)
    explain_external(spec, model, {name: (external[name][0], scored[name].actual, scored[name].predicted)
                                    for name in external})
    log.debug("%s: Grad-CAM pictures in %.1f s", spec.name, time.perf_counter() - started)
    return report


class Scored(NamedTuple):
    """A model's metrics on a set of test images, and the per-image results they come from."""

    metrics: dict
    actual: np.ndarray         # true class per image
    predicted: np.ndarray      # predicted class per image
    probabilities: np.ndarray  # (m, C)


def prediction_rows(scored, class_names):
    """[{actual, predicted, probabilities}] per image, in the set's order: the confusion plot's data, compare's
    paired tests and its seed and dataset ensembles."""
    return [{"actual": class_names[a], "predicted": class_names[p],
             "probabilities": [round(float(value), 6) for value in row]}
            for a, p, row in zip(scored.actual, scored.predicted, scored.probabilities)]


def score(spec, model, images, labels):
    """The model's Scored results on a set of test images."""
    outputs = predict_outputs(model, images, spec.train["batch_size"])
    probabilities, actual = class_probabilities(outputs), class_indices(labels)
    predicted = probabilities.argmax(axis=1)
    metrics = classification_metrics(actual, predicted, spec.dataset.class_names, positive_scores=probabilities[:, 1],
                                     seed=spec.dataset.split_seed)
    return Scored({"loss": mean_loss(model, labels, outputs), "test_images": int(len(labels)), **metrics},
                  actual, predicted, probabilities)


def explanation_sample(actual, predicted, seed):
    """Test images for gradcam.png: per class, one the model got right and one it got wrong, if any."""
    rng = np.random.default_rng(seed)
    chosen = []
    for class_index in np.unique(actual):
        for right in (True, False):
            candidates = np.flatnonzero((actual == class_index) & ((predicted == actual) == right))
            if len(candidates):
                chosen.append(int(rng.choice(candidates)))
    return chosen


def shared_sample(actual, seed):
    """One test image per class, drawn with the split seed alone: the same images for every model of a dataset."""
    rng = np.random.default_rng(seed)
    return [int(rng.choice(np.flatnonzero(actual == class_index))) for class_index in np.unique(actual)]


def explain_external(spec, model, external):
    """gradcam_external.png: per external test set and class, an image the model got right and one it got wrong."""
    shown, maps, titles = [], [], []
    for set_name, (images, actual, predicted) in external.items():
        sample = explanation_sample(actual, predicted, spec.dataset.split_seed)
        set_images, set_maps, set_titles = heatmaps_and_titles(spec, model, images, actual, sample, f"{set_name}: ")
        shown, maps, titles = shown + set_images, maps + set_maps, titles + set_titles
    heading = (f"{spec.run_name}: where it looked on the external test sets" if external
               else f"{spec.run_name}: no external test sets for {spec.dataset.name}")
    gradcam.plot_explanations(shown, maps, titles, heading, spec.eval_dir / "gradcam_external.png")


def explain(spec, model, images, actual, predicted):
    """gradcam.png and gradcam_shared.png: test images beside their Grad-CAM heatmaps."""
    for indices, path, heading in (
            (explanation_sample(actual, predicted, spec.dataset.split_seed), spec.eval_dir / "gradcam.png",
             f"{spec.run_name}: where it looked (right and wrong test images per class)"),
            (shared_sample(actual, spec.dataset.split_seed), spec.eval_dir / "gradcam_shared.png", spec.run_name)):
        gradcam.plot_explanations(*heatmaps_and_titles(spec, model, images, actual, indices), heading, path)


def heatmaps_and_titles(spec, model, images, actual, indices, prefix=""):
    """([image], [heatmap], [title: true and predicted class]) for the images at `indices`."""
    names = spec.dataset.class_names
    maps, probabilities = gradcam.heatmaps(model, images[indices], spec.network.get("gradcam_layer"))
    titles = [f"{prefix}true {names[actual[i]]}\npredicted {names[row.argmax()]} ({row.max():.2f})"
              for i, row in zip(indices, probabilities)]
    return list(images[indices]), list(maps), titles


def plot_misclassified(spec, images, actual, predicted, probabilities):
    """The test images the model got wrong, each titled with the true and the predicted class."""
    names = spec.dataset.class_names
    wrong = np.flatnonzero(actual != predicted)
    shown = wrong[:MAX_MISCLASSIFIED_SHOWN]
    titles = [f"true {names[actual[i]]}\npredicted {names[predicted[i]]} ({probabilities[i, predicted[i]]:.2f})"
              for i in shown]
    heading = f"{spec.run_name}: {len(wrong)} of {len(actual)} test images misclassified"
    if len(wrong) > len(shown):
        heading += f" (first {len(shown)} shown)"
    image_grid(images[shown], titles, heading, spec.eval_dir / "misclassified.png")


def main(argv=None):
    args = parse_stage_arguments(__doc__, argv, seed=True, model="a key of the models section of params.yaml")
    with exit_on(f"evaluate {args.model}", EvaluateError, ParamsError, DataError, ModelFileError, BackendError,
                 gradcam.GradCamError):
        spec = model_spec(load_params(), args.model, args.seed)
        use_backend(spec.train["backend"])
        log.info("%s: scoring %s on the test split of %s%s", spec.run_name, spec.model_path, spec.dataset.name,
                 f" and on {', '.join(spec.dataset.external)}" if spec.dataset.external else "")
        report = evaluate_model(spec)
    log.info("%s: wrote %s: test accuracy %.3f, macro F1 %.3f on %d images; %.0f images/s",
             spec.run_name, spec.metrics_path, report["accuracy"], report["macro"]["f1"], report["test_images"],
             report["inference"]["images_per_second"])


if __name__ == "__main__":
    main()
