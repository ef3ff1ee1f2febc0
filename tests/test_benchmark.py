"""The benchmark command on tiny data: what it measures and writes (not how fast anything is)."""

import json
import os
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, on_jax, run_python, save_params

from benchmarks import benchmark
from benchmarks.backend_speed import VARIANTS
from stages.config import load_params, model_spec


def run_module(module, *args, cwd, env=None):
    result = run_python("-m", module, *args, cwd=cwd, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.backends
@pytest.mark.slow
def test_speed_and_variants_parts_compare_our_stage_with_plain_keras(tiny_project):
    backend = "jax" if on_jax() else "tensorflow"  # each test pass times its own backend
    other = {"jax": "tensorflow", "tensorflow": "jax"}[backend]
    side = {"images_per_second": 10.0, "steady_images_per_second": 12.0, "peak_rss_mib": 900.0, "training_peak_rss_mib": 800.0}
    earlier = {"batch_size": 8, "ours": side, "keras": side, "ratio": 1.0, "steady_ratio": 1.0, "ratio_range": [1.0, 1.0]}
    (tiny_project / "out").mkdir()
    (tiny_project / "out/bench.json").write_text(json.dumps({
        "parts": {"speed": {"commit": "abc1234", "date": "2026-01-01"}}, "speed": {other: {"digits_cnn": earlier}},
        "speed_runs": {other: {"commit": "abc1234", "date": "2026-01-01", "epochs": 3, "repeats": 2}}}))
    run_module("benchmarks.benchmark", "--models", "digits_cnn", "--epochs", "2", "--repeats", "1", "--variant-images",
               "16", "--parts", "speed,variants", "--backends", backend, "--output", "out/bench", cwd=tiny_project)

    results = json.loads((tiny_project / "out/bench.json").read_text())
    assert results["speed"][other] == {"digits_cnn": earlier}, "the backend not timed now keeps its figures"
    assert results["speed_runs"][other]["commit"] == "abc1234" and results["speed_runs"][backend]["repeats"] == 1
    entry = results["speed"][backend]["digits_cnn"]
    assert entry["ours"]["runs"][0]["images_per_second"] > 0
    assert len(entry["ours"]["runs"]) == len(entry["keras"]["runs"]) == 1
    assert len(entry["ours"]["epoch_seconds"]) == len(entry["keras"]["epoch_seconds"]) == 2
    assert entry["ratio"] == round(entry["ours"]["images_per_second"] / entry["keras"]["images_per_second"], 3)
    assert entry["ratio_range"][0] == entry["ratio_range"][1] == pytest.approx(entry["ratio"], abs=1e-3)
    # Both are the one process's VmHWM, read at the end of training and at exit; Linux keeps RSS counts
    # per thread and folds them in late, so an earlier read can exceed a later one by a fraction of a MiB.
    assert 0 < entry["ours"]["training_peak_rss_mib"] <= entry["ours"]["peak_rss_mib"] + 1
    assert results["machine"]["cores"] >= 1 and results["speed_runs"][backend]["peak"] > 0
    variants = results["variants"][backend]["models"]["digits_cnn"]
    assert set(variants) == set(VARIANTS)
    assert variants["float32_xla"]["jit_compile"] is True and variants["float32_no_xla"]["jit_compile"] is False
    report = (tiny_project / "out/bench.md").read_text()
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in report.splitlines() if line.startswith("|")]
    cells = next(row for row in rows if row[:2] == [backend, "digits_cnn"])  # cells padded to their column's width
    assert cells[:4] == [backend, "digits_cnn", "8", f"{entry['ours']['images_per_second']:.0f}"]
    assert f"{entry['ours']['training_peak_rss_mib']:.0f} / {entry['ours']['peak_rss_mib']:.0f}" in cells
    assert "## Precision and XLA" in report and report.count("Measured at commit") == 1, "variants' stamp"
    assert f"- {other}: measured at commit abc1234 on 2026-01-01, 3 epochs, 2 runs per side" in report
    assert f"- {backend}: measured at commit " in report and "2 epochs, 1 run per side" in report
    assert f"({results['machine']['device']}), 2 epochs" in report, "a new stamp names the machine it ran on"
    assert "peak" not in results, "the peak is kept with the backend run it was measured beside, not apart"
    assert "## JAX against TensorFlow" not in report, "backends timed in different runs are not set side by side"
    assert set(results["parts"]) == {"speed", "variants"}
    assert not (tiny_project / "models").exists(), "the runs happen in scratch folders, not in the project"


def test_backend_rows_give_jax_over_tensorflow_for_models_timed_on_both():
    def timed(ours, plain):
        return {"ours": {"images_per_second": ours}, "keras": {"images_per_second": plain}}

    speed = {"tensorflow": {"a": timed(100, 200), "b": timed(50, 50)}, "jax": {"a": timed(150, 100)}}
    assert list(benchmark.backend_rows(speed)) == [
        {"model": "a", "our stage JAX / TensorFlow": "1.50", "plain Keras JAX / TensorFlow": "0.50"}]
    assert list(benchmark.backend_rows({"tensorflow": speed["tensorflow"]})) == [], "one backend: nothing to set side by side"


def test_the_keras_baseline_trains_what_the_train_stage_sets_up(tiny_project, monkeypatch):
    """Same model, training and validation images, class weights and compile settings as the stage's own setup."""
    import keras

    from stages import train

    params = load_params()
    params["models"]["faces_cnn"]["train"] = {"class_weight": "balanced", "epochs": 1, "learning_rate": 0.003}
    save_params(tiny_project, params)
    spec = model_spec(params, "faces_cnn")
    setup = train.prepare_training(spec)
    seen = {}

    def fit(model, x, y, **arguments):
        seen.update(model=model, x=x, y=y, **arguments)
        return keras.Model.fit.__wrapped__(model, x, y, **arguments)

    fit.__wrapped__ = keras.Model.fit
    monkeypatch.setattr(keras.Model, "fit", fit)
    benchmark.keras_baseline("faces_cnn")

    assert np.array_equal(seen["x"], setup.images[setup.train_indices])
    assert np.array_equal(seen["validation_data"][1], setup.labels[setup.validation_indices])
    assert seen["class_weight"] == setup.class_weight is not None, "class_weight: balanced reaches the baseline"
    assert seen["batch_size"] == spec.train["batch_size"] and seen["epochs"] == 1
    assert [layer.name for layer in seen["model"].layers] == [layer.name for layer in setup.model.layers]
    assert float(seen["model"].optimizer.learning_rate) == pytest.approx(0.003)
    assert len(json.loads((tiny_project / "baseline.json").read_text())["epoch_seconds"]) == 1


def test_repeats_alternate_which_side_runs_first():
    assert benchmark.run_order(3) == [("ours", "keras"), ("keras", "ours"), ("ours", "keras")]


def speed_run(images_per_second, steady, peak):
    return {"images_per_second": images_per_second, "steady_images_per_second": steady, "fit_seconds": 10.0,
            "process_seconds": 20.0, "peak_rss_mib": peak, "epoch_seconds": [2.0, 1.0]}


def test_repeated_runs_compare_by_their_medians_and_keep_each_pairs_ratio():
    ours = [speed_run(90, 100, 700), speed_run(110, 120, 750), speed_run(100, 300, 720)]
    plain = [speed_run(100, 100, 900), speed_run(100, 100, 800), speed_run(125, 150, 850)]
    compared = benchmark.compare_sides(ours, plain)
    assert compared["ours"]["images_per_second"] == 100 and compared["keras"]["images_per_second"] == 100
    assert compared["ours"]["steady_images_per_second"] == 120 and compared["keras"]["steady_images_per_second"] == 100
    assert compared["ratio"] == 1.0 and compared["steady_ratio"] == 1.2
    assert compared["ratio_range"] == [0.8, 1.1]  # 100/125 and 110/100
    assert compared["ours"]["peak_rss_mib"] == 750 and compared["keras"]["peak_rss_mib"] == 900
    assert len(compared["ours"]["runs"]) == 3


@pytest.mark.slow
def test_unknown_model_fails_before_anything_runs(tiny_project):
    result = run_python("-m", "benchmarks.benchmark", "--models", "gpt", "--parts", "speed", cwd=tiny_project)
    assert result.returncode == 1 and "unknown model 'gpt'" in result.stderr


def scale_entry(factor, images, test_images, train_images_per_second, train_peak, evaluate_seconds):
    stage = {"seconds": 10.0, "peak_rss_mib": 500.0}
    return {"factor": factor, "images": images, "test_images": test_images, "download": stage, "preprocess": stage,
            "train": {**stage, "images": images - test_images, "images_per_second": train_images_per_second,
                      "peak_rss_mib": train_peak}, "evaluate": {"seconds": evaluate_seconds, "peak_rss_mib": 700.0}}


def test_scale_rows_give_each_size_and_the_largest_over_the_smallest():
    scale = {"1x": scale_entry(1, 1000, 200, 500.0, 800.0, 20.0), "10x": scale_entry(10, 10000, 2000, 450.0, 1000.0, 300.0)}
    rows = {row["stage"]: row for row in benchmark.scale_rows(scale)}
    assert rows["train"]["1x images"] == "800" and rows["train"]["10x images"] == "8,000"
    assert rows["train"]["1x ms/image"] == "2.00", "train by its fit speed, 500 images/s"
    assert rows["train"]["memory ratio"] == "1.25" and rows["train"]["time per image ratio"] == "1.11"
    assert rows["evaluate"]["1x ms/image"] == "100.00" and rows["evaluate"]["time per image ratio"] == "1.50"
    assert rows["download"]["10x ms/image"] == "1.00" and rows["download"]["time per image ratio"] == "0.10"


def test_gpu_runs_show_each_variant_and_resnet50_flops_against_the_peak():
    run = {"date": "2026-01-01", "images": 64, "epochs": 2, "matmul_size": 8192,
           "machine": {"device": "Some GPU", "keras": "3", "backend": "jax", "backend_version": "1", "python": "3"},
           "peak": {"float32": 50e12, "bfloat16": 800e12},
           "models": {"tiny_resnet50": {
               "as_configured": {"images_per_second": 100.0, "jit_compile": False, "batch_size": 32},
               "float32_xla": {"images_per_second": 2000.0, "jit_compile": True, "batch_size": 32,
                               "forward_flops_per_image": 0.5e9},
               "mixed_bfloat16_xla": {"error": "ValueError: no", "batch_size": 32}}}}
    row = next(benchmark.variant_rows(run))
    assert list(row.values()) == ["jax", "tiny_resnet50", 32, "100 (no XLA)", "2,000", "ValueError: no"]
    lines = list(benchmark.flops_lines({"peak": 1e11, "gpu": {"runs": [run]}}))
    assert lines == ["- tiny_resnet50 on Some GPU, float32_xla: 3.00 TFLOP/s, 6.0 % of the measured float32 peak"]


def test_a_run_of_some_parts_keeps_the_figures_of_the_others(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"parts": {"noop": {"commit": "abc", "date": "2026-01-01"}, "pipeline": {}},
                                "noop": {"median_seconds": 1.5}, "tensorflow_import_rss_mib": 600}))
    assert benchmark.earlier_results(path) == {"parts": {"noop": {"commit": "abc", "date": "2026-01-01"}},
                                               "noop": {"median_seconds": 1.5}}, "parts no longer measured go"
    assert benchmark.earlier_results(tmp_path / "none.json") == {"parts": {}}


def test_figures_from_before_both_backends_were_timed_read_as_tensorflow_s(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"parts": {"speed": {}, "variants": {}}, "speed": {"m": {"ours": {}, "keras": {}}},
                                "variants": {"machine": {"backend": "tensorflow"}, "models": {}}}))
    earlier = benchmark.earlier_results(path)
    assert earlier["speed"] == {"tensorflow": {"m": {"ours": {}, "keras": {}}}}
    assert earlier["speed_runs"] == {"tensorflow": {"epochs": None, "repeats": None}}
    assert earlier["variants"] == {"tensorflow": {"machine": {"backend": "tensorflow"}, "models": {}}}


def test_each_backends_flops_are_set_against_the_peak_measured_in_its_own_run():
    """Backends timed on different days may have run on different CPUs: the latest peak is not theirs."""
    resnet = {"m_resnet50": {"achieved_flops": 20e9, "forward_flops_per_image": 0.5e9}}
    results = {"peak": 400e9, "speed": {"tensorflow": resnet, "jax": resnet, "old": resnet}, "speed_runs": {
        "tensorflow": {"device": "CPU A", "peak": 100e9}, "jax": {"device": "CPU B", "peak": 200e9}, "old": {}}}
    assert list(benchmark.flops_lines(results)) == [
        "- m_resnet50, our stage on tensorflow (CPU A): 0.50 GFLOPs per image forward, 20.0 GFLOP/s, "
        "20 % of the float32 peak measured in that run",
        "- m_resnet50, our stage on jax (CPU B): 0.50 GFLOPs per image forward, 20.0 GFLOP/s, "
        "10 % of the float32 peak measured in that run",
        "- m_resnet50, our stage on old on this machine: 0.50 GFLOPs per image forward, 20.0 GFLOP/s"]


def test_stages_run_reads_dvcs_lines_in_order():
    output = "Running stage 'train@b':\n> python -m stages.train b\nRunning stage 'compare':\nStage 'x' didn't change\n"
    assert benchmark.stages_run(output) == ["train@b", "compare"]


def test_forward_flops_grow_with_the_image_area(tiny_project):
    from benchmarks.backend_speed import forward_flops
    from stages.train import build_model

    spec = model_spec(load_params(), "digits_cnn")
    small = forward_flops(build_model(spec, (16, 16, 3)), (16, 16, 3))
    large = forward_flops(build_model(spec, (32, 32, 3)), (32, 32, 3))
    assert small > 0
    assert large / small == pytest.approx(4, rel=0.15), "convolutions dominate: 4x the pixels, ~4x the FLOPs"


def test_runs_use_this_interpreter_even_outside_its_virtual_environment(monkeypatch):
    """dvc.yaml's commands say `python`: without this, dvc repro found one without the project's packages."""
    monkeypatch.setenv("PATH", "/usr/bin")
    env = benchmark.python_env()
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert env["PYTHONPATH"] == str(REPO_ROOT)


def test_peak_memory_is_the_childs_own_not_the_benchmarks(tmp_path):
    """Linux carries a parent's peak into its children's rusage; the benchmark must not report that."""
    ballast = bytearray(300 * 2**20)  # this process now peaks above 300 MiB
    ballast[::4096] = b"x" * len(ballast[::4096])
    env = benchmark.python_env()
    _, small, _ = benchmark.run_measured([sys.executable, "-c", "pass"], tmp_path, env)
    grow = "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"
    _, large, _ = benchmark.run_measured([sys.executable, "-c", grow], tmp_path, env)
    assert small < 100, "a bare interpreter"
    assert 200 < large < 300
    del ballast


def test_a_speed_part_stamped_as_a_whole_gives_each_backend_its_stamp(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"parts": {"speed": {"commit": "abc", "date": "2026-01-01"}}, "epochs": 3, "repeats": 1,
                                "speed": {"tensorflow": {"m": {"ours": {"images_per_second": 100}, "keras": {"images_per_second": 50}}},
                                          "jax": {"m": {"ours": {"images_per_second": 25}, "keras": {"images_per_second": 25}}}}}))
    stamp = {"commit": "abc", "date": "2026-01-01", "epochs": 3, "repeats": 1}
    earlier = benchmark.earlier_results(path)
    assert earlier["speed_runs"] == {"tensorflow": stamp, "jax": stamp}
    assert earlier["backend_ratios"] == {"commit": "abc", "date": "2026-01-01", "rows": [
        {"model": "m", "our stage JAX / TensorFlow": "0.25", "plain Keras JAX / TensorFlow": "0.50"}]}, "one run timed both"
