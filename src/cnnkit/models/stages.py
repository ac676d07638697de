"""Stages: a model's named groups of layers, input to output (timm's ``feature_info`` idea).

Each model family knows its own stages and says so in a ``feature_stages()`` method next to its layers
(ResNet's ``layer1..4``, EfficientNet's ``stage2..8`` of the paper's Table 1, VGG/AlexNet blocks between
max-pools, ...); any other network gets :func:`generic_stages`. Each stage owns parameter prefixes (for
freezing and per-stage learning rates) and, for chain-shaped networks, a module computing it: running the
stages in order *is* the model's forward pass, which lets transfer learning stop early and return multi-stage
outputs like timm's ``features_only``. The last stage is always ``classifier``: the layers a new head renews.
The tools that use stages (freezing, features, probes) live in :mod:`cnnkit.transfer`, above the models.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import CnnkitError, UnknownNameError, did_you_mean
from ..layers import ScaledTanh, TrainableSubsampling

CLASSIFIER = "classifier"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    prefixes: tuple[str, ...]  # parameter / module name prefixes this stage owns, each ending in "."
    forward: nn.Module | None  # computes the stage from the previous one's output; None for non-chain models
    output_module: str | None = None  # for non-chain models: the module whose output is the stage's output

    def owns(self, name: str) -> bool:
        return any((name + ".").startswith(p) for p in self.prefixes)


class PooledClassifier(nn.Sequential):
    """Global pooling, then the classifier layers. Pooled vectors (cached features) skip the pooling, so the
    same head trains on maps or on cached pooled features."""

    def __init__(self, pool: nn.Module, *layers: nn.Module):
        super().__init__(pool, nn.Flatten(1), *layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        for module in modules[2:] if x.ndim == 2 else modules:
            x = module(x)
        return x


def own_children(model: nn.Module, *names: str) -> list[Stage]:
    """One chain stage per named child, the stage called as the child: Xception's flows, an encoder/decoder."""
    return [Stage(name, (f"{name}.",), getattr(model, name)) for name in names]


_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, ScaledTanh)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, TrainableSubsampling)


def split_sequential(sequence: nn.Sequential, prefix: str, name: str = "block") -> list[Stage]:
    """Cut a conv/act/pool Sequential after each pooling layer (and the activation that follows it, as in
    LeNet's subsample-then-squash): VGG's five blocks, AlexNet's conv1..conv5 groups, LeNet's C1-S2, C3-S4."""
    children = list(sequence.named_children())
    groups, current = [], []
    for i, (child_name, child) in enumerate(children):
        current.append((child_name, child))
        next_child = children[i + 1][1] if i + 1 < len(children) else None
        after_pool = isinstance(child, _POOLS) or (
            len(current) > 1 and isinstance(current[-2][1], _POOLS) and isinstance(child, _ACTIVATIONS))
        if after_pool and not (isinstance(child, _POOLS) and isinstance(next_child, _ACTIVATIONS)):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return [Stage(f"{name}{i}", tuple(f"{prefix}{n}." for n, _ in group), nn.Sequential(*(m for _, m in group)))
            for i, group in enumerate(groups, 1)]


def features_then_classifier(model: nn.Module, pool: nn.Module | None = None) -> list[Stage]:
    """The blocks of ``model.features`` between pools, then ``model.classifier``, behind ``pool`` where the
    model pools before it (VGG, AlexNet); LeNet's classifier starts with its own Flatten."""
    classifier = model.classifier if pool is None else PooledClassifier(pool, model.classifier)
    return split_sequential(model.features, "features.") + [Stage(CLASSIFIER, ("classifier.",), classifier)]


def generic_stages(model: nn.Module) -> list[Stage]:
    """For a model without ``feature_stages``: one stage per top-level child with parameters (outputs read by
    hooks), the last being the classifier."""
    children = [(n, c) for n, c in model.named_children() if any(True for _ in c.parameters())]
    if not children:
        raise CnnkitError(f"{type(model).__name__} has no child modules with parameters, so it has no stages.")
    out = [Stage(n, (f"{n}.",), None, n) for n, _ in children]
    last = out[-1]
    out[-1] = Stage(CLASSIFIER, last.prefixes, None, last.output_module)
    return out


def model_stages(model: nn.Module) -> list[Stage]:
    """The model's named stages, input to output: its family's ``feature_stages()``, else the generic ones.
    Rebuilt on each call, so it always reflects a replaced head."""
    family_stages = getattr(model, "feature_stages", None)
    return family_stages() if callable(family_stages) else generic_stages(model)


def stage_index(model_stages: list[Stage], name: str) -> int:
    names = [s.name for s in model_stages]
    if name not in names:
        raise UnknownNameError(f"Unknown stage {name!r}.{did_you_mean(name, names)} (in order: {', '.join(names)})")
    return names.index(name)


class _StopForward(Exception):
    """Raised by the hook of the last stage a caller wants, so the layers above it never run."""


def run_stages(model: nn.Module, model_stages: list[Stage], x: torch.Tensor,
               wanted: set[int]) -> dict[int, torch.Tensor]:
    """The outputs of the stages at the ``wanted`` positions of ``model_stages`` for the batch ``x``, by position.
    A chain model runs its stages in order and stops after the last one wanted, so early stages cost only their
    own layers; any other model runs its forward pass with a hook on each wanted stage's output module, stopped
    as soon as all have fired. (``cnnkit.transfer.stage_outputs`` and ``features_only`` both come here.)"""
    out: dict[int, torch.Tensor] = {}
    if all(s.forward is not None for s in model_stages):
        for i, stage in enumerate(model_stages[:max(wanted) + 1]):
            x = stage.forward(x)
            if i in wanted:
                out[i] = x
        return out
    remaining = set(wanted)

    def hook(index):
        def capture(_module, _inputs, output):
            out[index] = output
            remaining.discard(index)
            if not remaining:
                raise _StopForward

        return capture

    handles = [model.get_submodule(model_stages[i].output_module).register_forward_hook(hook(i))
               for i in sorted(wanted)]
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return out
