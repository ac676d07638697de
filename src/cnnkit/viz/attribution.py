"""Which pixels a prediction depends on: vanilla gradients, SmoothGrad, Grad-CAM, occlusion and integrated
gradients (guided backpropagation and the deconvnet are in :mod:`cnnkit.viz.backprojection`).

- Saliency (Simonyan et al. 2014): |d score / d input|, the largest over colour channels.
- SmoothGrad (Smilkov et al. 2017): the saliency averaged over copies of the input with Gaussian noise,
  which removes the speckle of the raw gradient.
- Grad-CAM (Selvaraju et al. 2017): the layer's channels weighted by the spatial mean of the score's
  gradient, summed, ReLU'd and upsampled: coarse, but class-discriminative and robust.
- Occlusion (Zeiler & Fergus 2014, section 4.2): slide a grey patch over the image and record how much the
  class score drops; needs no gradient, so it also checks what the gradient methods claim.
- Integrated gradients (Sundararajan et al. 2017): (x - baseline) times the gradient averaged along the
  straight path from the baseline to x; the attributions add up to f(x) - f(baseline) ("completeness").

``target`` is one class index per image (or one for all); None explains the predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CnnkitError, UnknownNameError
from . import plots
from .hooks import UnitOutOfRangeError, evaluation_mode, record_outputs


def class_scores(logits: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
    """The score of the target class of each image, and the targets used."""
    count, classes = logits.shape
    if target is None:
        target = logits.argmax(dim=1)
    target = torch.as_tensor(target, device=logits.device).long().reshape(-1)
    if target.numel() == 1:
        target = target.expand(count)
    if target.numel() != count:
        raise UnitOutOfRangeError(f"Got {target.numel()} target classes for {count} images; "
                                  "give one per image or one for all.")
    bad = target[(target < 0) | (target >= classes)]
    if bad.numel():
        raise UnitOutOfRangeError(f"Class {bad[0].item()} is out of range: the model has {classes} classes, "
                                  f"valid classes are 0 to {classes - 1}.")
    return logits.gather(1, target.view(-1, 1)).squeeze(1), target


def explained_classes(model: nn.Module, images: torch.Tensor, target=None) -> torch.Tensor:
    """The class explained for each image: ``target`` (one for all or one per image) checked against the
    model's classes, or the model's prediction."""
    with torch.no_grad(), evaluation_mode(model):
        return class_scores(model(images), target)[1]


def scale_to_percentile(maps: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Divide each non-negative (H, W) map by its ``percentile``-th value and clip at 1. Gradient maps have a
    few extreme pixels; scaling by the maximum would leave everything else invisible (Smilkov et al. 2017
    clip at the 99th percentile for the same reason)."""
    flat = maps.flatten(1)
    scale = torch.quantile(flat, percentile / 100, dim=1).clamp_min(1e-12)
    return (maps / scale.view(-1, *([1] * (maps.ndim - 1)))).clamp(max=1.0)


def saliency(model: nn.Module, images: torch.Tensor, target=None) -> torch.Tensor:
    """Vanilla gradient saliency: (N, H, W), the largest |gradient| over channels, scaled by
    :func:`scale_to_percentile` into [0, 1]."""
    with evaluation_mode(model):
        return scale_to_percentile(_input_gradient(model, images, target).abs().amax(dim=1))


def _input_gradient(model: nn.Module, images: torch.Tensor, target) -> torch.Tensor:
    images = images.detach().clone().requires_grad_(True)
    scores, _ = class_scores(model(images), target)
    (gradient,) = torch.autograd.grad(scores.sum(), images)
    return gradient


def smoothgrad(
    model: nn.Module,
    images: torch.Tensor,
    target=None,
    samples: int = 25,
    noise_level: float = 0.15,
    seed: int = 0,
) -> torch.Tensor:
    """SmoothGrad: mean |gradient| over ``samples`` noisy copies, noise std ``noise_level`` times each image's
    value range; (N, H, W) scaled like :func:`saliency`. The target is fixed from the clean image so noise
    cannot flip it."""
    generator = torch.Generator().manual_seed(seed)
    with evaluation_mode(model):
        if target is None:
            with torch.no_grad():
                target = model(images).argmax(dim=1)
        flat = images.detach().flatten(1)
        sigma = (noise_level * (flat.max(1).values - flat.min(1).values)).view(-1, 1, 1, 1)
        total = torch.zeros_like(images)
        for _ in range(samples):
            noise = torch.randn(images.shape, generator=generator).to(images) * sigma
            total += _input_gradient(model, images + noise, target).abs()
    return scale_to_percentile((total / samples).amax(dim=1))


def gradcam(model: nn.Module, images: torch.Tensor, layer: str, target=None) -> torch.Tensor:
    """Grad-CAM heatmaps for ``layer`` (a convolutional layer, usually the last): (N, H, W) at the input's
    resolution, each scaled so its maximum is 1 (all zeros where no position supports the class)."""
    with evaluation_mode(model), record_outputs(model, [layer]) as recorded:
        # The input requires grad so the graph exists even when every parameter is frozen (a fine-tuned
        # backbone, or weights loaded with requires_grad=False).
        scores, _ = class_scores(model(images.detach().requires_grad_(True)), target)
        if layer not in recorded:
            raise UnknownNameError(f"Layer {layer!r} did not run on this input in eval mode (auxiliary heads run "
                                   "only in training); pick a layer of the main path.")
        activation = recorded[layer]
        if activation.ndim != 4:
            raise UnitOutOfRangeError(
                f"Grad-CAM needs a layer with spatial maps (N, C, H, W); {layer!r} outputs {tuple(activation.shape)}. "
                "Pick a convolutional layer."
            )
        (gradient,) = torch.autograd.grad(scores.sum(), activation)
    channel_weights = gradient.mean(dim=(-2, -1), keepdim=True)
    cam = F.relu((channel_weights * activation.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
    return cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


def _patch_starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one side: every ``stride`` pixels, the last one reaching or passing the edge (a
    window that passes it is cut there), so every pixel is covered; Captum's Occlusion tiles the same way."""
    if not 0 < window <= size or stride < 1:
        raise CnnkitError(f"The occlusion window must be 1 to {size} pixels and the stride at least 1 "
                          f"(got window {window}, stride {stride}).")
    return [index * stride for index in range(-(-(size - window) // stride) + 1)]


def occlusion(model: nn.Module, images: torch.Tensor, target=None, window: int = 8, stride: int = 4,
              baseline: float | torch.Tensor = 0.0, batch_size: int = 64) -> torch.Tensor:
    """Occlusion sensitivity: (N, H, W), for each pixel the mean drop of the class score over the
    ``window`` x ``window`` patches (all channels) that cover it, when the patch is replaced by ``baseline``.
    Positive where hiding the pixel hurts the class. The default baseline 0 is the dataset's mean colour on a
    normalised input (a grey patch). The occluded copies run through the model ``batch_size`` at a time."""
    count, _, height, width = images.shape
    tops, lefts = _patch_starts(height, window, stride), _patch_starts(width, window, stride)
    masks = torch.zeros(len(tops) * len(lefts), 1, height, width, device=images.device)
    for index, (top, left) in enumerate((top, left) for top in tops for left in lefts):
        masks[index, :, top:top + window, left:left + window] = 1
    baseline = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    drops = torch.zeros(count, height, width, device=images.device)
    with torch.no_grad(), evaluation_mode(model):
        clean, target = class_scores(model(images), target)
        for image in range(count):
            for chunk in masks.split(batch_size):
                occluded = images[image] * (1 - chunk) + baseline * chunk
                scores, _ = class_scores(model(occluded), target[image])
                drops[image] += ((clean[image] - scores).view(-1, 1, 1) * chunk[:, 0]).sum(0)
    return drops / masks[:, 0].sum(0)


INTEGRATION_RULES = ("trapezoid", "left", "right", "middle", "gauss-legendre")


def integration_rule(steps: int, rule: str = "trapezoid") -> tuple[torch.Tensor, torch.Tensor]:
    """(alphas, weights) of a quadrature of a function on [0, 1]: sum(weights * f(alphas)) ~ its integral.
    The weights sum to 1 for every rule, so a constant gradient integrates exactly."""
    if rule not in INTEGRATION_RULES:
        raise CnnkitError(f"Unknown integration rule {rule!r}; choose one of {', '.join(INTEGRATION_RULES)}.")
    if steps < 2:
        raise CnnkitError(f"Integrated gradients needs at least 2 steps (got {steps}).")
    if rule == "gauss-legendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy((nodes + 1) / 2).float(), torch.from_numpy(weights / 2).float()
    if rule == "trapezoid":
        weights = torch.full((steps,), 1 / (steps - 1))
        weights[[0, -1]] /= 2
        return torch.linspace(0, 1, steps), weights
    offset = {"left": 0.0, "middle": 0.5, "right": 1.0}[rule]
    return (torch.arange(steps) + offset) / steps, torch.full((steps,), 1 / steps)


def integrated_gradients(model: nn.Module, images: torch.Tensor, target=None,
                         baseline: float | torch.Tensor = 0.0, steps: int = 50, rule: str = "trapezoid",
                         batch_size: int = 64) -> torch.Tensor:
    """Integrated gradients: (N, C, H, W) signed attributions in score units, summing to about
    f(x) - f(baseline) for the target class. The ``steps`` points of the path go through the model
    ``batch_size`` at a time; ``rule`` is the quadrature (:func:`integration_rule`)."""
    alphas, weights = (values.to(images) for values in integration_rule(steps, rule))
    baseline = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images)
    with evaluation_mode(model):
        with torch.no_grad():
            _, target = class_scores(model(images), target)
        path_gradient = torch.zeros_like(images)
        for image in range(images.shape[0]):
            difference = images[image] - baseline[image]
            for alpha, weight in zip(alphas.split(batch_size), weights.split(batch_size)):
                points = baseline[image] + alpha.view(-1, 1, 1, 1) * difference
                gradient = _input_gradient(model, points, target[image])
                path_gradient[image] += (weight.view(-1, 1, 1, 1) * gradient).sum(0)
    return (images - baseline).detach() * path_gradient


def positive_part(maps: torch.Tensor) -> torch.Tensor:
    """Signed (N, H, W) maps -> their positive part scaled so each maximum is 1 (all zeros where none)."""
    maps = maps.detach().clamp_min(0)
    return maps / maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


def plot_attribution(display_images: torch.Tensor, heatmaps: dict[str, torch.Tensor], png: str | Path,
                     targets: torch.Tensor | None = None, class_names: Sequence[str] | None = None) -> Path:
    """For each image a row: the image (titled with the class explained), then each heatmap as an overlay
    (``heatmaps``: title -> (N, H, W)), or as a picture of its own when it is (N, C, H, W) in [0, 1] (guided
    backpropagation and deconvnet projections)."""
    count = display_images.shape[0]
    columns = 1 + len(heatmaps)
    figure, axes = plots.subplots(count * columns, columns=columns, panel_size=3.0)
    for row in range(count):
        title = "input"
        if targets is not None:
            index = int(targets[row])
            named = class_names and index < len(class_names)
            title = f"input: {class_names[index]}" if named else f"input: class {index}"
        plots.show(axes[row * columns], plots.for_display(display_images[row]), title)
        for column, (name, maps) in enumerate(heatmaps.items(), start=1):
            if maps.ndim == 4:
                plots.show(axes[row * columns + column], plots.for_display(maps[row]), name)
            else:
                plots.overlay(axes[row * columns + column], display_images[row], maps[row], name)
    return plots.save(figure, png)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    target=None,
    gradcam_layer: str | None = None,
    methods: tuple[str, ...] = ("saliency", "smoothgrad"),
    display_images: torch.Tensor | None = None,
    png: str | Path | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Run the chosen ``methods`` (``"saliency"``, ``"smoothgrad"``, plus ``"gradcam"`` when ``gradcam_layer``
    is given) and, with ``png``, draw them over ``display_images`` ((N, C, H, W) in [0, 1]; default: the
    input rescaled). Returns ``{method: (N, H, W) heatmaps, "target": classes explained}``."""
    used_target = explained_classes(model, images, target)
    result: dict[str, torch.Tensor] = {}
    if "saliency" in methods:
        result["saliency"] = saliency(model, images, used_target)
    if "smoothgrad" in methods:
        result["smoothgrad"] = smoothgrad(model, images, used_target)
    if gradcam_layer is not None:
        result["gradcam"] = gradcam(model, images, gradcam_layer, used_target)
    if png is not None:
        display = display_images if display_images is not None else plots.scale_each(images)
        plot_attribution(display, result, png, used_target, class_names)
    result["target"] = used_target
    return result
