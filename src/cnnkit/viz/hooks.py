"""Finding layers by name and recording what they output, for any ``nn.Module``.

Layer names are those of ``model.named_modules()`` (``"features.0"``, ``"layer3.2.conv1"``), so every tool
works the same on every zoo model without per-architecture code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from ..errors import CnnkitError, UnknownNameError, did_you_mean


class UnitOutOfRangeError(CnnkitError, IndexError):
    """A unit (channel, neuron or class) index that the chosen layer does not have."""


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of ``model``, in definition order (the root itself is left out)."""
    return [name for name, _ in model.named_modules() if name]


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name raises an error listing the valid ones."""
    modules = dict(model.named_modules())
    if not name or name not in modules:
        valid = layer_names(model)
        raise UnknownNameError(
            f"Unknown layer {name!r} in {type(model).__name__}: layer names are those of "
            f"model.named_modules(); pick one of them (see `cnnkit summary`).{did_you_mean(name, valid)}"
        )
    return modules[name]


def last_module_of_type(model: nn.Module, kind: type[nn.Module]) -> str | None:
    """Name of the last submodule of type ``kind`` in definition order, or None."""
    found = None
    for name, module in model.named_modules():
        if name and isinstance(module, kind):
            found = name
    return found


def first_module_of_type(model: nn.Module, kind: type[nn.Module]) -> str | None:
    for name, module in model.named_modules():
        if name and isinstance(module, kind):
            return name
    return None


@contextlib.contextmanager
def record_outputs(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, ``recorded[name]`` holds the output of each named layer from the last forward pass.

    The recorded tensor stays in the autograd graph (so Grad-CAM and activation maximisation can
    differentiate through it). The hook hands the rest of the network a *clone*: many models follow a
    convolution with ``ReLU(inplace=True)``, which would otherwise overwrite the recorded values.
    """
    recorded: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}, not a tensor; pick another layer")
            recorded[name] = output
            return output.clone()

        return hook

    try:
        for name in names:
            handles.append(find_layer(model, name).register_forward_hook(make_hook(name)))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def record_inputs(model: nn.Module, name: str) -> Iterator[dict[str, torch.Tensor]]:
    """Like :func:`record_outputs`, for the (first) input of a layer: the classifier's input is the
    penultimate-layer feature vector."""
    recorded: dict[str, torch.Tensor] = {}

    def hook(module, inputs):
        recorded[name] = inputs[0]

    handle = find_layer(model, name).register_forward_pre_hook(hook)
    try:
        yield recorded
    finally:
        handle.remove()


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put the model in eval mode (no dropout, BN running statistics) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
