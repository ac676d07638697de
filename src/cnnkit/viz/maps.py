"""Feature maps: what each chosen layer outputs for one input, channels laid out as a grid."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import UnknownNameError
from . import plots
from .hooks import evaluation_mode, record_outputs


def feature_maps(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str],
    png: str | Path | None = None,
    display_image: torch.Tensor | None = None,
    max_channels: int = 64,
) -> dict[str, torch.Tensor]:
    """The outputs of ``layers`` (names from ``model.named_modules()``) for the batch ``images``, in eval mode,
    and with ``png`` their picture (see :func:`plot_feature_maps`; ``display_image`` is the input in [0, 1]).

    An unknown name raises :class:`~cnnkit.errors.UnknownNameError` listing the valid ones.
    """
    with torch.no_grad(), evaluation_mode(model), record_outputs(model, layers) as recorded:
        model(images)
        idle = [name for name in layers if name not in recorded]
        if idle:
            raise UnknownNameError(f"Layers {', '.join(idle)} exist but did not run on this input in eval mode "
                                   "(auxiliary heads run only in training); pick layers of the main path.")
        result = {name: recorded[name].detach() for name in layers}
    if png is not None:
        plot_feature_maps(result, png, display_image, max_channels)
    return result


def plot_feature_maps(
    maps: dict[str, torch.Tensor],
    png: str | Path,
    image: torch.Tensor | None = None,
    max_channels: int = 64,
) -> Path:
    """One panel per layer showing the first image's channels as a grid (each channel scaled on its own);
    ``image`` (C, H, W) in [0, 1], when given, is drawn first for reference. Fully connected outputs
    (N, features) and 1x1 maps are folded into a square, one cell per feature, scaled together."""
    count = len(maps) + (image is not None)
    figure, axes = plots.subplots(count, panel_size=4.0)
    axes = iter(axes)
    if image is not None:
        plots.show(next(axes), plots.for_display(image), "input")
    for name, output in maps.items():
        first = output[0]
        if first.ndim == 3 and first.shape[-2] * first.shape[-1] > 1:
            channels = first[:max_channels].unsqueeze(1)
            grid = plots.tile(plots.scale_each(channels))
        else:
            grid = plots.vector_as_square(plots.scale_each(first.flatten().unsqueeze(0)))
        plots.show(next(axes), grid, f"{name} {tuple(output.shape[1:])}", cmap="viridis")
    return plots.save(figure, png)
