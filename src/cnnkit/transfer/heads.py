"""New heads and input channels: replace a pretrained model's output layer(s) for new classes, and rewrite its
first convolution for data with another number of channels."""

from __future__ import annotations

import torch
from torch import nn

from ..card import card_of, model_name, set_card, update_build_record
from ..errors import CnnkitError, ShapeError
from .stage_groups import stages


class HeadNotFoundError(CnnkitError):
    """The model's output layer could not be identified, so it cannot be replaced."""



def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _output_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The last parametrised layer under each classifier prefix (GoogLeNet: fc, aux1.fc2, aux2.fc2)."""
    classifier = stages(model)[-1]
    found = []
    for prefix in classifier.prefixes:
        leaves = [(n, m) for n, m in model.named_modules()
                  if n and (n + ".").startswith(prefix) and not list(m.children())
                  and (any(True for _ in m.parameters(recurse=False)) or type(m).__name__ == "RBFOutput")]
        if leaves:
            found.append(leaves[-1])
    return found


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the output layer(s) with new ones for ``num_classes`` classes (weights ~ N(0, 0.01), bias 0:
    a small random head gives small gradients to the base it sits on). Updates the model's build record so
    checkpoints rebuild the new shape, and its card (the weights' class names no longer apply). Returns the model."""
    if num_classes < 1:
        raise CnnkitError(f"num_classes must be at least 1, got {num_classes}.")
    layers = _output_layers(model)
    if not layers:
        raise HeadNotFoundError(f"could not find the output layer of {model_name(model)}: its last stage "
                                f"{stages(model)[-1].name!r} has no layer with parameters. Replace it yourself "
                                "(setattr on the model) or give the model a feature_stages() method "
                                "(see cnnkit.models.stages).")
    for name, layer in layers:
        if not isinstance(layer, nn.Linear):
            hint = " (build lenet5 with output='linear')" if type(layer).__name__ == "RBFOutput" else ""
            raise HeadNotFoundError(f"the output layer of {model_name(model)} ({name}) is a {type(layer).__name__}, "
                                    f"not a linear layer, so replace_head cannot renew it{hint}.")
        head = nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None).to(layer.weight.device,
                                                                                          layer.weight.dtype)
        nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
        _set_module(model, name, head)
    update_build_record(model, num_classes=num_classes)
    # The weights' preprocessing still applies; their class names no longer do.
    return set_card(model, card_of(model).with_head(num_classes))


def set_linear_head(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """Make a fitted linear classifier (``weight`` (K, D), ``bias`` (K,): e.g. a linear probe's
    :func:`~cnnkit.transfer.probe.folded_head`) the model's output layer: ``replace_head(model, K)`` and its
    weights copied in. The classifier must have been fitted on the features that layer reads (the pooled
    output of the stage below the classifier). Returns the model."""
    if weight.ndim != 2 or bias.shape != weight.shape[:1]:
        raise ShapeError(f"a linear head needs weight (classes, features) and bias (classes,), got "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}.")
    layers = _output_layers(model)
    if len(layers) != 1:
        raise HeadNotFoundError(f"{model_name(model)} has {len(layers)} output layers; set_linear_head needs a "
                                "model with exactly one.")
    name, layer = layers[0]
    if getattr(layer, "bias", None) is None:
        raise HeadNotFoundError(f"the output layer of {model_name(model)} ({name}) has no bias to hold the head's.")
    if getattr(layer, "in_features", None) != weight.shape[1]:
        raise ShapeError(f"the output layer of {model_name(model)} ({name}) reads "
                         f"{getattr(layer, 'in_features', '?')} features; the head was fitted on {weight.shape[1]}.")
    replace_head(model, weight.shape[0])
    head = model.get_submodule(name)
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return model


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise CnnkitError(f"{type(model).__name__} has no Conv2d layer whose input channels could be adapted.")


def adapt_input_channels(model: nn.Module, in_channels: int, mode: str = "sum") -> nn.Module:
    """Make a pretrained model read ``in_channels``-channel images by rewriting its first convolution.

    From 3 to 1 channel, ``mode="sum"`` (default) adds the filters over the RGB inputs: a grey image then gives
    exactly the response the original network gives to that image repeated into R, G and B (with equal
    per-channel normalisation, as for EfficientNet-Lite), at a third of the first layer's cost. ``"average"``
    divides that sum by the old channel count. To more channels, ``"repeat"`` tiles the filters and scales them
    so an image whose channels are all equal gives the original response. The normalisation constants of the
    model's card are averaged to match."""
    name, conv = _first_conv(model)
    old = conv.in_channels
    if in_channels == old:
        return model
    if conv.groups != 1:
        raise ShapeError(f"the first convolution ({name}) is grouped; cannot change its input channels.")
    weight = conv.weight.detach()
    if mode in ("sum", "average") and in_channels == 1:
        new = weight.sum(dim=1, keepdim=True) / (old if mode == "average" else 1)
    elif mode == "repeat":
        reps = -(-in_channels // old)
        new = weight.repeat(1, reps, 1, 1)[:, :in_channels] * (old / in_channels)
    else:
        raise CnnkitError(f"cannot adapt {old} input channels to {in_channels} with mode={mode!r}: use 'sum' or "
                          "'average' for 1-channel data, 'repeat' for more channels.")
    conv.weight = nn.Parameter(new.contiguous(), requires_grad=conv.weight.requires_grad)
    conv.in_channels = in_channels
    update_build_record(model, in_channels=in_channels)
    set_card(model, card_of(model).with_input_channels(in_channels))
    return model
