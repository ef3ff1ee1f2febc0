"""tools/scale_dataset.py: a class-folder dataset N times larger, each copy changed a little, the same every time."""

import numpy as np
import pytest
from PIL import Image

from tools.scale_dataset import changed_copy, scale_dataset


def test_scale_dataset_writes_changed_copies_of_every_image(tmp_path):
    rng = np.random.default_rng(0)
    for folder, mode in (("no", "L"), ("yes", "RGB")):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for index in range(3):
            shape = (16, 16) if mode == "L" else (16, 16, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(tmp_path / "raw" / folder / f"{index}.png")

    written = scale_dataset(tmp_path / "raw", tmp_path / "big", factor=3, seed=1, flip=True, workers=1)

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
    scale_dataset(tmp_path / "raw", tmp_path / "again", factor=3, seed=1, flip=True, workers=2)
    assert first == {path.name: path.read_bytes() for path in (tmp_path / "again").rglob("*.png")}, "seeded"


def test_scale_dataset_changes_stay_small():
    smooth = np.tile(np.linspace(60, 190, 32, dtype=np.float32), (32, 1)).astype(np.uint8)
    differences = [np.abs(changed_copy(smooth, np.random.default_rng(seed), flip=False).astype(float) - smooth).mean()
                   for seed in range(20)]
    assert 0 < np.mean(differences) < 25, "a copy is a slightly changed image, not noise"


def test_scale_dataset_refuses_a_missing_source(tmp_path):
    with pytest.raises(SystemExit, match="is not a folder of class folders"):
        scale_dataset(tmp_path / "nowhere", tmp_path / "out", factor=2)
    assert not (tmp_path / "out").exists()
