"""Stages: a model's named groups of layers, input to output, for freezing, feature extraction and probes.

Stages. ``stages(model)`` names the stages of every zoo model (ResNet's ``layer1..4``, EfficientNet's
``stage2..8`` of the paper's Table 1, VGG/AlexNet blocks between max-pools, ...). Each stage owns parameter
prefixes (for freezing and per-stage learning rates) and, for chain-shaped networks, a module computing it:
running the stages in order *is* the model's forward pass (a test checks this for every zoo model), which is
what lets ``stage_outputs`` stop early and ``extract_features`` return multi-stage outputs like timm's
``features_only``. The last stage is always ``classifier``: the layers ``replace_head`` renews.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..errors import CnnkitError, UnknownNameError, did_you_mean

CLASSIFIER = "classifier"


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    prefixes: tuple[str, ...]  # parameter / module name prefixes this stage owns, each ending in "."
    forward: nn.Module | None  # computes the stage from the previous one's output; None for non-chain models
    output_module: str | None = None  # for non-chain models: the module whose output is the stage's output

    def owns(self, name: str) -> bool:
        return any((name + ".").startswith(p) for p in self.prefixes)


# ------------------------------------------------------------------------------------------------ stages
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.GELU, nn.SiLU)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _is_activation(module: nn.Module) -> bool:
    return isinstance(module, _ACTIVATIONS) or type(module).__name__ in ("ScaledTanh",)


def _is_pool(module: nn.Module) -> bool:
    return isinstance(module, _POOLS) or type(module).__name__ in ("TrainableSubsampling",)


def _split_sequential(sequence: nn.Sequential, prefix: str, name: str = "block") -> list[Stage]:
    """Cut a conv/act/pool Sequential after each pooling layer (and the activation that follows it, as in
    LeNet's subsample-then-squash): VGG's five blocks, AlexNet's conv1..conv5 groups, LeNet's C1-S2, C3-S4."""
    children = list(sequence.named_children())
    groups, current = [], []
    for i, (child_name, child) in enumerate(children):
        current.append((child_name, child))
        next_child = children[i + 1][1] if i + 1 < len(children) else None
        after_pool = _is_pool(child) or (len(current) > 1 and _is_pool(current[-2][1]) and _is_activation(child))
        if after_pool and not (next_child is not None and _is_pool(child) and _is_activation(next_child)):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return [Stage(f"{name}{i}", tuple(f"{prefix}{n}." for n, _ in group), nn.Sequential(*(m for _, m in group)))
            for i, group in enumerate(groups, 1)]


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


def _pooled_classifier(pool: nn.Module, *layers: nn.Module) -> PooledClassifier:
    return PooledClassifier(pool, *layers)


def _efficientnet_stages(m) -> list[Stage]:
    out = [Stage("stem", ("_conv_stem.", "_bn0."), nn.Sequential(m._conv_stem, m._bn0, m.activation))]
    # The paper's Table 1 stages 2-8 each change the width, so consecutive blocks of one width form a stage.
    groups: list[list[int]] = []
    for i, block in enumerate(m._blocks):
        if groups and m._blocks[groups[-1][-1]]._bn2.num_features == block._bn2.num_features:
            groups[-1].append(i)
        else:
            groups.append([i])
    for number, group in enumerate(groups, 2):
        out.append(Stage(f"stage{number}", tuple(f"_blocks.{i}." for i in group),
                         nn.Sequential(*(m._blocks[i] for i in group))))
    out.append(Stage("head", ("_conv_head.", "_bn1."), nn.Sequential(m._conv_head, m._bn1, m.activation)))
    out.append(Stage(CLASSIFIER, ("_fc.",), _pooled_classifier(m._avg_pooling, m._dropout, m._fc)))
    return out


def _resnet_stages(m) -> list[Stage]:
    stem = [m.conv1, m.bn1, m.relu] + ([m.maxpool] if hasattr(m, "maxpool") else [])
    out = [Stage("stem", ("conv1.", "bn1."), nn.Sequential(*stem))]
    layers = [n for n, _ in m.named_children() if n.startswith("layer")]
    out += [Stage(n, (f"{n}.",), getattr(m, n)) for n in layers]
    if hasattr(m, "fc"):
        out.append(Stage(CLASSIFIER, ("fc.",), _pooled_classifier(m.avgpool, m.fc)))
    else:  # CIFAR ResNets end in a GlobalAvgPoolHead
        out.append(Stage(CLASSIFIER, ("head.",), m.head))
    return out


def _vgg_like_stages(m) -> list[Stage]:
    return _split_sequential(m.features, "features.") + [
        Stage(CLASSIFIER, ("classifier.",), _pooled_classifier(m.avgpool, m.classifier))]


def _features_classifier_stages(m) -> list[Stage]:
    # LeNet-5 and the Fashion-MNIST CNN: the classifier Sequential starts with its own Flatten.
    return _split_sequential(m.features, "features.") + [Stage(CLASSIFIER, ("classifier.",), m.classifier)]


def _googlenet_stages(m) -> list[Stage]:
    def group(*names):
        return nn.Sequential(*(getattr(m, n) for n in names))

    # The auxiliary classifiers are heads too (used only in training), so they belong to the classifier stage.
    return [
        Stage("stem", ("stem.",), m.stem),
        Stage("inception3", ("inception3a.", "inception3b."), group("inception3a", "inception3b", "maxpool3")),
        Stage("inception4", tuple(f"inception4{c}." for c in "abcde"),
              group(*(f"inception4{c}" for c in "abcde"), "maxpool4")),
        Stage("inception5", ("inception5a.", "inception5b."), group("inception5a", "inception5b")),
        Stage(CLASSIFIER, ("fc.", "aux1.", "aux2."), _pooled_classifier(m.avgpool, m.dropout, m.fc)),
    ]


def _xception_stages(m) -> list[Stage]:
    out = [Stage(n, (f"{n}.",), getattr(m, n)) for n in ("stem", "entry_flow", "middle_flow", "exit_flow")]
    return out + [Stage(CLASSIFIER, ("fc.",), _pooled_classifier(m.avgpool, m.dropout, m.fc))]


def _autoencoder_stages(m) -> list[Stage]:
    return [Stage("encoder", ("encoder.",), m.encoder), Stage("decoder", ("decoder.",), m.decoder)]


def _unet_stages(m) -> list[Stage]:
    # Skip connections make U-Net a graph, not a chain: its stage outputs are read with forward hooks.
    out = [Stage(f"down{i}", (f"down.{i - 1}.",), None, f"down.{i - 1}") for i in range(1, len(m.down) + 1)]
    out += [Stage(f"up{i}", (f"upsample.{i - 1}.", f"up.{i - 1}."), None, f"up.{i - 1}")
            for i in range(1, len(m.up) + 1)]
    return out + [Stage("head", ("head.",), None, "head")]


STAGE_BUILDERS = {
    "EfficientNetLite": _efficientnet_stages,
    "ResNet": _resnet_stages,
    "CifarResNet": _resnet_stages,
    "VGG": _vgg_like_stages,
    "AlexNet": _vgg_like_stages,
    "AlexNetOWT": _vgg_like_stages,
    "LeNet5": _features_classifier_stages,
    "LeNet5ReLU": _features_classifier_stages,
    "FashionCNN": _features_classifier_stages,
    "GoogLeNet": _googlenet_stages,
    "Xception": _xception_stages,
    "ConvAutoencoder": _autoencoder_stages,
    "UNet": _unet_stages,
}


def stages(model: nn.Module) -> list[Stage]:
    """The model's named stages, input to output. Zoo models have hand-written definitions; any other model
    gets one stage per top-level child with parameters (outputs read by hooks), the last being the
    classifier. Rebuilt on each call, so it always reflects a replaced head."""
    builder = STAGE_BUILDERS.get(type(model).__name__)
    if builder is not None:
        return builder(model)
    children = [(n, c) for n, c in model.named_children() if any(True for _ in c.parameters())]
    if not children:
        raise CnnkitError(f"{type(model).__name__} has no child modules with parameters, so it has no stages.")
    out = [Stage(n, (f"{n}.",), None, n) for n, _ in children]
    last = out[-1]
    out[-1] = Stage(CLASSIFIER, last.prefixes, None, last.output_module)
    return out


def stage_names(model: nn.Module) -> list[str]:
    return [s.name for s in stages(model)]


def _stage_index(model_stages: list[Stage], name: str) -> int:
    names = [s.name for s in model_stages]
    if name not in names:
        raise UnknownNameError(f"Unknown stage {name!r}.{did_you_mean(name, names)} (in order: {', '.join(names)})")
    return names.index(name)


def upper_stages(model: nn.Module, count: int) -> list[str]:
    """The ``count`` highest stages below the classifier (the ones the notes fine-tune first)."""
    body = [s.name for s in stages(model) if s.name != CLASSIFIER]
    if not 0 <= count <= len(body):
        raise CnnkitError(f"{count} upper stages: the model has {len(body)} stages below the classifier "
                          f"({', '.join(body)}); give 0..{len(body)}.")
    return body[len(body) - count:]
