"""The loss landscape around a trained network (Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss
Landscape of Neural Nets", NeurIPS 2018).

- 1-D: loss along the straight line (1 - t) theta_a + t theta_b between two checkpoints (Goodfellow et al.
  2015), e.g. the initial and the trained weights.
- 2-D: loss on the plane theta + alpha d1 + beta d2 spanned by two random Gaussian directions that are
  *filter-normalised* (Li et al., section 4): each filter of d gets the norm of the same filter of theta,
  so the picture does not depend on the weights' scale (which BN makes arbitrary). Biases and BN
  parameters (1-D tensors) get a zero direction, as in the paper.

The loss is evaluated on a fixed subset of examples, in large batches, with the network in eval mode, through
``torch.func.functional_call`` with the perturbed parameters: the model's own weights are never modified.
Optionally several grid points run at once with ``torch.func.vmap`` (one grouped convolution per layer).
``landscape_statistics`` summarises the surface's curvature in numbers so two networks (resnet20 against
plain20, the paper's Fig. 5) can be compared, not only looked at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, vmap

from ..errors import CheckpointError, CnnkitError
from ..progress import progress_bar
from . import plots
from .hooks import evaluation_mode

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: parameter.detach() for name, parameter in model.named_parameters()}


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: buffer.detach() for name, buffer in model.named_buffers()}


def filter_normalized_direction(parameters: Mapping[str, torch.Tensor],
                                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A Gaussian direction with each filter rescaled to the norm of the corresponding filter of
    ``parameters``: for a weight of shape (out, ...) filter i is d[i] * ||w[i]|| / ||d[i]||. 1-D tensors
    (biases, BN scale and shift) get zeros."""
    direction = {}
    for name, weight in parameters.items():
        if weight.ndim <= 1:
            direction[name] = torch.zeros_like(weight)
            continue
        random = torch.randn(weight.shape, generator=generator, dtype=weight.dtype).to(weight.device)
        weight_norms = weight.flatten(1).norm(dim=1)
        random_norms = random.flatten(1).norm(dim=1).clamp_min(1e-12)
        shape = (-1,) + (1,) * (weight.ndim - 1)
        direction[name] = random * (weight_norms / random_norms).view(shape)
    return direction


def fixed_subset(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_examples: int,
                 batch_size: int = 256) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``num_examples`` examples of ``batches``, re-batched into a list that can be iterated once per
    grid point. Use an unshuffled split so the same subset is evaluated every time."""
    images, labels, seen = [], [], 0
    for batch_images, batch_labels in batches:
        images.append(batch_images)
        labels.append(torch.as_tensor(batch_labels))
        seen += len(batch_images)
        if seen >= num_examples:
            break
    images, labels = torch.cat(images)[:num_examples], torch.cat(labels)[:num_examples]
    return [(images[start:start + batch_size], labels[start:start + batch_size])
            for start in range(0, len(images), batch_size)]


def _mean_loss_at(model: nn.Module, origin: Mapping[str, torch.Tensor], directions: list[Mapping[str, torch.Tensor]],
                  coefficients: torch.Tensor, batches: list[tuple[torch.Tensor, torch.Tensor]],
                  loss_fn: LossFunction, points_per_pass: int, progress: bool = False) -> torch.Tensor:
    """Mean loss over ``batches`` at origin + sum_k coefficients[p, k] * directions[k], for each point p."""
    buffers = _buffers(model)

    def loss_at(point: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        moved = {name: value + sum(point[k] * direction[name] for k, direction in enumerate(directions))
                 for name, value in origin.items()}
        return loss_fn(functional_call(model, (moved, buffers), (images,)), labels)

    # One point at a time is a plain functional_call; several at a time vmap it over the points, which turns
    # each convolution into one grouped convolution. Measured on a 2-core CPU with resnet20, the plain loop
    # was about twice as fast, so it is the default; vmap can pay off on a GPU.
    evaluate = vmap(loss_at, in_dims=(0, None, None)) if points_per_pass > 1 else (
        lambda points, images, labels: loss_at(points[0], images, labels).unsqueeze(0))
    losses = torch.zeros(len(coefficients), dtype=torch.float64)
    total = sum(len(images) for images, _ in batches)
    bar = progress_bar(len(coefficients), "loss landscape", unit="point", enabled=progress)
    with torch.no_grad(), evaluation_mode(model), bar:
        for start in range(0, len(coefficients), points_per_pass):
            chunk = coefficients[start:start + points_per_pass]
            for images, labels in batches:
                # loss_fn is a mean over the batch; weight by batch size for the mean over the subset.
                losses[start:start + len(chunk)] += evaluate(chunk, images, labels).double().cpu() * len(images)
            bar.update(len(chunk))
    return (losses / total).float()


def loss_along_line(
    model: nn.Module,
    start: Mapping[str, torch.Tensor],
    end: Mapping[str, torch.Tensor],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    steps: int = 25,
    margin: float = 0.25,
    loss_fn: LossFunction = F.cross_entropy,
    png: str | Path | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss at (1 - t) start + t end for ``steps`` values of t from -margin to 1 + margin: (t, loss).

    ``start``/``end`` are state dicts of ``model``'s architecture; parameters are interpolated and so are
    float buffers (BN running statistics), while the model's own weights stay as they are.
    """
    # Copies: ``end`` is often ``model.state_dict()``, whose buffers are the very tensors overwritten below.
    start = {name: value.detach().clone() for name, value in start.items()}
    end = {name: value.detach().clone() for name, value in end.items()}
    names = [name for name, _ in model.named_parameters()]
    for which, state in (("start", start), ("end", end)):
        missing = [name for name in names if name not in state]
        if missing:
            raise CheckpointError(f"The {which} state dict lacks {missing[:3]}...; both checkpoints must be of "
                                  f"{type(model).__name__}'s architecture.")
    origin = {name: start[name].detach().float() for name in names}
    direction = {name: end[name].detach().float() - origin[name] for name in names}
    ts = torch.linspace(-margin, 1 + margin, steps)
    losses = torch.zeros(steps)
    buffers = dict(model.named_buffers())
    saved = {name: buffer.detach().clone() for name, buffer in buffers.items()}
    bar = progress_bar(steps, "loss along the line", unit="point", enabled=progress)
    try:
        # Buffers cannot ride on vmap's batch dimension (BN reads them as running statistics, not weights),
        # so the line is walked one t at a time with the buffers interpolated in place and restored after.
        for index, t in enumerate(ts):
            with torch.no_grad():
                for name, buffer in buffers.items():
                    if buffer.is_floating_point() and name in start and name in end:
                        buffer.copy_((1 - t) * start[name] + t * end[name])
            losses[index] = _mean_loss_at(model, origin, [direction], t.view(1, 1), batches, loss_fn, 1)[0]
            bar.update(1)
    finally:
        bar.close()
        with torch.no_grad():
            for name, buffer in buffers.items():
                buffer.copy_(saved[name])
    if png is not None:
        plot_line(ts, losses, png)
    return ts, losses


@dataclass
class LossSurface:
    alphas: torch.Tensor  # (R,) coefficients along the first direction
    betas: torch.Tensor  # (R,) along the second
    losses: torch.Tensor  # (R, R): losses[i, j] at alphas[i], betas[j]
    directions: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] = field(repr=False)
    statistics: dict[str, float] = field(default_factory=dict)


def loss_surface(
    model: nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    resolution: int = 21,
    span: float = 1.0,
    seed: int = 0,
    loss_fn: LossFunction = F.cross_entropy,
    points_per_pass: int = 1,
    png: str | Path | None = None,
    progress: bool = False,
) -> LossSurface:
    """Loss on a ``resolution`` x ``resolution`` grid over [-span, span]^2 of the plane through the model's
    weights spanned by two filter-normalised random directions (seeded by ``seed``).

    An odd resolution puts a grid point exactly on the model itself. ``points_per_pass`` > 1 evaluates that
    many grid points in one ``vmap``-ed pass (worth trying on a GPU; on a CPU one at a time is faster).
    Cost: resolution^2 forward passes over the subset; a 21 x 21 grid of resnet20 on 1000 CIFAR images is
    about 441 x 4 seconds on one loaded CPU core, so start with a 500-example subset or an 11 x 11 grid.
    """
    if resolution < 3 or span <= 0:
        raise CnnkitError(f"The landscape grid needs resolution >= 3 and span > 0 (got {resolution} and {span}); "
                          "an odd resolution such as 21 puts a point on the model itself.")
    origin = {name: value.float() for name, value in _parameters(model).items()}
    generator = torch.Generator().manual_seed(seed)
    directions = (filter_normalized_direction(origin, generator), filter_normalized_direction(origin, generator))
    axis = torch.linspace(-span, span, resolution)
    alphas, betas = torch.meshgrid(axis, axis, indexing="ij")
    coefficients = torch.stack([alphas.flatten(), betas.flatten()], dim=1)
    losses = _mean_loss_at(model, origin, list(directions), coefficients, batches, loss_fn, points_per_pass,
                           progress)
    losses = losses.view(resolution, resolution)
    step = float(axis[1] - axis[0]) if resolution > 1 else 1.0
    surface = LossSurface(axis, axis.clone(), losses, directions, landscape_statistics(losses, step))
    if png is not None:
        plot_surface(surface, png)
    return surface


def landscape_statistics(losses: torch.Tensor | np.ndarray, step: float = 1.0) -> dict[str, float]:
    """Curvature of a 2-D loss grid, from finite-difference Hessians at the interior points.

    - ``nonconvex_fraction``: share of points where the smaller Hessian eigenvalue is negative by more than 1%
      of the larger's magnitude (Li et al. map |lambda_min / lambda_max| the same way, Fig. 7);
    - ``mean_eigenvalue_ratio``: mean of max(0, -lambda_min) / |lambda_max|: 0 for a convex bowl;
    - ``mean_abs_laplacian``: mean |f_xx + f_yy|, the plain second difference, in loss per unit^2.
    Smoother, more convex landscapes (resnet20) give lower values than chaotic ones (plain20 and deeper).
    """
    f = torch.as_tensor(np.asarray(losses), dtype=torch.float64)
    if f.shape[0] < 3 or f.shape[1] < 3:
        raise CnnkitError(f"curvature needs a grid of at least 3 x 3 points, got {tuple(f.shape)}")
    centre = f[1:-1, 1:-1]
    f_xx = (f[2:, 1:-1] - 2 * centre + f[:-2, 1:-1]) / step**2
    f_yy = (f[1:-1, 2:] - 2 * centre + f[1:-1, :-2]) / step**2
    f_xy = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * step**2)
    hessians = torch.stack([torch.stack([f_xx, f_xy], -1), torch.stack([f_xy, f_yy], -1)], -2)
    eigenvalues = torch.linalg.eigvalsh(hessians)  # ascending: [..., 0] is lambda_min
    smallest, largest = eigenvalues[..., 0], eigenvalues[..., 1]
    scale = torch.maximum(smallest.abs(), largest.abs()).clamp_min(1e-12)
    ratio = (-smallest).clamp_min(0) / scale
    return {
        "nonconvex_fraction": float((ratio > 0.01).double().mean()),
        "mean_eigenvalue_ratio": float(ratio.mean()),
        "mean_abs_laplacian": float((f_xx + f_yy).abs().mean()),
    }


def plot_line(ts: torch.Tensor, losses: torch.Tensor, png: str | Path) -> Path:
    figure, (axis,) = plots.subplots(1, panel_size=5.0)
    axis.plot(ts.numpy(), losses.numpy(), marker=".")
    for end in (0.0, 1.0):
        axis.axvline(end, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("t  (0: start checkpoint, 1: end checkpoint)")
    axis.set_ylabel("loss")
    axis.set_title("loss along the line between checkpoints")
    axis.grid(alpha=0.3)
    return plots.save(figure, png)


def surface_ceiling(losses: np.ndarray, clip_factor: float = 5.0, shown_fraction: float = 0.8) -> float:
    """The highest loss a landscape picture shows. Far from the minimum the loss can explode by orders of
    magnitude and flatten everything else, so the picture stops at ``clip_factor`` times the loss at the centre
    (Li et al. likewise plot up to a fixed loss) -- but never below the loss of ``shown_fraction`` of the grid:
    a well-trained network without shortcuts (plain20) has a tiny centre loss and a steep bowl, and a ceiling
    tied to the centre alone cut nearly every point off at one height, a flat table instead of a surface."""
    losses = np.asarray(losses, dtype=np.float64)
    centre = float(losses[len(losses) // 2, len(losses) // 2])
    floor = float(np.quantile(losses, shown_fraction))
    return min(float(losses.max()), max(clip_factor * max(centre, 1e-6), floor))


def plot_surface(surface: LossSurface, png: str | Path, title: str = "", clip_factor: float = 5.0) -> Path:
    """Contour plot and 3-D surface of the loss, side by side, with the curvature statistics in the title.
    Both stop at :func:`surface_ceiling` (the z-axis says when it clips); the statistics use the unclipped grid.
    """
    alphas, betas = np.meshgrid(surface.alphas.numpy(), surface.betas.numpy(), indexing="ij")
    losses = surface.losses.numpy()
    ceiling = surface_ceiling(losses, clip_factor)
    shown = np.minimum(losses, ceiling)
    figure = plots.plt.figure(figsize=(11, 5))
    contour_axis = figure.add_subplot(1, 2, 1)
    levels = np.linspace(shown.min(), ceiling + 1e-9, 30)
    contours = contour_axis.contour(alphas, betas, shown, levels=levels, cmap="viridis")
    contour_axis.clabel(contours, contours.levels[::5], fmt="%.3g", fontsize=7)
    contour_axis.plot(0, 0, "r+")
    contour_axis.set_xlabel("direction 1")
    contour_axis.set_ylabel("direction 2")
    surface_axis = figure.add_subplot(1, 2, 2, projection="3d")
    drawn = surface_axis.plot_surface(alphas, betas, shown, cmap="viridis", linewidth=0, antialiased=True)
    surface_axis.set_zlim(float(shown.min()), ceiling)
    figure.colorbar(drawn, ax=surface_axis, shrink=0.6, pad=0.1, label="loss")
    surface_axis.set_zlabel("loss" if ceiling >= losses.max() else f"loss (clipped at {ceiling:.3g})")
    stats = surface.statistics
    summary = ", ".join(f"{name} {value:.3g}" for name, value in stats.items())
    figure.suptitle(f"{title}\n{summary}" if title else summary, fontsize=9)
    return plots.save(figure, png)
