"""Pictures the stages write: saved atomically, drawn without a display."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from stages.files import staged_path  # noqa: E402

GRID_COLUMNS = 6


def save_figure(figure, path):
    """Write a matplotlib figure as PNG, atomically, and release it."""
    if figure.get_layout_engine() is None:
        figure.tight_layout()
    with staged_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def image_grid(images, titles, heading, path, columns=GRID_COLUMNS):
    """Images in rows of `columns`, each with its title; an empty list gives a figure saying so."""
    count = max(len(images), 1)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.4 * rows + 0.4), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, title in zip(axes.flat, images, titles):
        axis.imshow(image)
        axis.set_title(title, fontsize=9)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=14)
    figure.suptitle(heading)
    save_figure(figure, path)
