"""Transfer learning: reuse a network trained on a large dataset for a new task with little data.

The notes' recipe (seed 003, "Transfer learning: fine tuning"; seed 002, "Train using transfer learning"):
replace the output layer, train the new head with the pretrained base frozen, then unfreeze some upper layers
and continue at about 0.1x the learning rate; with very little data, fit a linear classifier on features taken
from different stages. Each step is one call here:

    model = create_model("efficientnet_lite0", pretrained="imagenet")
    replace_head(model, num_classes=10)
    freeze(model)                                    # everything but the classifier; frozen BN stays in eval
    Trainer(model, data, TrainConfig(...)).fit()     # the one training loop
    unfreeze(model, from_="stage8")                  # the top stages, then train on at lr x 0.1

or all at once: ``finetune(model, data, "two-phase", TrainConfig(...))``; ``linear_probe(model, data,
stages=...)`` compares logistic regressions on each stage's pooled features; ``advise(n_images, similarity)``
returns the notes' 2x2 advice table entry.

Stages. ``stages(model)`` names the stages of every zoo model (ResNet's ``layer1..4``, EfficientNet's
``stage2..8`` of the paper's Table 1, VGG/AlexNet blocks between max-pools, ...). Each stage owns parameter
prefixes (for freezing and per-stage learning rates) and, for chain-shaped networks, a module computing it:
running the stages in order *is* the model's forward pass (a test checks this for every zoo model), which is
what lets ``stage_outputs`` stop early and ``extract_features`` return multi-stage outputs like timm's
``features_only``. The last stage is always ``classifier``: the layers ``replace_head`` renews.

Frozen layers stay in eval mode. A frozen batch-norm layer in train mode would still normalise with batch
statistics and overwrite its running mean/variance (Keras issue 9214), silently changing the "frozen" base.
``freeze`` therefore installs a ``train()`` override on every module of a frozen stage that keeps it in eval
mode (BN uses and keeps its running statistics; dropout and stochastic depth are off, so a frozen base is a
deterministic feature extractor). The Trainer calls ``model.train()`` every epoch and needs no change.
``hold_batchnorm_statistics`` does the same for every BN layer of a network fine-tuned whole with small batches.

Small images are always enlarged to the backbone's input size (``resize="interpolate"``), never zero-padded
into a frame as the training loop does by default for LeNet-style inputs.
"""

from __future__ import annotations

import dataclasses
import time
import types
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data.datasets import DatasetBundle, TensorImageDataset
from .errors import CnnkitError, ShapeError, UnknownNameError, did_you_mean

CLASSIFIER = "classifier"


class HeadNotFoundError(CnnkitError):
    """The model's output layer could not be identified, so it cannot be replaced."""


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


# ------------------------------------------------------------------------------------------ freezing
def _train_frozen(self: nn.Module, mode: bool = True) -> nn.Module:
    # Installed on modules of frozen stages: whatever mode the model is put in, these stay in eval mode.
    return nn.Module.train(self, False)


def _modules_of(model: nn.Module, selected: Iterable[Stage]):
    selected = list(selected)
    return [(n, m) for n, m in model.named_modules() if n and any(s.owns(n) for s in selected)]


def freeze(model: nn.Module, until: str | None = None, *, eval_mode: bool = True) -> list[str]:
    """Freeze every stage up to and including ``until`` (default: all but the classifier). Their parameters
    stop requiring gradients and, unless ``eval_mode=False``, their modules are held in eval mode so
    batch-norm running statistics are used and left untouched. Returns the frozen stage names."""
    model_stages = stages(model)
    last = _stage_index(model_stages, until) if until else len(model_stages) - 2
    frozen = model_stages[:last + 1]
    for name, p in model.named_parameters():
        if any(s.owns(name.rsplit(".", 1)[0]) for s in frozen):
            p.requires_grad_(False)
    if eval_mode:
        for _, module in _modules_of(model, frozen):
            module.train = types.MethodType(_train_frozen, module)
            nn.Module.train(module, False)
    return [s.name for s in frozen]


def unfreeze(model: nn.Module, from_: str | None = None) -> list[str]:
    """Make ``from_`` and every stage above it trainable again (default: the whole model), restoring their
    normal train/eval behaviour. Returns the trainable stage names."""
    model_stages = stages(model)
    first = _stage_index(model_stages, from_) if from_ else 0
    thawed = model_stages[first:]
    for name, p in model.named_parameters():
        if any(s.owns(name.rsplit(".", 1)[0]) for s in thawed):
            p.requires_grad_(True)
    for _, module in _modules_of(model, thawed):
        module.__dict__.pop("train", None)
        nn.Module.train(module, model.training)
    return [s.name for s in thawed]


def hold_batchnorm_statistics(model: nn.Module) -> int:
    """Keep every batch-norm layer in eval mode (its running statistics used and left as they are) while its
    scale and shift stay trainable: for fine-tuning a whole pretrained network with small batches, where batch
    statistics are noisy and a low BN momentum (EfficientNet's 0.01) leaves the running ones lagging the
    weights. ``unfreeze`` releases them. Returns the number of layers held."""
    held = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train = types.MethodType(_train_frozen, module)
            nn.Module.train(module, False)
            held += 1
    return held


def is_frozen(model: nn.Module, stage: str) -> bool:
    selected = stages(model)[_stage_index(stages(model), stage)]
    params = [p for n, p in model.named_parameters() if selected.owns(n.rsplit(".", 1)[0])]
    return bool(params) and not any(p.requires_grad for p in params)


def stage_lr_multipliers(model: nn.Module, decay: float = 0.5, from_: str | None = None) -> dict[str, float]:
    """Discriminative learning rates (Howard & Ruder 2018): the classifier at 1x, each stage below it at
    ``decay`` times the one above. The result is a ``TrainConfig.lr_multipliers`` mapping of prefixes."""
    model_stages = stages(model)
    first = _stage_index(model_stages, from_) if from_ else 0
    out = {}
    for depth, stage in enumerate(reversed(model_stages[first:])):
        for prefix in stage.prefixes:
            out[prefix] = round(decay ** depth, 8)
    return out


# ------------------------------------------------------------------------------------------ head and input
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
    a small random head gives small gradients to the base it sits on). Updates ``model.cnnkit_config`` so
    checkpoints rebuild the new shape. Returns the model."""
    if num_classes < 1:
        raise CnnkitError(f"num_classes must be at least 1, got {num_classes}.")
    layers = _output_layers(model)
    model_name = getattr(model, "cnnkit_config", {}).get("name", type(model).__name__)
    if not layers:
        raise HeadNotFoundError(f"could not find the output layer of {model_name}: its last stage "
                                f"{stages(model)[-1].name!r} has no layer with parameters. Replace it yourself "
                                "(setattr on the model) or register a stage definition in "
                                "cnnkit.transfer.STAGE_BUILDERS.")
    for name, layer in layers:
        if not isinstance(layer, nn.Linear):
            hint = " (build lenet5 with output='linear')" if type(layer).__name__ == "RBFOutput" else ""
            raise HeadNotFoundError(f"the output layer of {model_name} ({name}) is a {type(layer).__name__}, not a "
                                    f"linear layer, so replace_head cannot renew it{hint}.")
        head = nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None).to(layer.weight.device,
                                                                                          layer.weight.dtype)
        nn.init.normal_(head.weight, std=0.01)
        if head.bias is not None:
            nn.init.zeros_(head.bias)
        _set_module(model, name, head)
    if hasattr(model, "cnnkit_config"):
        model.cnnkit_config = {**model.cnnkit_config, "num_classes": num_classes}
    if getattr(model, "pretrained_config", None):
        # The pretrained preprocessing still applies; its class names no longer do.
        config = {k: v for k, v in model.pretrained_config.items() if k != "class_names"}
        model.pretrained_config = {**config, "num_classes": num_classes}
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
    so an image whose channels are all equal gives the original response. Normalisation constants in the
    model's configs are averaged to match."""
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
    if hasattr(model, "cnnkit_config"):
        model.cnnkit_config = {**model.cnnkit_config, "in_channels": in_channels}
    for attr in ("default_config", "pretrained_config"):
        config = getattr(model, attr, None)
        if config and config.get("mean"):
            def fit(values):
                return [sum(values) / len(values)] if in_channels == 1 else (list(values) * in_channels)[:in_channels]

            setattr(model, attr, {**config, "mean": fit(config["mean"]), "std": fit(config["std"])})
    return model


# ------------------------------------------------------------------------------------------ features
class _StopForward(Exception):
    pass


def stage_outputs(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The outputs of the named stages for an input batch (timm's ``features_only``). Chain models stop after
    the last stage asked for, so early stages cost only their own layers."""
    model_stages = stages(model)
    wanted = {_stage_index(model_stages, n) for n in names}
    out: dict[str, torch.Tensor] = {}
    if all(s.forward is not None for s in model_stages):
        for i, stage in enumerate(model_stages[:max(wanted) + 1]):
            x = stage.forward(x)
            if i in wanted:
                out[stage.name] = x
        return out
    handles = []
    remaining = set(names)

    def hook(stage_name):
        def capture(_module, _inputs, output):
            out[stage_name] = output
            remaining.discard(stage_name)
            if not remaining:
                raise _StopForward

        return capture

    for i in sorted(wanted):
        stage = model_stages[i]
        handles.append(model.get_submodule(stage.output_module).register_forward_hook(hook(stage.name)))
    try:
        model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


def pool_features(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling of maps (N, C, H, W) -> (N, C); vectors pass through."""
    return x.mean(dim=(2, 3)) if x.ndim == 4 else x.flatten(1)


def transfer_preprocess(model: nn.Module, image_shape=None, input_size: int | None = None, data_mean=None,
                        data_std=None, augment: dict | None = None):
    """The Preprocess a pretrained model expects: its pretrained (or default) input size and mean/std."""
    from .data.augment import AugmentConfig, Preprocess

    cfg = getattr(model, "pretrained_config", None) or getattr(model, "default_config", None) or {}
    mean, std = cfg.get("mean") or data_mean, cfg.get("std") or data_std
    if mean is None:
        raise CnnkitError("the model declares no normalisation and no dataset mean/std was given.")
    size = input_size or (cfg.get("input_size") or [None])[-1]
    # Always interpolate: zero-padding a 32x32 image into 224x224 (the loop's default for small images) would
    # show the backbone a thumbnail in a black frame.
    return Preprocess(mean, std, (size, size) if size else None, AugmentConfig.from_dict(augment),
                      resize="interpolate")


def _autocast(device: torch.device, precision: str):
    if precision not in ("fp32", "bf16"):
        raise CnnkitError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


@torch.no_grad()
def extract_features(model: nn.Module, images, stage: str | Sequence[str] | None = None, *,
                     preprocess=None, batch_size: int = 64, pool: bool = True, flip: bool = False,
                     dtype: torch.dtype = torch.float32, channels_last: bool = True,
                     precision: str = "fp32", progress: bool = False) -> torch.Tensor | dict[str, torch.Tensor]:
    """Features of ``images`` (a uint8 (N, C, H, W) tensor, a dataset with ``.images``, or an already
    preprocessed float tensor) at one stage (a tensor) or several (a dict of tensors, one pass for all).
    ``stage`` defaults to the last stage before the classifier. ``pool`` averages maps to vectors; ``flip``
    mirrors the images first (for test-time or cached flip augmentation). ``precision="bf16"`` runs the model
    under bfloat16 autocast (on these CPUs EfficientNet-Lite0 at 224 px: 4x faster, and the linear probe on its
    features within 0.4 points of fp32's); features are returned as ``dtype``. The model runs in eval mode
    and is put back in the mode it was in."""
    images = getattr(images, "images", images)
    names = [stage] if isinstance(stage, str) else list(stage or [stages(model)[-2].name])
    if preprocess is None and images.dtype == torch.uint8:
        preprocess = transfer_preprocess(model)
    was_training = model.training
    model.eval()
    if channels_last:  # depthwise and 1x1 convolutions run several times faster on CPU in NHWC
        model.to(memory_format=torch.channels_last)
    collected: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    bar = None
    if progress:
        from .progress import progress_bar

        bar = progress_bar(len(images), f"features {','.join(names)}", unit="img")
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            if flip:
                x = x.flip(3)
            x = preprocess(x) if preprocess is not None else x.float()
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(x.device, precision):
                outputs = stage_outputs(model, x, names)
            for name, value in outputs.items():
                value = pool_features(value.float()) if pool else value
                collected[name].append(value.to(dtype).contiguous())
            if bar is not None:
                bar.update(len(x))
    finally:
        if bar is not None:
            bar.close()
        model.train(was_training)
    result = {n: torch.cat(v) for n, v in collected.items()}
    return result[names[0]] if isinstance(stage, str) or stage is None else result


# ------------------------------------------------------------------------------- training on cached features
class StageTail(nn.Module):
    """The stages above ``after`` of a chain model, sharing its modules: training the tail on cached outputs
    of a frozen base trains the model itself, at the cost of the top stages only."""

    def __init__(self, model: nn.Module, after: str):
        super().__init__()
        model_stages = stages(model)
        index = _stage_index(model_stages, after)
        if any(s.forward is None for s in model_stages):
            raise CnnkitError(f"{type(model).__name__} is not a chain of stages, so its top cannot run on cached "
                              "features.")
        self.body = nn.Sequential(*(s.forward for s in model_stages[index + 1:]))
        name = getattr(model, "cnnkit_config", {}).get("name", type(model).__name__)
        self.cnnkit_config = {"name": f"{name} above {after}"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def feature_bundle(name: str, train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                   test_labels: torch.Tensor, classes: list[str]):
    """A DatasetBundle whose "images" are cached stage outputs (maps, or pooled vectors as C x 1 x 1 maps),
    for the one training loop. The loop's preprocessing divides pixels by 255 and normalises; a mean of 0 and
    a std of 1/255 make that the identity on features."""
    def as_maps(x):
        return x[:, :, None, None] if x.ndim == 2 else x

    train = FeatureDataset(as_maps(train_features), train_labels.long(), list(classes))
    test = FeatureDataset(as_maps(test_features), test_labels.long(), list(classes))
    return DatasetBundle(name, train, test, list(classes), (0.0,), (1.0 / 255.0,), note="cached features")


@dataclasses.dataclass
class FeatureDataset(TensorImageDataset):
    """Cached float features (N, C, H, W) in place of uint8 images."""

    def __post_init__(self):
        if not self.images.is_floating_point() or self.images.ndim != 4:
            raise CnnkitError(f"features must be a float (N, C, H, W) tensor, got {self.images.dtype} "
                              f"{tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise CnnkitError(f"{len(self.images)} feature rows but {len(self.labels)} labels")

    def subset(self, indices) -> FeatureDataset:
        indices = torch.as_tensor(indices, dtype=torch.long)
        return FeatureDataset(self.images[indices], self.labels[indices], self.classes)


def train_on_features(model: nn.Module, after: str, bundle, config, out=None, callbacks=()):
    """A Trainer for the stages of ``model`` above ``after``, reading a ``feature_bundle`` of that stage's cached
    outputs: ``.fit()`` trains the model's own modules (shared with the tail), ``.evaluate(FeatureDataset)``
    scores it on other cached features."""
    from .train import Trainer

    return Trainer(StageTail(model, after), bundle, config, out=out, callbacks=callbacks)


# ------------------------------------------------------------------------------------------ linear probes
def fit_linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                     c_values: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 1.0), seed: int = 0,
                     groups: torch.Tensor | None = None, test_views: Sequence[torch.Tensor] = (),
                     progress: bool = False) -> dict:
    """Logistic regression on standardised features, its regularisation chosen by 3-fold cross-validation on
    the training features only. Returns test accuracy (%), the chosen C, seconds, and the test images' predicted
    class probabilities (columns in class order), for ensembles.

    ``groups``: when ``train_x`` holds several views of each image (e.g. an image and its mirror image), the
    image each row came from. The folds then keep an image's views together: split apart, a view in the
    validation fold is nearly a copy of one in the training folds and cross-validation rewards the weakest
    regularisation (measured: it chose C = 1, 3 points worse on the test set than the C it picks this way).
    ``test_views``: other views of the test images (e.g. mirrored), whose predicted probabilities are averaged
    with those of ``test_x`` (test-time augmentation). ``progress``: one step per logistic-regression fit (3 per
    candidate C, then the final one), as a bar or plain lines (cnnkit.progress)."""
    from .progress import progress_bar

    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise CnnkitError("linear probes use scikit-learn, which is not installed; run: "
                          "pip install 'cnnkit[analysis]'") from None
    if len(train_x) != len(train_y) or (groups is not None and len(groups) != len(train_x)):
        raise CnnkitError(f"linear probe: {len(train_x)} feature rows, {len(train_y)} labels"
                          + (f" and {len(groups)} groups" if groups is not None else "") + "; they must match.")
    for view in test_views:
        if view.shape != test_x.shape:
            raise CnnkitError(f"linear probe: a test view has shape {tuple(view.shape)}, the test features "
                              f"{tuple(test_x.shape)}; every view must hold the same images.")
    start = time.perf_counter()
    scaler = StandardScaler().fit(train_x.float().numpy())
    xtr = scaler.transform(train_x.float().numpy())
    ytr, yte = train_y.numpy(), test_y.numpy()
    best_c, best_score = c_values[0], -1.0
    searched = len(c_values) > 1
    bar = progress_bar(3 * len(c_values) * searched + 1, f"linear probe on {xtr.shape[1]} features", unit="fit",
                       enabled=progress)
    if searched:
        if groups is None:
            folds, fold_groups = StratifiedKFold(3, shuffle=True, random_state=seed), None
        else:
            folds, fold_groups = GroupKFold(3), groups.numpy()
        for c in c_values:
            score = cross_val_score(LogisticRegression(C=c, max_iter=3000, random_state=seed), xtr, ytr, cv=folds,
                                    groups=fold_groups).mean()
            if score > best_score:
                best_c, best_score = c, score
            bar.update(3)
            bar.set_postfix(C=c, cv_accuracy=f"{100 * score:.2f}%")
    classifier = LogisticRegression(C=best_c, max_iter=3000, random_state=seed).fit(xtr, ytr)
    bar.update(1)
    bar.close()
    views = (test_x, *test_views)
    probabilities = sum(classifier.predict_proba(scaler.transform(view.float().numpy())) for view in views) / len(views)
    accuracy = 100.0 * float((classifier.classes_[probabilities.argmax(1)] == yte).mean())
    # Columns for every class 0..max label, zero for a class the training labels lacked.
    full = torch.zeros(len(yte), int(max(ytr.max(), yte.max())) + 1, dtype=torch.float32)
    full[:, torch.as_tensor(classifier.classes_)] = torch.as_tensor(probabilities, dtype=torch.float32)
    return {"accuracy": accuracy, "C": best_c, "cv_accuracy": 100.0 * float(best_score) if best_score >= 0 else None,
            "features": xtr.shape[1], "test_views": len(views), "seconds": time.perf_counter() - start,
            "probabilities": full}


def linear_probe(model: nn.Module, data, stage: str | Sequence[str] | None = None, *, input_size: int | None = None,
                 batch_size: int = 64, progress: bool = False) -> list[dict]:
    """The notes' "linear classifier on features from different stages": for each stage (default: all below
    the classifier), a logistic regression on its pooled features of ``data.train``, scored on ``data.test``.
    Returns one row per stage: stage, accuracy (%), features, C, seconds."""
    names = [stage] if isinstance(stage, str) else list(stage or [s.name for s in stages(model)[:-1]])
    preprocess = transfer_preprocess(model, input_size=input_size, data_mean=data.mean, data_std=data.std)
    start = time.perf_counter()
    train = extract_features(model, data.train, names, preprocess=preprocess, batch_size=batch_size, progress=progress)
    test = extract_features(model, data.test, names, preprocess=preprocess, batch_size=batch_size, progress=progress)
    extraction = time.perf_counter() - start
    rows = []
    for name in names:
        row = fit_linear_probe(train[name], data.train.labels, test[name], data.test.labels, progress=progress)
        rows.append({"stage": name, **row, "extraction_seconds": extraction})
    return rows


def format_probe_table(rows: list[dict]) -> str:
    lines = [f"{'stage':<14} {'features':>8} {'accuracy':>9} {'C':>6}"]
    best = max(r["accuracy"] for r in rows)
    for r in rows:
        mark = "  <- best" if r["accuracy"] == best else ""
        lines.append(f"{r['stage']:<14} {r['features']:>8} {r['accuracy']:>8.2f}% {r['C']:>6g}{mark}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ strategies
STRATEGIES = ("linear", "head", "two-phase", "full")


def prepare(model: nn.Module, data, *, new_head: bool = True, channel_mode: str = "sum") -> nn.Module:
    """Fit a pretrained model to a dataset: adapt the input channels (1-channel data on an RGB backbone sums
    the first-layer filters by default, see ``adapt_input_channels``), put a new head for the dataset's
    classes, and make the training loop use the backbone's own normalisation."""
    channels = data.image_shape[0]
    model_channels = getattr(model, "cnnkit_config", {}).get("in_channels") or _first_conv(model)[1].in_channels
    if channels != model_channels:
        if channels != 1 and channel_mode != "repeat":
            raise ShapeError(f"the model reads {model_channels}-channel images but {data.name} has {channels}; "
                             "adapt it with channel_mode='repeat' (--channels repeat) or load the data with "
                             f"{model_channels} channels.")
        adapt_input_channels(model, channels, channel_mode)
    num_classes = len(data.classes)
    if new_head:
        replace_head(model, num_classes)
    else:
        current = getattr(model, "cnnkit_config", {}).get("num_classes")
        if current is not None and current != num_classes:
            raise CnnkitError(f"the model predicts {current} classes but {data.name} has {num_classes}; "
                              "keep new_head=True (drop --keep-head) to train a new classifier for them.")
    pretrained = getattr(model, "pretrained_config", None)
    if pretrained:  # the Trainer normalises with default_config: make it the pretrained weights' own
        model.default_config = {**(getattr(model, "default_config", None) or {}),
                                "mean": list(pretrained["mean"]), "std": list(pretrained["std"])}
    return model


def _native_input_size(model: nn.Module) -> int | None:
    cfg = getattr(model, "pretrained_config", None) or {}
    size = cfg.get("crop") or (cfg.get("input_size") or [None])[-1]
    return int(size) if size else None


def finetune(model: nn.Module, data, strategy: str = "two-phase", config=None, *, top_stages: int = 2,
             lr_factor: float = 0.1, head_epochs: int | None = None, stage: str | Sequence[str] | None = None,
             lr_decay: float | None = None, new_head: bool = True, channel_mode: str = "sum", out=None,
             callbacks=()) -> dict:
    """Transfer ``model`` to ``data`` with one of the notes' strategies, through the one training loop.

    ``linear``: logistic regression on the pooled features of ``stage`` (default: every stage, a comparison
    table). ``head``: train only the new classifier, the base frozen. ``two-phase``: the head first
    (``head_epochs``, default ``config.epochs``), then the ``top_stages`` highest stages too at
    ``lr x lr_factor`` (0.1 in the notes). ``full``: every layer from the start. ``lr_decay`` adds
    discriminative learning rates (each stage ``lr_decay`` times the one above) to the trainable stages.
    Images are resized to the backbone's input size unless ``config.input_size`` says otherwise; ``callbacks``
    go to every Trainer (called after each epoch with the trainer and its metrics).
    Returns ``{"strategy", "phases": [Trainer summaries], "test_acc"}`` (``"probes"`` for ``linear``)."""
    from pathlib import Path

    from .train import TrainConfig, Trainer

    if strategy not in STRATEGIES:
        raise UnknownNameError(f"Unknown strategy {strategy!r}.{did_you_mean(strategy, STRATEGIES)}")
    config = config or TrainConfig()
    prepare(model, data, new_head=new_head or strategy == "linear", channel_mode=channel_mode)
    if config.input_size is None and _native_input_size(model):
        config = dataclasses.replace(config, input_size=_native_input_size(model))
    config = dataclasses.replace(config, resize="interpolate")  # enlarge small images, never frame them
    if strategy == "linear":
        rows = linear_probe(model, data, stage, input_size=config.input_size, progress=config.progress)
        return {"strategy": strategy, "probes": rows, "test_acc": max(r["accuracy"] for r in rows)}
    out = Path(out) if out else None

    def with_decay(cfg, first_stage=None):
        if lr_decay is None:
            return cfg
        return dataclasses.replace(cfg, lr_multipliers={**stage_lr_multipliers(model, lr_decay, first_stage),
                                                        **cfg.lr_multipliers})

    phases = []
    if strategy == "full":
        unfreeze(model)
        phases.append(Trainer(model, data, with_decay(config), out=out, callbacks=callbacks).fit())
    else:
        freeze(model)
        head_config = dataclasses.replace(config, epochs=head_epochs or config.epochs)
        head_out = (out / "head") if out and strategy == "two-phase" else out
        two_phases = strategy == "two-phase" and top_stages > 0
        if two_phases:  # two trainings follow each other; say which is which
            print(f"phase 1/2: the new head only, the base frozen ({head_config.epochs} epochs, lr {config.lr:g})",
                  flush=True)
        phases.append(Trainer(model, data, head_config, out=head_out, callbacks=callbacks).fit())
        if two_phases:
            first = upper_stages(model, top_stages)[0]
            unfreeze(model, from_=first)
            tuned = dataclasses.replace(config, lr=config.lr * lr_factor)
            print(f"phase 2/2: the head and the top {top_stages} stages (from {first}) unfrozen "
                  f"({tuned.epochs} epochs, lr {tuned.lr:g})", flush=True)
            phases.append(Trainer(model, data, with_decay(tuned, first), out=out, callbacks=callbacks).fit())
    return {"strategy": strategy, "phases": phases, "test_acc": phases[-1]["test_acc"]}



# ------------------------------------------------------------------------------------------ advice
@dataclasses.dataclass(frozen=True)
class Advice:
    data: str  # "very little" | "quite a lot"
    similarity: str  # "very similar" | "very different"
    strategy: str  # a finetune() strategy
    stages: str  # which stages to train or probe
    recommendation: str
    reason: str


LITTLE_DATA_BELOW = 10_000  # labelled images; below this, fine-tuning many layers mostly overfits


def advise(n_images: int, similarity: str | float, little_data_below: int = LITTLE_DATA_BELOW) -> Advice:
    """The notes' 2x2 table (seed 000, "Transfer Learning?"): very little / quite a lot of data x a dataset very
    similar / very different from the one the network was pretrained on. ``similarity`` is "similar" or
    "different" (or a number in [0, 1], >= 0.5 meaning similar)."""
    if isinstance(similarity, (int, float)):
        similar = float(similarity) >= 0.5
    else:
        key = similarity.strip().lower().replace("very ", "")
        if key not in ("similar", "different"):
            raise CnnkitError(f"similarity must be 'similar' or 'different' (or a number in [0, 1]), "
                              f"not {similarity!r}.")
        similar = key == "similar"
    if n_images < 0:
        raise CnnkitError(f"n_images must be >= 0, got {n_images}.")
    little = n_images < little_data_below
    data = "very little" if little else "quite a lot"
    kind = "very similar" if similar else "very different"
    if little and similar:
        return Advice(data, kind, "linear", "top", "Use a linear classifier on the top layer.",
                      "The top features already describe this kind of image, and with few labels any layer you "
                      "train beyond a linear classifier overfits.")
    if little:
        return Advice(data, kind, "linear", "each", "You're in trouble: try linear classifiers on features from "
                      "different stages and keep the best (cnnkit finetune --strategy linear).",
                      "Upper layers are specific to the original task, so the best features may sit lower, and there "
                      "is too little data to retrain them.")
    if similar:
        return Advice(data, kind, "two-phase", "a few top stages", "Fine-tune a few layers: train the new head with "
                      "the base frozen, then unfreeze the top stages at about 0.1x the learning rate.",
                      "Generic lower layers transfer as they are; enough data lets the specific top layers adapt "
                      "without overfitting.")
    return Advice(data, kind, "full", "most stages", "Fine-tune a larger number of layers (or all of them), after "
                  "a head-only warm-up, at a reduced learning rate.",
                  "A different domain needs more of the network to change, and there is enough data to change it; "
                  "pretrained weights remain a better start than random ones.")


# ------------------------------------------------------------------------------------------ pretrained predict
def load_photo(path, config: dict) -> torch.Tensor:
    """A photo as the pretrained weights saw their evaluation images: shorter side resized to
    ``config["resize"]`` (with the config's interpolation), centre crop of ``config["crop"]``; uint8 (3, H, W)."""
    from .data.formats import read_image

    from .data.image_io import shorter_side_size

    image = read_image(path, 3)  # raises ImageError naming the file when it cannot be read, or is too large
    height, width = image.shape[-2:]
    width_out, height_out = shorter_side_size(width, height, config["resize"], config["crop"], str(path))
    size = (height_out, width_out)
    mode = config.get("interpolation", "bilinear")
    top, left = (size[0] - config["crop"]) // 2, (size[1] - config["crop"]) // 2
    # One channel at a time: a float copy of a whole 40-megapixel photo would take 480 MB; channels are
    # resized independently, so the result is the same.
    channels = [F.interpolate(plane[None, None].float(), size=size, mode=mode, align_corners=False, antialias=True)
                [0, 0, top:top + config["crop"], left:left + config["crop"]] for plane in image]
    return torch.stack(channels).clamp_(0, 255).round().to(torch.uint8)


@torch.no_grad()
def classify_images(model: nn.Module, files, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-k (class name, probability) per photo for a model loaded with registered pretrained weights
    (``create_model("efficientnet_lite0", pretrained="imagenet")``), using the weights' own preprocessing."""
    from .data.augment import Preprocess

    config = getattr(model, "pretrained_config", None)
    if not config or not config.get("class_names"):
        raise CnnkitError("this model carries no pretrained configuration with class names; build it with "
                          "create_model(NAME, pretrained=TAG) (see cnnkit.weights.list_pretrained()).")
    if not files:
        raise CnnkitError("no image files given.")
    batch = torch.stack([load_photo(f, config) for f in files])
    model.eval()
    probabilities = torch.softmax(model(Preprocess(config["mean"], config["std"])(batch)).float(), dim=1)
    top = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    names = config["class_names"]
    return [[(names[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
            for values, indices in zip(top.values, top.indices)]
