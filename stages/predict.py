"""Classify new images with a trained model (a user command, not a pipeline stage).

Images go through the same decoding, RGB conversion, resizing and scaling as preprocess.
--explain writes each image beside its Grad-CAM heatmap: where the model found its evidence.

    python -m stages.predict <model> <image> [<image> ...] [--all] [--json] [--explain out.png]
"""

import argparse
import json
from pathlib import Path

import numpy as np

from stages import gradcam
from stages.backend import BackendError, use_backend
from stages.cli import exit_on
from stages.config import ParamsError, load_params, model_spec
from stages.images import UNREADABLE_IMAGE_ERRORS, load_image
from stages.models import ModelFileError, class_probabilities, load_trained_model


class PredictError(RuntimeError):
    """An image that cannot be classified."""


def load_images(paths, image_size):
    """All images as one batch; the first missing or unreadable file is an error naming it."""
    batch = []
    for path in paths:
        if not Path(path).is_file():
            raise PredictError(f"no such file: {path}")
        try:
            batch.append(load_image(path, image_size))
        except UNREADABLE_IMAGE_ERRORS as error:
            raise PredictError(f"{path} is not a readable image ({error})") from error
    return np.stack(batch)


def predict(spec, paths, explain_path=None):
    """[{image, predicted, probability, probabilities}] for each path; the Grad-CAM picture too if asked."""
    if explain_path is not None:
        explain_path = Path(explain_path)
        if explain_path.suffix.lower() != ".png":
            raise PredictError(f"--explain {explain_path}: expected the path of a .png file to write")
        if not explain_path.parent.is_dir():
            raise PredictError(f"--explain {explain_path}: no such folder {explain_path.parent}")
    images = load_images(paths, spec.dataset.image_size)
    from stages.models.augmentation import compile_augmentation  # imports Keras: after main() chose the backend

    model = compile_augmentation(load_trained_model(spec))
    outputs = class_probabilities(model.predict(images, batch_size=spec.train["batch_size"], verbose=0))
    names = spec.dataset.class_names
    if explain_path is not None:
        maps, _ = gradcam.heatmaps(model, images, spec.network.get("gradcam_layer"))
        titles = [f"{Path(path).name}\n{names[row.argmax()]} ({row.max():.2f})" for path, row in zip(paths, outputs)]
        gradcam.plot_explanations(images, maps, titles, f"{spec.name}: where it looked", explain_path)
    return [{"image": str(path), "predicted": names[int(row.argmax())], "probability": float(row.max()),
             "probabilities": {name: float(p) for name, p in zip(names, row)}}
            for path, row in zip(paths, outputs)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a key of the models section of params.yaml")
    parser.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    parser.add_argument("--all", action="store_true", help="print the probability of every class")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--explain", metavar="OUT.png", help="write each image beside its Grad-CAM heatmap here")
    args = parser.parse_args(argv)
    with exit_on("predict", PredictError, ParamsError, ModelFileError, BackendError, gradcam.GradCamError):
        spec = model_spec(load_params(), args.model)
        use_backend(spec.train["backend"])
        results = predict(spec, args.images, args.explain)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        print(f"{result['image']}: {result['predicted']} ({result['probability']:.3f})")
        if args.all:
            for name, probability in sorted(result["probabilities"].items(), key=lambda item: -item[1]):
                print(f"    {name}: {probability:.3f}")


if __name__ == "__main__":
    main()
