"""Dead units (notes deck 000, "dying ReLU"): a ReLU whose input is negative for every image outputs zero for
all of them, passes no gradient back, and so never learns its way out. A too-high learning rate (one large step
that pushes a unit's bias far negative) kills units this way; Leaky ReLU and ELU keep a gradient on the negative
side, which is why they were proposed.

    fractions = dead_unit_fractions(model, images)      # {"features.1": DeadUnits(dead=3, units=32), ...}
    dead_unit_fraction(model, images)                   # 0.12: all activation layers together

What counts as a unit: one neuron of a fully connected layer (feature ``j`` of a ``(batch, features)`` input), one
feature map of a convolutional layer (channel ``c`` of ``(batch, channels, height, width)``, over every position).
A unit is *dead on these images* when the input of its activation -- the pre-activation -- is never above zero,
for every image and position: its ReLU output is zero throughout. The same test is applied to Leaky ReLU and ELU
units, where it means "never in the linear, positive regime"; they still pass (small) gradients there, so unlike
a ReLU such a unit can come back. The answer depends on the images: use a held-out batch of a few hundred, and
say which.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import CnnkitError
from .hooks import evaluation_mode

# The piecewise activations with a "dead" side; bounded ones (sigmoid, tanh) saturate rather than die.
DYING_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.PReLU, nn.RReLU, nn.CELU, nn.SELU)


@dataclasses.dataclass(frozen=True)
class DeadUnits:
    dead: int  # units whose pre-activation was never > 0 on the images
    units: int  # units of the layer (features or channels)

    @property
    def fraction(self) -> float:
        return self.dead / self.units if self.units else 0.0


def dead_unit_fractions(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                        kinds: tuple[type[nn.Module], ...] = DYING_ACTIVATIONS) -> dict[str, DeadUnits]:
    """For each activation layer of ``model`` of one of ``kinds`` (by ``named_modules()`` name, in the order they
    ran): how many of its units never had a positive input on ``images`` (a preprocessed float batch), run in
    eval mode in batches of ``batch_size``. One module applied at several places (a shared ``nn.ReLU``) counts a
    unit as alive if it fired at any of them, and is refused when their unit counts differ."""
    if not isinstance(images, torch.Tensor) or images.ndim < 2 or not images.is_floating_point() or not len(images):
        raise CnnkitError(f"dead_unit_fractions needs a non-empty float batch (N, ...) of preprocessed inputs, got "
                          f"{_describe(images)}; normalise the images as the model was trained on them.")
    peaks: dict[str, torch.Tensor] = {}  # the largest pre-activation seen per unit

    def make_hook(name: str):
        def hook(module, inputs):
            # A pre-hook sees the input before an inplace activation overwrites it.
            x = inputs[0].detach()
            peak = x.transpose(0, 1).reshape(x.shape[1], -1).amax(dim=1) if x.ndim > 1 else x.amax().reshape(1)
            if name in peaks and peaks[name].shape != peak.shape:
                raise CnnkitError(f"{name!r} is one module applied to inputs of {peaks[name].numel()} and "
                                  f"{peak.numel()} units, so its units are not defined; give each place its own "
                                  "activation module.")
            peaks[name] = peak if name not in peaks else torch.maximum(peaks[name], peak)

        return hook

    handles = [module.register_forward_pre_hook(make_hook(name))
               for name, module in model.named_modules() if name and isinstance(module, kinds)]
    if not handles:
        raise CnnkitError(f"{type(model).__name__} has no activation layers of type "
                          f"{', '.join(k.__name__ for k in kinds)} as modules (a functional torch.relu in forward is "
                          "invisible to hooks); build the model with nn.ReLU modules, or pass kinds=.")
    try:
        with torch.no_grad(), evaluation_mode(model):
            for batch in images.split(batch_size):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return {name: DeadUnits(int((peak <= 0).sum()), peak.numel()) for name, peak in peaks.items()}


def dead_unit_fraction(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                       kinds: tuple[type[nn.Module], ...] = DYING_ACTIVATIONS) -> float:
    """The fraction of all the units of ``model``'s activation layers that are dead on ``images`` (see
    :func:`dead_unit_fractions`): dead units over units, every layer's units counted once."""
    layers = dead_unit_fractions(model, images, batch_size, kinds)
    return sum(layer.dead for layer in layers.values()) / sum(layer.units for layer in layers.values())


def _describe(images) -> str:
    if isinstance(images, torch.Tensor):
        return f"a {images.dtype} tensor of shape {tuple(images.shape)}"
    return f"a {type(images).__name__}"
