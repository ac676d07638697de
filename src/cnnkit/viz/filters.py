"""Convolution kernels as pictures, and a number for how smooth they are.

First-layer filters of a trained CNN are smooth, oriented, Gabor-like structures (Krizhevsky et al. 2012,
Fig. 3; the notes' "Filters trained in the first layer"), whereas freshly initialised ones are white noise.
``spatial_autocorrelation`` turns that difference into a figure that can be compared and tested.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, UnknownNameError
from . import plots
from .hooks import find_layer, first_module_of_type


def conv_weights(model: nn.Module, layer: str | None = None) -> torch.Tensor:
    """The (out_channels, in_channels, kh, kw) kernels of ``layer``, by default the first 2-D convolution."""
    if layer is None:
        layer = first_module_of_type(model, nn.Conv2d)
        if layer is None:
            raise UnknownNameError(f"{type(model).__name__} has no nn.Conv2d layer; name a layer with a 4-D weight.")
    weight = getattr(find_layer(model, layer), "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise UnknownNameError(
            f"Layer {layer!r} has no 4-D convolution weight (found {type(find_layer(model, layer)).__name__}); "
            "name a convolution layer."
        )
    return weight.detach().cpu().clone()


def spatial_autocorrelation(weights: torch.Tensor) -> torch.Tensor:
    """Lag-1 spatial autocorrelation of each kernel, averaged over its input channels: (out_channels,).

    For each 2-D kernel slice w with mean m, r = sum over horizontally and vertically adjacent pairs of
    (w(p) - m)(w(q) - m), divided by the number of pairs, over the variance. Smooth kernels give r near 1,
    white noise near 0 (slightly negative), checkerboards -1.
    """
    centred = weights.float() - weights.float().mean(dim=(-2, -1), keepdim=True)
    variance = centred.pow(2).mean(dim=(-2, -1))
    horizontal = (centred[..., :, 1:] * centred[..., :, :-1]).mean(dim=(-2, -1))
    vertical = (centred[..., 1:, :] * centred[..., :-1, :]).mean(dim=(-2, -1))
    correlation = 0.5 * (horizontal + vertical) / variance.clamp_min(1e-12)
    return correlation.mean(dim=1)


def filter_images(weights: torch.Tensor, max_filters: int = 64, max_channels: int = 16) -> torch.Tensor:
    """Kernels as [0, 1] images, each normalised on its own: (N, 3, kh, kw) in colour when the layer reads
    3 channels (an RGB first layer), otherwise one grey image per (filter, input channel) pair, filters
    along rows (N = filters x channels, laid out with ``columns=channels``)."""
    weights = weights[:max_filters]
    if weights.shape[1] == 3:
        return plots.scale_each(weights)
    weights = weights[:, :max_channels]
    # Normalise per filter (over all its channels) so channels of one filter stay comparable.
    scaled = plots.scale_each(weights)
    return scaled.reshape(-1, 1, *weights.shape[-2:])


def _draw(axis, weights: torch.Tensor, title: str, max_filters: int, max_channels: int) -> None:
    images = filter_images(weights, max_filters, max_channels)
    columns = None if weights.shape[1] == 3 else min(weights.shape[1], max_channels)
    if columns == 1:
        columns = None  # grey first layer (MNIST): a square grid of single-channel filters
    plots.show(axis, plots.tile(images, columns=columns), title)


def plot_filters(
    model: nn.Module,
    layer: str | None = None,
    before: nn.Module | Mapping[str, torch.Tensor] | None = None,
    png: str | Path | None = None,
    max_filters: int = 64,
    max_channels: int = 16,
) -> dict[str, torch.Tensor]:
    """Show the kernels of ``layer`` (default: the first convolution) as a grid, optionally next to the same
    layer ``before`` training (another model or its state dict, e.g. the initial checkpoint).

    Returns ``{"weights": ..., "autocorrelation": ...}`` and, with ``before``, the same for it
    (``"weights_before"``, ``"autocorrelation_before"``).
    """
    if layer is None:
        layer = first_module_of_type(model, nn.Conv2d)
    weights = conv_weights(model, layer)
    result = {"weights": weights, "autocorrelation": spatial_autocorrelation(weights)}
    panels = []
    if before is not None:
        before_weights = _weights_of(before, layer)
        if before_weights.shape != weights.shape:
            raise CheckpointError(f"'before' has {tuple(before_weights.shape)} kernels at {layer!r}, the model "
                             f"{tuple(weights.shape)}; compare two checkpoints of the same architecture.")
        result["weights_before"] = before_weights
        result["autocorrelation_before"] = spatial_autocorrelation(before_weights)
        panels.append((before_weights, "before", result["autocorrelation_before"]))
    panels.append((weights, "after" if before is not None else "", result["autocorrelation"]))
    if png is not None:
        figure, axes = plots.subplots(len(panels), columns=len(panels), panel_size=5.0)
        for axis, (kernels, label, correlation) in zip(axes, panels):
            title = f"{layer} {label} {tuple(kernels.shape)}\nspatial autocorrelation {correlation.mean():.2f}"
            _draw(axis, kernels, title, max_filters, max_channels)
        plots.save(figure, png)
    return result


def _weights_of(source: nn.Module | Mapping[str, torch.Tensor], layer: str) -> torch.Tensor:
    if isinstance(source, nn.Module):
        return conv_weights(source, layer)
    key = f"{layer}.weight"
    if key not in source:
        raise UnknownNameError(f"The state dict given as 'before' has no {key!r}; it must come from the same model.")
    return source[key].detach().cpu().clone()
