"""The train stage on tiny generated data: outputs, best epoch, fine-tuning, determinism, bad params."""

from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import read_train_report, run_python, run_stage, save_params

from stages import train
from stages.config import load_params, model_spec
from stages.data import encode_labels, read_split
from stages.files import file_sha256


@pytest.mark.backends
@pytest.mark.slow
def test_train_writes_model_report_and_curves(tiny_project):
    assert run_stage(train, "digits_cnn") is None

    report = read_train_report(tiny_project, "digits_cnn")
    assert report["epochs_run"] == 4 and 1 <= report["best_epoch"] <= 4
    assert report["train_images"] == 18 and report["validation_images"] == 6
    assert report["parameter_count"] == keras.models.load_model(tiny_project / "models/digits_cnn/5.keras").count_params()
    assert report["device"].startswith(("CPU", "GPU")) and isinstance(report["mixed_precision"], bool)
    cpuinfo = Path("/proc/cpuinfo")
    assert report["cpu"] and (not cpuinfo.is_file() or f": {report['cpu']}\n" in cpuinfo.read_text()), \
        "the run facts name the CPU that trained (another CPU type may give other weights)"
    assert report["images_per_epoch"] == 16, "whole batches of 4 out of 18 training images"
    assert report["images_per_second"] == pytest.approx(16 * 4 / report["wall_time_seconds"], rel=0.02)
    assert report["peak_memory_mib"] > 100, "TensorFlow alone takes more than that"
    for curve in ("train/loss", "eval/loss", "train/accuracy", "eval/accuracy"):
        lines = (tiny_project / "reports/train/digits_cnn/5/plots/metrics" / f"{curve}.tsv").read_text().splitlines()
        assert len(lines) == 1 + 4, curve  # a header and one row per epoch


def test_peak_memory_is_the_stages_own_not_its_parents(tmp_path):
    """Linux carries a parent's peak into its children's rusage: a stage started by a big process
    (a benchmark, a notebook) must still report its own."""
    ballast = bytearray(300 * 2**20)  # this process now peaks above 300 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    result = run_python("-c", "from stages.cli import peak_memory_mib; print(peak_memory_mib())", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 0 < float(result.stdout) < 100, "a bare interpreter"
    del ballast


@pytest.mark.backends
@pytest.mark.slow
def test_saved_model_is_the_best_epoch(tiny_project):
    params = load_params()
    params["train"]["monitor"] = "val_accuracy"
    save_params(tiny_project, params)
    assert run_stage(train, "faces_cnn") is None

    report = read_train_report(tiny_project, "faces_cnn")
    spec = model_spec(load_params(), "faces_cnn")
    images, labels = read_split(tiny_project / "data/processed/faces", "train")
    _, held_out = train.validation_split(labels, spec.train["validation_fraction"], spec.seed)
    val_images, val_labels = images[held_out], labels[held_out]
    model = keras.models.load_model(tiny_project / "models/faces_cnn/5.keras")
    _, accuracy = model.evaluate(val_images, val_labels, verbose=0)
    assert accuracy == pytest.approx(report["best_val_accuracy"])
    val_curve = np.loadtxt(tiny_project / "reports/train/faces_cnn/5/plots/metrics/eval/accuracy.tsv", skiprows=1)
    assert report["best_val_accuracy"] == pytest.approx(val_curve[:, 1].max())


@pytest.mark.backends
@pytest.mark.slow
def test_fine_tune_runs_a_second_phase(tiny_project):
    assert run_stage(train, "digits_transfer") is None

    report = read_train_report(tiny_project, "digits_transfer")
    assert report["epochs_run"] == 2 and report["weights"] == "none"
    lines = (tiny_project / "reports/train/digits_transfer/5/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert [line.split("\t")[0] for line in lines[1:]] == ["0", "1"], "both phases log to one curve"


def test_unfreeze_top_layers_of_a_pretrained_backbone(tmp_path):
    backbone_file = tmp_path / "pretrained.weights.h5"
    keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None,
                                 input_shape=(32, 32, 3)).save_weights(backbone_file)
    from stages.models import get_builder
    model = get_builder("transfer")((32, 32, 3), 3, backbone="MobileNet", alpha=0.25, weights=str(backbone_file))
    backbone = model.get_layer("backbone")
    assert not any(layer.trainable for layer in backbone.layers)

    train.unfreeze_top_layers(model, 12)

    top = backbone.layers[-12:]
    assert not any(layer.trainable for layer in backbone.layers[:-12])
    assert [layer.trainable for layer in top] == [not isinstance(layer, keras.layers.BatchNormalization)
                                                  for layer in top]
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in top)


@pytest.mark.backends
def test_fine_tuning_keeps_batch_norm_in_inference_mode():
    """Keras 3 passes fit's training=True into a backbone called with training=False; a frozen batch
    norm is what keeps its statistics."""
    images = keras.Input((16, 16, 3))
    x = images
    for index in range(3):
        x = keras.layers.Conv2D(8, 3, padding="same", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU()(x)
    backbone = keras.Model(images, x, name="backbone")
    backbone.trainable = False
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D()(backbone(inputs, training=False))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(features))
    train.unfreeze_top_layers(model, 6)
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [[weight.numpy().copy() for weight in layer.weights] for layer in norms]
    kernel = backbone.get_layer("conv2").kernel.numpy().copy()

    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    data = np.random.default_rng(0).random((16, 16, 16, 3)).astype("float32") * 4 + 1
    model.fit(data, np.eye(3)[np.arange(16) % 3], epochs=2, batch_size=8, verbose=0)

    for layer, weights in zip(norms, before):
        for weight, value in zip(layer.weights, weights):
            np.testing.assert_array_equal(weight.numpy(), value, err_msg=f"{weight.path} changed")
    assert not np.allclose(backbone.get_layer("conv2").kernel.numpy(), kernel), "the unfrozen convolution trains"


def model_weights(project, name, seed=5):
    return [w.numpy() for w in keras.models.load_model(project / "models" / name / f"{seed}.keras", compile=False).weights]


@pytest.mark.backends
@pytest.mark.slow
def test_same_seed_same_model_other_seed_other_model(tiny_project):
    assert run_stage(train, "digits_cnn") is None
    first_weights, first_report = model_weights(tiny_project, "digits_cnn"), read_train_report(tiny_project, "digits_cnn")
    first_file = file_sha256(tiny_project / "models/digits_cnn/5.keras")
    assert run_stage(train, "digits_cnn") is None
    second_weights, second_report = model_weights(tiny_project, "digits_cnn"), read_train_report(tiny_project, "digits_cnn")
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_array_equal(a, b)
    assert file_sha256(tiny_project / "models/digits_cnn/5.keras") == first_file, "same weights, same file bytes"
    for key in ("best_epoch", "best_val_accuracy", "best_val_loss"):
        assert first_report[key] == second_report[key]

    assert run_stage(train, "digits_cnn", "6") is None, "another training seed: its own model file, beside seed 5's"
    third_weights, third_report = model_weights(tiny_project, "digits_cnn", 6), read_train_report(tiny_project, "digits_cnn", 6)
    assert not all(np.array_equal(a, b) for a, b in zip(first_weights, third_weights))
    assert third_report["seed"] == 6 and file_sha256(tiny_project / "models/digits_cnn/5.keras") == first_file


def test_balanced_class_weight():
    labels = encode_labels(np.array([0, 0, 0, 1]), 2)
    assert train.balanced_class_weight(labels) == {0: pytest.approx(4 / 6), 1: pytest.approx(2.0)}


@pytest.mark.parametrize("change, expected", [
    (lambda p: p["models"]["faces_cnn"].update(dataset="cats"), "models.faces_cnn.dataset: unknown dataset 'cats'"),
    (lambda p: p["models"]["faces_cnn"].update(builder="vgg"), "models.faces_cnn.builder: unknown builder 'vgg'"),
    (lambda p: p["models"]["faces_cnn"].update(train={"epochs": -1}), "models.faces_cnn.train.epochs"),
    (lambda p: p["models"]["faces_cnn"].update(train={"epoch": 3}), "unknown key(s) epoch"),
    (lambda p: p["train"].update(optimizer="adamax"), "train.optimizer) must be one of adam"),
    (lambda p: p["train"].update(distribution="mirrored"), "mirrored is not offered: Keras's DataParallel"),
    (lambda p: p["train"].update(distribution="data_parallel"), "data_parallel needs train.backend: jax"),
    (lambda p: p["train"].update(backend="jax"), "Keras already runs on tensorflow in this process, not jax"),
    (lambda p: p["train"].update(backend="torch"), "train.backend) must be one of tensorflow, jax, got 'torch'"),
    (lambda p: p["models"]["faces_cnn"].update(network={"augmentation": {"sharpen": 1}}), "unknown augmentation key(s) sharpen"),
    (lambda p: p["models"]["faces_cnn"].update(dataset="digits"), "happy_cnn is a binary classifier; the dataset has 3"),
    (lambda p: p["models"]["faces_cnn"].update(network={"filterz": 3}), "unexpected keyword argument 'filterz'"),
])
def test_bad_params_fail_before_training(tiny_project, change, expected):
    params = load_params()
    change(params)
    save_params(tiny_project, params)

    message = run_stage(train, "faces_cnn")

    assert message is not None and message.startswith("train faces_cnn: error:")
    assert expected in message
    assert not (tiny_project / "models/faces_cnn/5.keras").exists()
    assert not (tiny_project / "reports/train/faces_cnn").exists(), "no training started"


def test_unknown_model_lists_the_known_ones(tiny_project):
    assert "unknown model 'gpt': params.yaml defines digits_cnn, digits_transfer, faces_cnn" in run_stage(train, "gpt")


def test_labels_that_do_not_fit_the_declared_classes(tiny_project):
    params = load_params()
    params["datasets"]["digits"]["classes"] = {"0": "0", "1": "1", "2": "2", "3": "3"}
    save_params(tiny_project, params)

    assert "labels 3 wide, but params.yaml declares 4 classes" in run_stage(train, "digits_cnn")


def train_in_subprocess(project, name):
    """Run the train stage in a fresh process, as `dvc repro` does (the backend's global settings included)."""
    result = run_python("-m", "stages.train", name, cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    return read_train_report(project, name), model_weights(project, name)


@pytest.mark.slow
def test_jit_compile_trains_with_xla_and_repeats_on_the_cpu(tiny_project):
    """Keras drops XLA without a word while op determinism is on; the report says what really ran."""
    params = load_params()
    params["train"]["jit_compile"] = True
    save_params(tiny_project, params)

    first_report, first_weights = train_in_subprocess(tiny_project, "digits_cnn")
    second_report, second_weights = train_in_subprocess(tiny_project, "digits_cnn")

    assert first_report["jit_compile"] is True and first_report["deterministic_ops"] is False
    for first, second in zip(first_weights, second_weights):
        np.testing.assert_array_equal(first, second)
