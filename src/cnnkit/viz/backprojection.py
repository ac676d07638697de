"""Guided backpropagation and deconvnet reconstructions: the gradient with a different backward rule for ReLU.

The three methods differ only in what the backward pass of a rectifier lets through (Springenberg et al.
2014, figure 1):

    plain gradient      grad_in = grad_out * [x > 0]                  (where the input was positive)
    deconvnet           grad_in = max(grad_out, 0)                     (Zeiler & Fergus 2014: the "unpooled,
                                                                        rectified" signal, whatever x was)
    guided backprop     grad_in = max(grad_out, 0) * [x > 0]           (both masks)

Everything else backpropagates as usual; max pooling's gradient routes each value to the position that won
the forward max, which is exactly the deconvnet's "switches", and a convolution's gradient is the transposed
filter. :func:`relu_backward_rule` swaps the rule inside a ``with`` block through a ``TorchFunctionMode``,
so it reaches ``nn.ReLU`` (in place or not), ``F.relu``/``torch.relu``/``Tensor.relu`` and the clipped ReLU6
of EfficientNet-Lite (``nn.ReLU6``, ``F.relu6``, ``F.hardtanh`` from 0): no model needs its modules
replaced. In-place calls return a new tensor instead (the zoo models use the returned value).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import CnnkitError
from . import plots
from .attribution import class_scores
from .hooks import UnitOutOfRangeError, evaluation_mode, record_outputs

RULES = ("guided", "deconvnet")


class _RectifierWithRule(torch.autograd.Function):
    """clamp(x, 0, upper) forward; the chosen rule backward."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, upper: float | None, rule: str) -> torch.Tensor:
        passed = inputs > 0
        if upper is not None:
            passed &= inputs < upper
        ctx.save_for_backward(passed)
        ctx.rule = rule
        return inputs.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (passed,) = ctx.saved_tensors
        rectified = grad_output.clamp_min(0)
        if ctx.rule == "guided":
            rectified = rectified * passed
        return rectified, None, None


_RELU_FUNCTIONS = {F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}
_RELU6_FUNCTIONS = {F.relu6}


class _RuleMode(TorchFunctionMode):
    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELU_FUNCTIONS:
            return _RectifierWithRule.apply(args[0], None, self.rule)
        if func in _RELU6_FUNCTIONS:
            return _RectifierWithRule.apply(args[0], 6.0, self.rule)
        if func is F.hardtanh:
            low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            if low == 0:  # nn.ReLU6 is a Hardtanh(0, 6); a hardtanh from -1 is no rectifier
                return _RectifierWithRule.apply(args[0], float(high), self.rule)
        return func(*args, **kwargs)


@contextlib.contextmanager
def relu_backward_rule(rule: str) -> Iterator[None]:
    """Inside the block every rectifier backpropagates by ``rule`` (``"guided"`` or ``"deconvnet"``)."""
    if rule not in RULES:
        raise CnnkitError(f"Unknown backward rule {rule!r}; choose one of {', '.join(RULES)}.")
    with _RuleMode(rule):
        yield


def _class_projection(model: nn.Module, images: torch.Tensor, target, rule: str) -> torch.Tensor:
    images = images.detach().clone().requires_grad_(True)
    with evaluation_mode(model), relu_backward_rule(rule):
        scores, _ = class_scores(model(images), target)
        (gradient,) = torch.autograd.grad(scores.sum(), images)
    return gradient


def guided_backprop(model: nn.Module, images: torch.Tensor, target=None) -> torch.Tensor:
    """Guided backpropagation of the class score (Springenberg et al. 2014): (N, C, H, W), signed, in input
    units (the raw gradient; :func:`as_picture` turns it into an image)."""
    return _class_projection(model, images, target, "guided")


def deconvnet(model: nn.Module, images: torch.Tensor, target=None, layer: str | None = None,
              channel: int | None = None) -> torch.Tensor:
    """Deconvnet reconstruction (Zeiler & Fergus 2014): (N, C, H, W) in input units.

    With ``layer`` and ``channel``: for each image, the channel's strongest activation in that layer alone
    (every other activation of the layer set to zero, as in the paper's section 2.1) projected back to pixel
    space (:func:`unit_projection`). Without: the class score's projection, as Captum's ``Deconvolution``."""
    if layer is None:
        return _class_projection(model, images, target, "deconvnet")
    if channel is None:
        raise CnnkitError("Give the channel whose top activation to project (channel=...), or no layer to "
                          "project the class score.")
    return unit_projection(model, images, layer, channel, "deconvnet")


def unit_projection(model: nn.Module, images: torch.Tensor, layer: str, channel: int,
                    rule: str = "deconvnet") -> torch.Tensor:
    """The top activation of ``channel`` in ``layer``, per image, projected to pixels by ``rule``. The
    deconvnet's projection depends on the image only through max-pooling switches: in a network without max
    pooling (EfficientNet) it is the same for every image, the unit's filter rather than what it saw
    (Mahendran & Vedaldi 2016). ``"guided"`` also masks where the forward ReLUs were off, so it follows the
    image."""
    images = images.detach().clone().requires_grad_(True)
    with evaluation_mode(model), relu_backward_rule(rule), record_outputs(model, [layer]) as recorded:
        model(images)
        activation = recorded[layer]
        if activation.ndim != 4 or not 0 <= channel < activation.shape[1]:
            raise UnitOutOfRangeError(f"Layer {layer!r} outputs {tuple(activation.shape)}; the deconvnet needs "
                                      f"(N, C, H, W) maps and a channel from 0 to {activation.shape[1] - 1} "
                                      f"(got {channel}).")
        maps = activation[:, channel].flatten(1)
        top = maps.detach().argmax(dim=1, keepdim=True)
        (gradient,) = torch.autograd.grad(maps.gather(1, top).sum(), images)
    # The top activation's value scales the projection, as when the paper feeds the kept activation back.
    return gradient * maps.detach().gather(1, top).view(-1, 1, 1, 1)


def strongest_channel(model: nn.Module, images: torch.Tensor, layer: str) -> int:
    """The channel of ``layer`` with the largest single activation over ``images``."""
    with torch.no_grad(), evaluation_mode(model), record_outputs(model, [layer]) as recorded:
        model(images)
    activation = recorded[layer]
    if activation.ndim != 4:
        raise UnitOutOfRangeError(f"Layer {layer!r} outputs {tuple(activation.shape)}, not (N, C, H, W) maps; "
                                  "pick a convolutional layer.")
    return int(activation.transpose(0, 1).flatten(1).amax(dim=1).argmax())


def as_picture(projection: torch.Tensor, percentile: float = 99.5) -> torch.Tensor:
    """Signed (N, C, H, W) projections as images in [0, 1]: 0 maps to grey and each image's
    ``percentile``-th |value| to 0 or 1, beyond it clipped (how Zeiler & Fergus and Springenberg et al. show
    them; scaling by the maximum alone would leave most of a gradient image grey)."""
    # The percentile of the pixels reached: a unit's projection is zero outside its receptive field.
    scale = torch.stack([torch.quantile(reached[reached > 0], percentile / 100) if reached.any() else reached.sum()
                         for reached in projection.detach().abs().flatten(1)]).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (0.5 + 0.5 * projection.detach() / scale).clamp(0, 1)


def support_box(projection: torch.Tensor, margin: int = 0, threshold: float = 0.0) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the pixels a (C, H, W) projection reaches, widened by ``margin``: with
    ``threshold`` 0 the unit's receptive field on this image; with 0.05 the pixels above 5% of its largest
    value (a deep unit's receptive field covers most of the image, its projection far less). The whole image
    when it reaches none."""
    magnitude = projection.detach().abs().sum(dim=0)
    reached = magnitude > threshold * magnitude.max()
    rows, columns = reached.any(dim=1).nonzero().flatten(), reached.any(dim=0).nonzero().flatten()
    height, width = reached.shape
    if rows.numel() == 0:
        return 0, height, 0, width
    return (max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, height),
            max(int(columns[0]) - margin, 0), min(int(columns[-1]) + 1 + margin, width))


def plot_unit_projections(display_images: torch.Tensor, projections: dict[str, torch.Tensor], png: str | Path,
                          unit: str, threshold: float = 0.05) -> Path:
    """For each image a row: the image, the patch its projections cover (pixels above ``threshold`` of the
    first projection's largest value) and each projection (``projections``: rule -> (N, C, H, W)) cut to that
    patch, as in Zeiler & Fergus's figure 2."""
    columns = 2 + len(projections)
    figure, axes = plots.subplots(columns * len(display_images), columns=columns, panel_size=2.6)
    pictures = {rule: as_picture(values) for rule, values in projections.items()}
    first = next(iter(projections.values()))
    for row, image in enumerate(display_images):
        top, bottom, left, right = support_box(first[row], margin=2, threshold=threshold)
        panels = [(image, "input"), (image[:, top:bottom, left:right], f"patch of {unit}")]
        panels += [(picture[row][:, top:bottom, left:right], rule) for rule, picture in pictures.items()]
        for column, (panel, title) in enumerate(panels):
            plots.show(axes[columns * row + column], plots.for_display(panel), title)
    return plots.save(figure, png)
