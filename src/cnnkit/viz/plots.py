"""Matplotlib helpers shared by the viz tools: tiling images into a grid, scaling them for display, saving.

Everything uses the object-oriented API on figures created here (never ``plt.show``), with the Agg backend
so it works on headless machines and in tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the tools write PNGs, they never open windows
import matplotlib.pyplot as plt
import numpy as np
import torch


def scale_each(images: torch.Tensor) -> torch.Tensor:
    """Stretch each image of an (N, ...) batch to [0, 1] on its own, so weak and strong ones are both visible."""
    flat = images.detach().float().flatten(1)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp_min(1e-12)
    return scaled.view_as(images)


def tile(images: torch.Tensor, columns: int | None = None, padding: int = 1,
         pad_value: float | None = None) -> np.ndarray:
    """Arrange an (N, C, H, W) batch with C in {1, 3} and values in [0, 1] into one (rows*H, columns*W[, 3])
    array, ``padding`` pixels of ``pad_value`` between images. The default pads grey images with NaN, which
    imshow leaves blank whatever the colour map, and colour images with white."""
    images = images.detach().float().cpu()
    count, channels, height, width = images.shape
    if pad_value is None:
        pad_value = float("nan") if channels == 1 else 1.0
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = torch.full((channels, rows * (height + padding) + padding, columns * (width + padding) + padding), pad_value)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = padding + row * (height + padding), padding + column * (width + padding)
        grid[:, top:top + height, left:left + width] = images[index]
    array = grid.numpy()
    return array[0] if channels == 1 else array.transpose(1, 2, 0)


def show(axis, image: np.ndarray, title: str | None = None, cmap: str = "gray") -> None:
    """Draw an image without ticks; grey images use ``cmap`` on the fixed range [0, 1]."""
    if image.ndim == 2:
        axis.imshow(image, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        axis.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=9)


def vector_as_square(values: torch.Tensor) -> np.ndarray:
    """A 1-D vector (a fully connected layer's output) folded into a near-square 2-D array, NaN-padded."""
    values = values.detach().float().cpu().flatten()
    side = math.ceil(math.sqrt(len(values)))
    square = torch.full((side * side,), float("nan"))
    square[: len(values)] = values
    return square.view(side, side).numpy()


def for_display(image: torch.Tensor) -> np.ndarray:
    """One (C, H, W) image in [0, 1] -> an array imshow takes (H, W) or (H, W, 3)."""
    image = image.detach().float().cpu()
    return image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()


def overlay(axis, image: torch.Tensor, heatmap: torch.Tensor, title: str | None = None, alpha: float = 0.5) -> None:
    """A heatmap in [0, 1] drawn in 'jet' over a greyed copy of the image."""
    show(axis, for_display(image), title)
    axis.imshow(heatmap.detach().float().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)


def subplots(count: int, columns: int | None = None, panel_size: float = 3.0):
    """A figure with ``count`` panels laid out in a grid; returns (figure, flat list of the used axes)."""
    columns = columns or min(count, 4)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(panel_size * columns, panel_size * rows), squeeze=False)
    axes = list(axes.flat)
    for axis in axes[count:]:
        axis.axis("off")
    return figure, axes[:count]


def save(figure, path: str | Path, dpi: int = 100, tight: bool = True) -> Path:
    """Write the figure as a PNG (creating folders) and close it so long runs do not accumulate figures.
    ``tight=False`` for a figure laid out already (one with a colour bar in axes of its own)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        figure.tight_layout()
    figure.savefig(path, dpi=dpi, bbox_inches="tight")  # titles of wide image rows can fall outside otherwise
    plt.close(figure)
    return path
