"""Fine-tuning: a frozen base (its batch-norm layers held in eval mode), per-stage learning rates, and the
notes' strategies (linear probe, new head only, two-phase, full) through the one training loop.

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
import types
from collections.abc import Iterable, Sequence

from torch import nn

from ..card import build_record, card_of
from ..errors import CnnkitError, ShapeError, UnknownNameError, did_you_mean
from ..train import TrainConfig, Trainer
from .heads import _first_conv, adapt_input_channels, replace_head
from .probe import linear_probe
from .stage_groups import Stage, _stage_index, stages, upper_stages


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


# ------------------------------------------------------------------------------------------ strategies
STRATEGIES = ("linear", "head", "two-phase", "full")


def prepare(model: nn.Module, data, *, new_head: bool = True, channel_mode: str = "sum") -> nn.Module:
    """Fit a pretrained model to a dataset: adapt the input channels (1-channel data on an RGB backbone sums
    the first-layer filters by default, see ``adapt_input_channels``), put a new head for the dataset's
    classes; the training loop normalises with the backbone's own statistics, which its card carries."""
    channels = data.image_shape[0]
    model_channels = build_record(model).get("in_channels") or _first_conv(model)[1].in_channels
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
        current = build_record(model).get("num_classes")
        if current is not None and current != num_classes:
            raise CnnkitError(f"the model predicts {current} classes but {data.name} has {num_classes}; "
                              "keep new_head=True (drop --keep-head) to train a new classifier for them.")
    return model


def _native_input_size(model: nn.Module) -> int | None:
    """The input size the model's weights were trained at (None for a network built from scratch)."""
    card = card_of(model)
    return int(card.crop) if card.source.startswith("pretrained:") and card.crop else None


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
