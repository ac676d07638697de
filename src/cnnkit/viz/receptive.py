"""Receptive fields of units as input gradients, and how centre-surround they are (Lindsey et al. 2019, sec. 3).

``receptive_fields(model, layer)``: for each channel of ``layer``, the gradient of the unit at the centre of its
map with respect to the input, cropped to the unit's theoretical receptive field (the input pixels it can see,
from :func:`cnnkit.analysis.summary`). For a linear network that gradient *is* the unit's filter; for a ReLU
network it is the filter of the linear network the input's activation pattern selects.

Where the gradient is taken. By default at a blank image of the dataset's mean grey (all zeros after the
trainer's normalisation): the stimulus of a receptive-field mapping experiment before any pattern is shown, the
input Lindsey et al. linearise at, deterministic and one backward pass per channel. Given ``images`` the
gradient is averaged over them instead (the average linear filter over natural inputs, like a spike-triggered
average); that also maps units that are silent on the blank image but costs a backward pass per image and
channel. Pass images for a network at initialisation: with zero biases a blank input puts every unit exactly at
its ReLU's kink, where torch's gradient is 0, so every field would be empty. Taking the gradient of a
convolution's output (before its ReLU) rather than of the ReLU's keeps a unit that is below threshold on the
stimulus from showing an empty field.

``center_surround_index(rf)``: the correlation of a receptive field with the concentric difference of Gaussians
(:func:`fit_difference_of_gaussians`) that fits it best: near 1 for centre-surround (and plain blob) fields,
low for oriented, edge-like and noisy ones, which no concentric pattern can follow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from ..analysis import summary
from ..card import architecture_card
from ..errors import CnnkitError, ShapeError
from . import plots
from .hooks import UnitOutOfRangeError, evaluation_mode, find_layer


class _StopForward(Exception):
    """Raised by a hook once the layer of interest has run: the rest of the network is not needed."""


def _layer_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    recorded = {}

    def hook(module, inputs, output):
        recorded["output"] = output
        raise _StopForward

    handle = find_layer(model, layer).register_forward_hook(hook)
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if "output" not in recorded:
        raise CnnkitError(f"Layer {layer!r} did not run when the model read a {tuple(x.shape)} input; pick a layer "
                          "on the main path.")
    output = recorded["output"]
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise UnitOutOfRangeError(f"receptive_fields needs a layer with spatial maps (N, C, H, W); {layer!r} outputs "
                                  f"{shape}. Pick a convolutional layer.")
    return output


def theoretical_receptive_field(model: nn.Module, layer: str, input_size: Sequence[int]) -> int | None:
    """Pixels of the input one output value of ``layer`` can see (None: the whole input), from the architecture
    calculator. For a container layer, that of the last layer inside it."""
    rows = summary(model, tuple(input_size)).rows
    for row in rows:
        if row.name == layer:
            return row.receptive_field
    inside = [row for row in rows if row.name.startswith(layer + ".")]
    return inside[-1].receptive_field if inside else None


def receptive_fields(model: nn.Module, layer: str, images: torch.Tensor | None = None, *,
                     input_size: Sequence[int] | None = None, crop: bool = True) -> torch.Tensor:
    """The receptive field of the centre unit of every channel of ``layer``: (channels, in_channels, h, w).

    ``images`` None: the gradient at a blank (all-zero, i.e. mean-grey once normalised) input of ``input_size``
    (C, H, W; default the model's registered input size). Otherwise the gradient averaged over the (N, C, H, W)
    preprocessed batch. ``crop`` cuts the maps to the theoretical receptive field around the centre unit
    (clipped at the image's border); otherwise they are the input's size.
    """
    find_layer(model, layer)  # an unknown name fails here, listing the valid ones
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    if images is None:
        if input_size is None:
            card = architecture_card(model)
            input_size = (card.in_channels, *card.input_size) if card.input_size else None
        if input_size is None:
            raise CnnkitError("receptive_fields at a blank input needs its size: pass input_size=(C, H, W) or a "
                              "batch of images.")
        x = torch.zeros(1, *input_size, device=device)
    else:
        if images.ndim != 4:
            raise ShapeError(f"images must be a preprocessed (N, C, H, W) batch, got shape {tuple(images.shape)}.")
        x = images.detach().to(device=device, dtype=torch.float32)
    x = x.clone().requires_grad_(True)
    with evaluation_mode(model), torch.enable_grad():
        output = _layer_output(model, layer, x)
        channels, height, width = output.shape[1:]
        row, column = height // 2, width // 2
        gradients = []
        for channel in range(channels):
            (gradient,) = torch.autograd.grad(output[:, channel, row, column].sum(), x,
                                              retain_graph=channel < channels - 1)
            gradients.append(gradient.mean(0))
    fields = torch.stack(gradients).detach()
    if not crop:
        return fields
    size = theoretical_receptive_field(model, layer, x.shape[1:])
    if size is None:
        return fields
    # The centre unit's position in input pixels (the same pixel for stride-1 'same' layers).
    in_height, in_width = x.shape[-2:]
    centre_row = round((row + 0.5) * in_height / height - 0.5)
    centre_column = round((column + 0.5) * in_width / width - 0.5)
    top, left = centre_row - size // 2, centre_column - size // 2
    return fields[..., max(top, 0):min(top + size, in_height), max(left, 0):min(left + size, in_width)]


# ------------------------------------------------------------------------------------------- difference of Gaussians
def difference_of_gaussians(shape: Sequence[int], center: Sequence[float], sigmas: Sequence[float],
                            amplitudes: Sequence[float], offset: float = 0.0) -> torch.Tensor:
    """The concentric difference of Gaussians a1 exp(-r^2 / 2 s1^2) - a2 exp(-r^2 / 2 s2^2) + offset on an
    (H, W) grid, r the distance to ``center`` = (row, column) in pixels. Unnormalised Gaussians: a1 and a2 are
    the peak heights of the centre and the surround."""
    rows = torch.arange(shape[0], dtype=torch.float64).view(-1, 1)
    columns = torch.arange(shape[1], dtype=torch.float64).view(1, -1)
    squared = (rows - center[0]) ** 2 + (columns - center[1]) ** 2
    centre_part = amplitudes[0] * torch.exp(-squared / (2 * sigmas[0] ** 2))
    surround_part = amplitudes[1] * torch.exp(-squared / (2 * sigmas[1] ** 2))
    return (centre_part - surround_part + offset).float()


def _gaussians(height: int, width: int, centres: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """exp(-r^2 / 2 s^2) for every centre (..., 2) and sigma (..., S): (..., S, H*W), float64."""
    rows = torch.arange(height, dtype=torch.float64).repeat_interleave(width)
    columns = torch.arange(width, dtype=torch.float64).repeat(height)
    squared = (rows - centres[..., 0:1]) ** 2 + (columns - centres[..., 1:2]) ** 2  # (..., H*W)
    return torch.exp(-squared.unsqueeze(-2) / (2 * sigmas.unsqueeze(-1) ** 2))


def _solve_linear_part(design: torch.Tensor, targets: torch.Tensor, ridge: float = 1e-9):
    """Least-squares amplitudes of ``design`` (..., P, K) for ``targets`` (..., P): (coefficients, residual sum)."""
    gram = design.transpose(-1, -2) @ design
    gram = gram + ridge * gram.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * torch.eye(
        gram.shape[-1], dtype=gram.dtype)
    moments = (design.transpose(-1, -2) @ targets.unsqueeze(-1)).squeeze(-1)
    coefficients = torch.linalg.solve(gram, moments)
    residual = targets - (design @ coefficients.unsqueeze(-1)).squeeze(-1)
    return coefficients, residual.square().sum(-1)


def _design(height: int, width: int, centres: torch.Tensor, sigma_pairs: torch.Tensor) -> torch.Tensor:
    """Columns [G(s1), G(s2), 1] for centres (..., 2) and sigma pairs (..., 2): (..., H*W, 3)."""
    gaussians = _gaussians(height, width, centres, sigma_pairs)  # (..., 2, P)
    ones = torch.ones_like(gaussians[..., :1, :])
    return torch.cat([gaussians, ones], dim=-2).transpose(-1, -2)


def _search_centres_and_sigmas(targets: torch.Tensor, height: int, width: int):
    """The best centre (row, column) and the log of the best pair of grid sigmas for each of the (N, H*W)
    unit-variance ``targets``, by exhaustive search: the starting point of the refinement."""
    # Exhaustive search: every pixel as the centre, every pair of grid sigmas (s1 < s2). A Gaussian is separable,
    # exp(-((r - a)^2 + (q - b)^2) / 2 s^2) = f_a(r) g_b(q), so every inner product the normal equations need is
    # a product of 1-D sums and no (centres x sigmas x pixels) design tensor is ever built.
    sigma_grid = torch.logspace(math.log10(0.5), math.log10(max(height, width) / 2), 10, dtype=torch.float64)
    first, second = torch.triu_indices(len(sigma_grid), len(sigma_grid), offset=1)

    def profiles(size: int) -> torch.Tensor:  # (centre, sigma, pixel)
        positions = torch.arange(size, dtype=torch.float64)
        distance = positions.view(1, 1, -1) - positions.view(-1, 1, 1)
        return torch.exp(-distance ** 2 / (2 * sigma_grid.view(1, -1, 1) ** 2))

    along_rows, along_columns = profiles(height), profiles(width)  # (H, 10, H), (W, 10, W)
    row_products = torch.einsum("asr,atr->ast", along_rows, along_rows)  # (H, 10, 10)
    column_products = torch.einsum("bsq,btq->bst", along_columns, along_columns)
    products = row_products[:, None] * column_products[None]  # (H, W, 10, 10): <G_s, G_t> per centre
    sums = along_rows.sum(-1)[:, None] * along_columns.sum(-1)[None]  # (H, W, 10): <G_s, 1>
    gram = torch.empty(height, width, len(first), 3, 3, dtype=torch.float64)
    gram[..., 0, 0], gram[..., 1, 1] = products[..., first, first], products[..., second, second]
    gram[..., 0, 1] = gram[..., 1, 0] = products[..., first, second]
    gram[..., 0, 2] = gram[..., 2, 0] = sums[..., first]
    gram[..., 1, 2] = gram[..., 2, 1] = sums[..., second]
    gram[..., 2, 2] = float(height * width)
    gram = gram + 1e-9 * gram.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] * torch.eye(3, dtype=gram.dtype)
    gram_inverse = torch.linalg.inv(gram)  # the same for every map
    best_centre, best_pair = [], []
    for target in targets:
        image = target.view(height, width)
        projections = torch.einsum("asr,rq,bsq->abs", along_rows, image, along_columns)  # (H, W, 10): <G_s, y>
        moments = torch.stack([projections[..., first], projections[..., second],
                               image.sum().expand(height, width, len(first))], -1)
        # Residual sum of squares = |y|^2 - m^T A^-1 m: the best centre and pair explain the most.
        explained = torch.einsum("abpk,abpkl,abpl->abp", moments, gram_inverse, moments)
        row, column, pair = (int(i) for i in torch.unravel_index(explained.argmax(), explained.shape))
        best_centre.append(torch.tensor([row, column], dtype=torch.float64))
        best_pair.append(torch.stack([sigma_grid[first[pair]], sigma_grid[second[pair]]]))
    return torch.stack(best_centre).clone(), torch.stack(best_pair).log().clone()


def fit_difference_of_gaussians(rf: torch.Tensor, refine_steps: int = 150, return_parameters: bool = False):
    """The concentric difference of Gaussians (centre row/column, two sigmas, two amplitudes, an offset) closest
    to each (H, W) map of ``rf`` (shape (..., H, W)) in least squares; returns the fitted maps, same shape.

    Amplitudes and offset enter linearly, so for given centre and sigmas they are solved exactly (variable
    projection). The centre (every pixel) and the two sigmas (a geometric grid from 0.5 px to the map's size) are
    first searched exhaustively, then refined together by gradient descent on the same residual, which makes
    the fit deterministic and free of starting guesses. ``return_parameters`` adds a dict of (..., k) tensors:
    center (row, column), sigmas, amplitudes (centre, surround: the map is a1 G1 - a2 G2 + offset), offset.
    """
    if rf.ndim < 2 or min(rf.shape[-2:]) < 2:
        raise ShapeError(f"fit_difference_of_gaussians needs maps of at least 2x2 pixels, got shape {tuple(rf.shape)}.")
    leading, (height, width) = rf.shape[:-2], rf.shape[-2:]
    maps = rf.detach().cpu().double().reshape(-1, height * width)
    scale = maps.std(dim=1, keepdim=True).clamp_min(1e-30)  # fit unit-variance maps, rescale at the end
    targets = maps / scale

    centre, log_sigmas = _search_centres_and_sigmas(targets, height, width)

    # Refinement of all maps at once: the residuals are independent, so Adam on their sum refines each map as if
    # alone (Adam's update is elementwise).
    centre, log_sigmas = centre.requires_grad_(True), log_sigmas.requires_grad_(True)

    def residuals():
        sigmas = log_sigmas.exp().clamp(0.2, 4.0 * max(height, width))
        return _solve_linear_part(_design(height, width, centre, sigmas), targets)

    with torch.no_grad():
        _, start_rss = residuals()
    start = (centre.detach().clone(), log_sigmas.detach().clone())
    if refine_steps:
        optimizer = torch.optim.Adam([centre, log_sigmas], lr=0.05)
        for _ in range(refine_steps):
            optimizer.zero_grad()
            with torch.enable_grad():
                _, rss = residuals()
                rss.sum().backward()
            optimizer.step()
    with torch.no_grad():
        _, end_rss = residuals()
        worse = ~(end_rss <= start_rss)  # refinement is kept only where it helped (and is finite)
        centre[worse], log_sigmas[worse] = start[0][worse], start[1][worse]
        sigmas = log_sigmas.exp().clamp(0.2, 4.0 * max(height, width))
        design = _design(height, width, centre, sigmas)
        coefficients, _ = _solve_linear_part(design, targets)
        fitted = (design @ coefficients.unsqueeze(-1)).squeeze(-1) * scale
    fitted = fitted.to(rf.dtype if rf.is_floating_point() else torch.float32).reshape(*leading, height, width)
    if not return_parameters:
        return fitted
    # The map is a1 G1 - a2 G2 + offset with G1 the narrower Gaussian.
    swap = sigmas[:, 0] > sigmas[:, 1]
    sigmas = torch.where(swap[:, None], sigmas.flip(1), sigmas)
    coefficients[:, :2] = torch.where(swap[:, None], coefficients[:, :2].flip(1), coefficients[:, :2])
    amplitudes = torch.stack([coefficients[:, 0], -coefficients[:, 1]], 1) * scale
    parameters = {"center": centre.detach(), "sigmas": sigmas, "amplitudes": amplitudes,
                  "offset": coefficients[:, 2] * scale[:, 0]}
    return fitted, {key: value.float().reshape((*leading, *value.shape[1:])) for key, value in parameters.items()}


def center_surround_index(rf: torch.Tensor, fitted: torch.Tensor | None = None) -> torch.Tensor:
    """Correlation (Pearson, over pixels) of each (H, W) map of ``rf`` (..., H, W) with its best-fitting concentric
    difference of Gaussians: shape (...). ~1 for centre-surround fields, low for oriented or edge-like ones;
    NaN for a flat map (a unit whose gradient is zero everywhere). ``fitted`` reuses an earlier fit."""
    if fitted is None:
        fitted = fit_difference_of_gaussians(rf)
    x = rf.detach().cpu().double().flatten(-2)
    y = fitted.detach().cpu().double().flatten(-2)
    x = x - x.mean(-1, keepdim=True)
    y = y - y.mean(-1, keepdim=True)
    denominator = (x.square().sum(-1) * y.square().sum(-1)).sqrt()
    flat = x.square().sum(-1) <= 1e-24 * x.shape[-1]
    correlation = (x * y).sum(-1) / denominator.clamp_min(1e-300)
    return torch.where(flat, torch.full_like(correlation, float("nan")), correlation).float()


def plot_receptive_fields(rfs: torch.Tensor, png: str | Path, title: str | None = None,
                          labels: Sequence[str] | None = None, columns: int | None = None) -> Path:
    """A grid of receptive fields (N, H, W) or (N, 1, H, W), each on a red (positive: the unit is driven by light)
    / blue (negative) colour map symmetric about zero, scaled on its own; ``labels`` titles each panel."""
    maps = rfs.detach().float().cpu()
    if maps.ndim == 4:
        if maps.shape[1] != 1:
            raise ShapeError(f"plot_receptive_fields draws one map per unit; got {maps.shape[1]} input channels. "
                             "Pass one channel (rfs[:, c]) or their sum.")
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ShapeError(f"rfs must be (N, H, W) or (N, 1, H, W), got shape {tuple(rfs.shape)}.")
    count = len(maps)
    columns = columns or min(count, 8)
    figure, axes = plots.subplots(count, columns=columns, panel_size=1.4)
    for index, (axis, field) in enumerate(zip(axes, maps)):
        limit = float(field.abs().max()) or 1.0
        image = axis.imshow(field.numpy() / limit, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        if labels is not None:
            axis.set_title(labels[index], fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    # One colour bar for all panels (each is divided by its own largest |value|), in a column of its own.
    figure.subplots_adjust(right=0.86)
    bar = figure.colorbar(image, cax=figure.add_axes((0.89, 0.15, 0.018, 0.7)), ticks=[-1, 0, 1])
    bar.ax.set_yticklabels(["-max\n(dark\nexcites)", "0", "+max\n(light\nexcites)"], fontsize=7)
    bar.set_label("input gradient / the panel's max |value|", fontsize=7)
    return plots.save(figure, png, tight=False)
