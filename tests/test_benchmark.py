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
    run_module("benchmarks.benchmark", "--models", "digits_cnn", "--epochs", "2", "--variant-models", "digits_cnn",
               "--variant-epochs", "2", "--skip-pipeline", "--output", "out/bench", cwd=tiny_project)

    results = json.loads((tiny_project / "out/bench.json").read_text())
    entry = results["speed"]["digits_cnn"]
    assert len(entry["ours"]["epoch_seconds"]) == len(entry["keras"]["epoch_seconds"]) == 2
    assert entry["ratio"] == round(entry["ours"]["images_per_second"] / entry["keras"]["images_per_second"], 3)
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
    assert not (tiny_project / "models").exists(), "the runs happen in scratch folders, not in the project"


@pytest.mark.slow
def test_unknown_model_fails_before_anything_runs(tiny_project):
    result = run_python("-m", "benchmarks.benchmark", "--models", "gpt", "--skip-pipeline", cwd=tiny_project)
    assert result.returncode == 1 and "unknown model 'gpt'" in result.stderr


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
