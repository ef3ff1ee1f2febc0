"""Classify new images with a trained model (a user command, not a pipeline stage).

Images go through the same decoding, face step (for a dataset that has one), colour rule, resizing
and scaling as preprocess. With a face step, each face found is its own answer, largest first;
an image with none is judged whole, and says so. --explain writes each input beside its Grad-CAM
heatmap (where the model found its evidence) and, with a face step, the whole photo with the face's
box and the heatmap in place.

By default the model's seed ensemble answers: the class probabilities of every training seed's
network (params.yaml's `seeds`) averaged, as the report's seed-ensemble rows; --seed N asks one.

    python -m stages.predict <model> <image> [<image> ...] [--seed N] [--all] [--json] [--explain out.png]
"""

import argparse
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from stages import gradcam
from stages.backend import BackendError, use_backend
from stages.cli import exit_on
from stages.config import ParamsError, load_params, model_spec, training_seeds
from stages.faces import FaceStepError, face_step
from stages.images import UNREADABLE_IMAGE_ERRORS, central_square, face_pixels, open_image, to_unit_range, upright
from stages.models import ModelFileError, class_probabilities, load_trained_model


class PredictError(RuntimeError):
    """An image that cannot be classified."""


class Input(NamedTuple):
    """One thing to classify: an image file, or one face in it."""

    path: str
    face: object  # stages.faces.Face, or None: the whole image
    photo: np.ndarray  # the upright image file, uint8 HxWx3
    pixels: np.ndarray  # what the model sees, uint8 (S, S, 3)


def read_inputs(paths, dataset):
    """An Input per image, or per face found in it (largest first) where the dataset has a face step.
    The first missing or unreadable file is an error naming it."""
    step = face_step(dataset)
    inputs = []
    for path in paths:
        if not Path(path).is_file():
            raise PredictError(f"no such file: {path}")
        try:
            image = upright(open_image(path))
        except UNREADABLE_IMAGE_ERRORS as error:
            raise PredictError(f"{path} is not a readable image ({error})") from error
        photo = np.asarray(image.convert("RGB"))
        faces = step.faces(image) if step is not None else []
        for face in faces or [None]:
            inputs.append(Input(str(path), face, photo, face_pixels(image, dataset.image_size, step, face)))
    return inputs, step is not None


def predict(specs, paths, explain_path=None):
    """[{image, face, predicted, probability, probabilities}] per image or face; the Grad-CAM picture too if asked.

    specs: the ModelSpecs of one model's seeds to average (its seed ensemble), or of one seed. The
    Grad-CAM heatmaps are the first one's. `face` is {box: [left, top, width, height] in the photo's
    pixels, score} or, where the dataset has a face step and none was found, None ("no face found").
    """
    spec = specs[0]
    if explain_path is not None:
        explain_path = Path(explain_path)
        if explain_path.suffix.lower() != ".png":
            raise PredictError(f"--explain {explain_path}: expected the path of a .png file to write")
        if not explain_path.parent.is_dir():
            raise PredictError(f"--explain {explain_path}: no such folder {explain_path.parent}")
    inputs, with_faces = read_inputs(paths, spec.dataset)
    images = to_unit_range(np.stack([entry.pixels for entry in inputs]))
    from stages.models.augmentation import compile_augmentation  # imports Keras: after main() chose the backend

    models = [compile_augmentation(load_trained_model(member)) for member in specs]
    outputs = np.mean([class_probabilities(member.predict(images, batch_size=spec.train["batch_size"], verbose=0))
                       for member in models], axis=0)
    model = models[0]
    names = spec.dataset.class_names
    if explain_path is not None:
        maps, _ = gradcam.heatmaps(model, images, spec.network.get("gradcam_layer"))
        titles = [f"{Path(entry.path).name}{face_label(entry) if with_faces else ''}\n"
                  f"{names[row.argmax()]} ({row.max():.2f})" for entry, row in zip(inputs, outputs)]
        photos = None
        if with_faces:
            photos = [gradcam.in_photo(entry.photo, entry.face.region if entry.face else
                                       central_square(entry.photo.shape[1], entry.photo.shape[0]), heatmap)
                      for entry, heatmap in zip(inputs, maps)]
        heading = (f"{spec.name}, {len(specs)} seeds averaged: seed {spec.seed}'s heatmaps" if len(specs) > 1
                   else f"{spec.run_name}: where it looked")
        gradcam.plot_explanations(images, maps, titles, heading, explain_path, photos=photos)
    results = []
    for entry, row in zip(inputs, outputs):
        result = {"image": entry.path}
        if with_faces:
            result["face"] = None if entry.face is None else {
                "box": [round(value, 1) for value in entry.face.box], "score": round(entry.face.score, 3)}
        results.append({**result, "predicted": names[int(row.argmax())], "probability": float(row.max()),
                        "probabilities": {name: float(p) for name, p in zip(names, row)}})
    return results


def face_label(entry):
    """A picture title's note of what was judged: a face by its box's corner, or the whole image."""
    if entry.face is None:
        return " (no face found)"
    return " (face at {:.0f},{:.0f})".format(*entry.face.box[:2])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a key of the models section of params.yaml")
    parser.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    parser.add_argument("--all", action="store_true", help="print the probability of every class")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--explain", metavar="OUT.png", help="write each image beside its Grad-CAM heatmap here")
    parser.add_argument("--seed", type=int, help="use the model of this training seed alone; by default, the "
                        "average of every seed in params.yaml's `seeds` (the model's seed ensemble)")
    args = parser.parse_args(argv)
    with exit_on("predict", PredictError, ParamsError, ModelFileError, BackendError, gradcam.GradCamError,
                 FaceStepError):
        params = load_params()
        specs = [model_spec(params, args.model, seed)
                 for seed in (training_seeds(params) if args.seed is None else [args.seed])]
        use_backend(specs[0].train["backend"])
        results = predict(specs, args.images, args.explain)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for result in results:
        where = ""
        if "face" in result:
            face = result["face"]
            where = ": no face found, judged whole" if face is None else \
                ": face at ({:.0f}, {:.0f}), {:.0f}x{:.0f}".format(*face["box"])
        print(f"{result['image']}{where}: {result['predicted']} ({result['probability']:.3f})")
        if args.all:
            for name, probability in sorted(result["probabilities"].items(), key=lambda item: -item[1]):
                print(f"    {name}: {probability:.3f}")


if __name__ == "__main__":
    main()
