"""Optimisers and learning-rate schedules, built from names. torch implements them all; this module only
maps the names a recipe uses onto torch's classes and decides how often each schedule steps.

Schedules that change within an epoch (cosine, one-cycle, warm-up) step once per batch; ``step`` and
``plateau`` (the notes' "divide by 10 when the validation error plateaus") step once per epoch.
"""

from __future__ import annotations

import fnmatch

import torch
from torch.optim import lr_scheduler

from ..errors import UnknownNameError, did_you_mean
from .config import OPTIMIZERS

SCHEDULES = ("constant", "step", "plateau", "cosine", "onecycle")


def param_groups(model: torch.nn.Module, weight_decay: float, lr: float, lr_multipliers: dict | None = None):
    """Trainable parameters in groups: no weight decay on biases and normalisation parameters (their scale is
    not what an L2 prior is about), and optional learning-rate multipliers for discriminative fine-tuning by
    name prefix (``{"features.": 0.1}``) or shell-style pattern (``{"*norm*.bias": 64}``); the first match wins."""
    lr_multipliers = lr_multipliers or {}

    def matches(name: str, pattern: str) -> bool:
        return fnmatch.fnmatchcase(name, pattern) if any(c in pattern for c in "*?[") else name.startswith(pattern)

    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decay = 0.0 if p.ndim <= 1 else weight_decay
        mult = next((m for pattern, m in lr_multipliers.items() if matches(name, pattern)), 1.0)
        groups.setdefault((decay, mult), []).append(p)
    if not groups:
        raise ValueError("the model has no trainable parameters (is everything frozen?)")
    return [{"params": ps, "weight_decay": d, "lr": lr * m, "lr_multiplier": m} for (d, m), ps in groups.items()]


def build_optimizer(model, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                    nesterov: bool = False, betas=(0.9, 0.999), lr_multipliers: dict | None = None):
    groups = param_groups(model, weight_decay, lr, lr_multipliers)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(betas))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    if name == "nadam":  # Adam with Nesterov momentum (Dozat 2016): Keras' "nadam", the notes' Fashion-MNIST choice
        return torch.optim.NAdam(groups, lr=lr, betas=tuple(betas))
    raise UnknownNameError(f"Unknown optimizer {name!r}.{did_you_mean(name, OPTIMIZERS)}")


class Schedule:
    """A torch LR scheduler plus when to step it ('batch' or 'epoch')."""

    def __init__(self, scheduler, interval: str, metric: str | None = None):
        self.scheduler, self.interval, self.metric = scheduler, interval, metric

    def step_batch(self) -> None:
        if self.scheduler is not None and self.interval == "batch":
            self.scheduler.step()

    def step_epoch(self, metrics: dict) -> None:
        if self.scheduler is None or self.interval != "epoch":
            return
        if isinstance(self.scheduler, lr_scheduler.ReduceLROnPlateau):
            if self.metric not in metrics:
                raise ValueError(f"plateau schedule watches {self.metric!r}, but the epoch reported {sorted(metrics)}")
            self.scheduler.step(metrics[self.metric])
        else:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def build_schedule(optimizer, name: str, epochs: int, steps_per_epoch: int, milestones=(), gamma: float = 0.1,
                   warmup_epochs: float = 0.0, plateau_metric: str = "val_loss", plateau_patience: int = 2,
                   plateau_factor: float = 0.1, onecycle_pct: float = 0.25, final_lr_fraction: float = 0.0) -> Schedule:
    total = max(1, epochs * steps_per_epoch)
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if name == "constant":
        sched, interval = None, "epoch"
    elif name == "step":
        sched, interval = lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma), "epoch"
    elif name == "plateau":
        higher_is_better = ("acc", "accuracy", "top5", "psnr", "ssim", "iou", "dice")
        mode = "max" if plateau_metric.endswith(higher_is_better) else "min"
        sched = lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=plateau_factor, patience=plateau_patience)
        interval = "epoch"
    elif name == "cosine":
        base = [g["lr"] for g in optimizer.param_groups]
        sched = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total - warmup),
                                               eta_min=min(base) * final_lr_fraction)
        interval = "batch"
    elif name == "onecycle":
        # One-cycle (Smith 2018): warm up to the peak over ``onecycle_pct`` of training, then anneal to ~0.
        # One spare step: the scheduler is stepped after the last update too, and must not run past its end.
        # torch's OneCycleLR divides by the warm-up's length in steps minus one: give it at least two steps
        # whenever there is room (very short runs, e.g. a few batches in a test or a tiny fine-tune).
        warmup_steps = max(onecycle_pct * total, 2.0) if total >= 4 else onecycle_pct * total
        sched = lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                        total_steps=total + 1, pct_start=warmup_steps / (total + 1),
                                        anneal_strategy="linear",
                                        cycle_momentum=False, div_factor=25.0, final_div_factor=1e3)
        return Schedule(sched, "batch")
    else:
        raise UnknownNameError(f"Unknown schedule {name!r}.{did_you_mean(name, SCHEDULES)}")
    if warmup > 0:
        if interval != "batch":
            raise ValueError(f"warm-up is counted in batches; use it with cosine or onecycle, not {name!r}")
        ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / max(1, warmup), total_iters=warmup)
        sched = lr_scheduler.SequentialLR(optimizer, [ramp, sched], milestones=[warmup])
    return Schedule(sched, interval, plateau_metric if name == "plateau" else None)
