"""Make a class-folder dataset N times the size of a real one (a user command for the scale benchmark).

Every image file under SOURCE (other files are left out) is written N times under OUTPUT, at the
same relative path with `_<k>` added to its name, each copy changed a little at random: shifted by
up to 4 pixels, brightened or darkened by up to 10 %, its contrast changed by up to 10 %, mirrored
half the time (with --flip), and given faint noise. The copies keep their class but are not pixel-identical, so a model cannot
learn the larger set by recognising repeats. Each copy's changes are drawn from (seed, file, copy),
so the same command gives the same files.

    python -m tools.scale_dataset data/raw/happy /tmp/happy-10x --factor 10 --flip

OUTPUT is written whole or not at all. Point a dataset block's source at it (docs/benchmarks.md).
"""

import argparse
import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from stages.files import staged_path

log = logging.getLogger("scale_dataset")

MAX_SHIFT = 4
BRIGHTNESS = 0.10
CONTRAST = 0.10
NOISE = 3.0  # standard deviation, in 0-255 pixel levels
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def changed_copy(pixels, rng, flip):
    """A uint8 image like `pixels`, shifted, relit and re-noised by draws from rng."""
    image = pixels.astype(np.float32)
    height, width = image.shape[:2]
    dy, dx = rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=2)
    padding = ((MAX_SHIFT, MAX_SHIFT), (MAX_SHIFT, MAX_SHIFT)) + ((0, 0),) * (image.ndim - 2)
    padded = np.pad(image, padding, mode="reflect")
    image = padded[MAX_SHIFT + dy:MAX_SHIFT + dy + height, MAX_SHIFT + dx:MAX_SHIFT + dx + width]
    if flip and rng.random() < 0.5:
        image = image[:, ::-1]
    mean = image.mean()
    image = (image - mean) * (1 + rng.uniform(-CONTRAST, CONTRAST)) + mean
    image = image * (1 + rng.uniform(-BRIGHTNESS, BRIGHTNESS)) + rng.normal(0, NOISE, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def file_seed(seed, relative_path):
    """An integer drawn from the seed and a file's relative path, so files can be handled in any order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{relative_path}".encode()).digest()[:8], "little")


def write_copies(task):
    """Write `factor` changed copies of one source image; return how many were written."""
    source, target_dir, relative, factor, seed, flip = task
    with Image.open(source) as opened:
        image_format = opened.format
        pixels = np.asarray(opened.convert("L" if opened.mode == "L" else "RGB"))  # grey stays grey
    relative_path, first_draw = Path(relative), file_seed(seed, relative)
    for copy in range(factor):
        rng = np.random.default_rng([first_draw, copy])
        path = target_dir / relative_path.with_name(f"{relative_path.stem}_{copy}{relative_path.suffix}")
        Image.fromarray(changed_copy(pixels, rng, flip)).save(path, format=image_format or "PNG", quality=95)
    return factor


def scale_dataset(source, output, factor, seed=0, flip=False, workers=None):
    """Write `factor` changed copies of every image under source to output; return the number written."""
    source, output = Path(source), Path(output)
    if not source.is_dir():
        raise SystemExit(f"scale_dataset: error: {source} is not a folder of class folders")
    if factor < 1:
        raise SystemExit(f"scale_dataset: error: --factor must be at least 1, got {factor}")
    files = sorted(path for path in source.rglob("*")
                   if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."))
    if not files:
        raise SystemExit(f"scale_dataset: error: {source} holds no image files")
    written = 0
    relatives = [path.relative_to(source) for path in files]
    with staged_path(output, directory=True) as staging:
        for folder in sorted({relative.parent for relative in relatives}):
            (staging / folder).mkdir(parents=True, exist_ok=True)
        tasks = [(path, staging, relative.as_posix(), factor, seed, flip) for path, relative in zip(files, relatives)]
        with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
            for done, count in enumerate(pool.map(write_copies, tasks, chunksize=64), start=1):
                written += count
                if done % max(1, len(tasks) // 10) == 0 or done == len(tasks):
                    log.info("%d of %d source images done, %d images written", done, len(tasks), written)
    return written


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a folder of class folders (e.g. data/raw/happy)")
    parser.add_argument("output", help="the folder to write; replaced whole when complete")
    parser.add_argument("--factor", type=int, default=10, help="copies per source image (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", action="store_true", help="mirror half of the copies (faces, not hands)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    written = scale_dataset(args.source, args.output, args.factor, args.seed, args.flip, args.workers)
    log.info("wrote %d images to %s", written, args.output)


if __name__ == "__main__":
    main()
