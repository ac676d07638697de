"""Which pixels a prediction depends on: vanilla gradients, SmoothGrad and Grad-CAM.

- Saliency (Simonyan et al. 2014): |d score / d input|, the largest over colour channels.
- SmoothGrad (Smilkov et al. 2017): the saliency averaged over copies of the input with Gaussian noise,
  which removes the speckle of the raw gradient.
- Grad-CAM (Selvaraju et al. 2017): the layer's channels weighted by the spatial mean of the score's
  gradient, summed, ReLU'd and upsampled: coarse, but class-discriminative and robust.

``target`` is one class index per image (or one for all); None explains the predicted class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UnknownNameError
from . import plots
from .hooks import UnitOutOfRangeError, evaluation_mode, record_outputs


def _class_scores(logits: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
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
    scores, _ = _class_scores(model(images), target)
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
        scores, _ = _class_scores(model(images.detach().requires_grad_(True)), target)
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


def plot_attribution(display_images: torch.Tensor, heatmaps: dict[str, torch.Tensor], png: str | Path,
                     targets: torch.Tensor | None = None, class_names: Sequence[str] | None = None) -> Path:
    """For each image a row: the image (titled with the class explained), then each heatmap as an overlay
    (``heatmaps``: title -> (N, H, W))."""
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
    with torch.no_grad(), evaluation_mode(model):
        _, used_target = _class_scores(model(images), target)
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
