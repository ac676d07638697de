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


def first_module_of_type(model: nn.Module, kind: type[nn.Module]) -> str | None:
    for name, module in model.named_modules():
        if name and isinstance(module, kind):
            return name
    return None


def executed_layers(model: nn.Module, images: torch.Tensor, kind: type[nn.Module] = nn.Module) -> list[str]:
    """Names of the submodules of type ``kind`` that run when ``model`` (in eval mode) reads ``images``, in the
    order they first run. Definition order can mislead: GoogLeNet defines its auxiliary heads, which only
    run in training, after its main classifier."""
    order: list[str] = []
    handles = [
        module.register_forward_hook(lambda *_, name=name: order.append(name) if name not in order else None)
        for name, module in model.named_modules()
        if name and isinstance(module, kind)
    ]
    try:
        with torch.no_grad(), evaluation_mode(model):
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return order


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
                raise CnnkitError(f"Layer {name!r} returns a {type(output).__name__}, not a tensor, so it cannot be "
                                  "shown or differentiated; pick one of its submodules or a layer after it.")
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
def record_last_input(model: nn.Module, kind: type[nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, after a forward pass ``recorded["input"]`` is the input of the *last* module of type
    ``kind`` that ran (and ``recorded["name"]`` its name): with ``nn.Linear`` that is the final classifier's
    input, the penultimate-layer features, whatever else the model defines."""
    recorded: dict = {}

    def make_hook(name: str):
        def hook(module, inputs):
            recorded["input"], recorded["name"] = inputs[0], name

        return hook

    handles = [module.register_forward_pre_hook(make_hook(name))
               for name, module in model.named_modules() if name and isinstance(module, kind)]
    try:
        yield recorded
    finally:
        for handle in handles:
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
