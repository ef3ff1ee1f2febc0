"""The benchmark command on tiny data: what it measures and writes (not how fast anything is)."""

import json
import os
import sys

import numpy as np
import pytest
from helpers import REPO_ROOT, run_python

from benchmarks import benchmark
from stages.config import load_params, model_spec


def run_module(module, *args, cwd, env=None):
    result = run_python("-m", module, *args, cwd=cwd, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_speed_part_compares_our_stage_with_plain_keras(tiny_project):
    run_module("benchmarks.benchmark", "--models", "digits_cnn", "--epochs", "2", "--repeats", "1",
               "--variant-models", "digits_cnn", "--variant-epochs", "2", "--parts", "speed,variants",
               "--output", "out/bench", cwd=tiny_project)

    results = json.loads((tiny_project / "out/bench.json").read_text())
    entry = results["speed"]["digits_cnn"]
    assert len(entry["ours"]["runs"]) == len(entry["keras"]["runs"]) == 1
    assert len(entry["ours"]["epoch_seconds"]) == len(entry["keras"]["epoch_seconds"]) == 2
    assert entry["ratio"] == round(entry["ours"]["images_per_second"] / entry["keras"]["images_per_second"], 3)
    assert entry["ratio_range"][0] == entry["ratio_range"][1] == pytest.approx(entry["ratio"], abs=1e-3)
    assert set(entry["variants"]) == {"xla", "mixed_precision"}
    assert entry["variants"]["xla"]["jit_compile"] is True and entry["ours"]["jit_compile"] is False
    assert entry["variants"]["mixed_precision"]["mixed_precision"] is True
    assert 0 < entry["ours"]["training_peak_rss_mib"] <= entry["ours"]["peak_rss_mib"]
    assert results["tensorflow_import_rss_mib"] > 0
    assert results["machine"]["cores"] >= 1 and results["peak"]["measured_matmul_flops"] > 0
    report = (tiny_project / "out/bench.md").read_text()
    speed_row = next(line for line in report.splitlines() if line.startswith("| digits_cnn "))
    cells = [cell.strip() for cell in speed_row.split("|")[1:-1]]
    assert cells[:3] == ["digits_cnn", "8", f"{entry['ours']['images_per_second']:.0f}"]
    assert f"{entry['ours']['training_peak_rss_mib']:.0f} / {entry['ours']['peak_rss_mib']:.0f}" in cells
    assert "## XLA and mixed precision" in report
    assert set(results["parts"]) == {"speed", "variants"} and "Measured at commit" in report
    assert not (tiny_project / "models").exists(), "the runs happen in scratch folders, not in the project"


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


def scale_entry(images, test_images, train_images_per_second, train_peak, evaluate_seconds, evaluate_peak):
    stage = {"seconds": 10.0, "peak_rss_mib": 500.0}
    return {"images": images, "test_images": test_images, "download": stage, "preprocess": stage,
            "train": {**stage, "images": images - test_images, "images_per_second": train_images_per_second,
                      "peak_rss_mib": train_peak},
            "evaluate": {"seconds": evaluate_seconds, "peak_rss_mib": evaluate_peak}}


def test_scale_ratios_judge_memory_and_time_per_image_against_the_targets():
    small = scale_entry(1000, 200, 500.0, 800.0, 20.0, 700.0)
    within = {"1x": small, "10x": scale_entry(10000, 2000, 450.0, 1000.0, 200.0, 900.0)}
    rows = {row["stage"]: row for row in benchmark.scale_ratio_rows(within)}
    assert rows["train"]["peak memory 10x / 1x"] == "1.25" and rows["train"]["time per image 10x / 1x"] == "1.11"
    assert rows["train"]["target (memory < 1.3, time within 20 %)"] == "met"
    assert rows["evaluate"]["time per image 10x / 1x"] == "1.00"
    assert rows["preprocess"]["target (memory < 1.3, time within 20 %)"] == ""  # no target for it
    grown = {"1x": small, "10x": scale_entry(10000, 2000, 500.0, 1100.0, 300.0, 700.0)}
    rows = {row["stage"]: row for row in benchmark.scale_ratio_rows(grown)}
    assert rows["train"]["target (memory < 1.3, time within 20 %)"] == "missed"  # memory 1.375x
    assert rows["evaluate"]["target (memory < 1.3, time within 20 %)"] == "missed"  # time 1.5x


def test_gpu_section_shows_each_variant_and_resnet50_flops_against_the_peak():
    run = {"date": "2026-01-01", "images": 64, "epochs": 2, "matmul_size": 8192,
           "machine": {"device": "Some GPU", "keras": "3", "backend": "jax", "backend_version": "1", "python": "3"},
           "peak": {"float32": 50e12, "bfloat16": 800e12},
           "models": {"tiny_resnet50": {
               "as_configured": {"images_per_second": 100.0, "jit_compile": False, "batch_size": 32},
               "float32_xla": {"images_per_second": 2000.0, "jit_compile": True, "batch_size": 32,
                               "forward_flops_per_image": 0.5e9},
               "mixed_bfloat16_xla": {"error": "ValueError: no", "batch_size": 32}}}}
    text = "\n".join(benchmark.gpu_section({"runs": [run]}))
    row = next(line for line in text.splitlines() if line.startswith("| tiny_resnet50"))
    assert [cell.strip() for cell in row.split("|")[1:-1]] == ["tiny_resnet50", "32", "100 (no XLA)", "2,000",
                                                               "ValueError: no"]
    assert "3.00 TFLOP/s in float32, 6.0 % of the measured float32 peak" in text  # 3 x 0.5 GFLOPs x 2000/s


def test_a_run_of_some_parts_keeps_the_figures_of_the_others(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"parts": {"noop": {"commit": "abc", "date": "2026-01-01"}},
                                "noop": {"median_seconds": 1.5}}))
    assert benchmark.earlier_results(path)["noop"] == {"median_seconds": 1.5}
    path.write_text(json.dumps({"speed": {}}))  # written before parts had dates: nothing kept
    assert benchmark.earlier_results(path) == {"parts": {}}


def test_forward_flops_grow_with_the_image_area(tiny_project):
    spec = model_spec(load_params(), "digits_cnn")
    small = benchmark.forward_flops_per_image(spec, (16, 16, 3))
    large = benchmark.forward_flops_per_image(spec, (32, 32, 3))
    assert small > 0
    assert large / small == pytest.approx(4, rel=0.15), "convolutions dominate: 4x the pixels, ~4x the FLOPs"


def test_runs_use_this_interpreter_even_outside_its_virtual_environment(monkeypatch):
    """dvc.yaml's commands say `python`: without this, dvc repro found one without the project's packages."""
    monkeypatch.setenv("PATH", "/usr/bin")
    env = benchmark.python_env()
    assert env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)
    assert env["PYTHONPATH"] == str(REPO_ROOT)


def test_scale_dataset_writes_changed_copies_of_every_image(tmp_path):
    from PIL import Image

    from benchmarks import scale_dataset

    rng = np.random.default_rng(0)
    for folder, mode in (("no", "L"), ("yes", "RGB")):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for index in range(3):
            shape = (16, 16) if mode == "L" else (16, 16, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(tmp_path / "raw" / folder / f"{index}.png")

    written = scale_dataset.scale_dataset(tmp_path / "raw", tmp_path / "big", factor=3, seed=1, flip=True, workers=1)

    copies = sorted(path.relative_to(tmp_path / "big").as_posix() for path in (tmp_path / "big").rglob("*.png"))
    assert written == 18 and copies == [f"{folder}/{index}_{copy}.png" for folder in ("no", "yes")
                                        for index in range(3) for copy in range(3)]
    for folder in ("no", "yes"):
        original = np.asarray(Image.open(tmp_path / "raw" / folder / "0.png"), dtype=np.float32)
        variants = [np.asarray(Image.open(tmp_path / "big" / folder / f"0_{copy}.png"), dtype=np.float32)
                    for copy in range(3)]
        assert all(variant.shape == original.shape for variant in variants), "same size and colour mode"
        assert all(np.abs(variant - original).mean() > 0 for variant in variants), "no copy is the original"
        assert np.abs(variants[0] - variants[1]).mean() > 0, "copies differ from each other"
    first = {path.name: path.read_bytes() for path in (tmp_path / "big").rglob("*.png")}
    scale_dataset.scale_dataset(tmp_path / "raw", tmp_path / "again", factor=3, seed=1, flip=True, workers=2)
    assert first == {path.name: path.read_bytes() for path in (tmp_path / "again").rglob("*.png")}, "seeded"


def test_scale_dataset_changes_stay_small():
    from benchmarks.scale_dataset import changed_copy

    smooth = np.tile(np.linspace(60, 190, 32, dtype=np.float32), (32, 1)).astype(np.uint8)
    differences = [np.abs(changed_copy(smooth, np.random.default_rng(seed), flip=False).astype(float) - smooth).mean()
                   for seed in range(20)]
    assert 0 < np.mean(differences) < 25, "a copy is a slightly changed image, not noise"


def test_scale_dataset_refuses_a_missing_source(tmp_path):
    from benchmarks.scale_dataset import scale_dataset

    with pytest.raises(SystemExit, match="is not a folder of class folders"):
        scale_dataset(tmp_path / "nowhere", tmp_path / "out", factor=2)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_backend_speed_measures_each_variant_on_the_installed_backend(tiny_project):
    """The GPU figures' command, here on TensorFlow's CPU backend at a tiny size."""
    run_module("benchmarks.backend_speed", "--output", "out/gpu.json", "--models", "digits_cnn", "--images", "32",
               "--epochs", "1", "--matmul-size", "64", "--variants", "as_configured,float32_xla,mixed_bfloat16_xla",
               cwd=tiny_project)
    results = json.loads((tiny_project / "out/gpu.json").read_text())
    assert results["machine"]["backend"] == "tensorflow" and results["peak"]["float32"] > 0
    variants = results["models"]["digits_cnn"]
    assert set(variants) == {"as_configured", "float32_xla", "mixed_bfloat16_xla"}
    for figures in variants.values():
        assert figures["images_per_second"] > 0 and len(figures["epoch_seconds"]) == 2
    assert variants["float32_xla"]["jit_compile"] is True


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
