"""Gradient norms through depth, recorded while training (``TrainConfig.record_gradients = N``, the
``--record-gradients N`` flag): after the backward pass of every N-th optimiser step (and of the very first, at
the initial weights), the L2 norm of each layer's weight gradient and of the weight itself, in the order the
layers run. With bounded activations (sigmoid, tanh) the gradient shrinks at each layer on its way back, so
the first layers of a deep plain net barely learn (notes deck 003); ReLU, batch normalisation and shortcuts
keep it flowing. ``cnnkit viz gradients RUN_DIR ...`` draws the records.

Layers are the modules with a weight of two or more dimensions (convolutions, fully connected layers);
normalisation layers' per-channel scales are left out, as they are no step in depth. The norms are of the
raw gradient (under fp16, divided by the loss scale), before ``grad_clip``, summed over ``accumulate``
micro-batches and, under DDP, all-reduced over the processes. The cost is one pass over the weights on the
recorded steps only, no extra forward pass; nothing runs when recording is off (the default).

``RUN_DIR/gradients.json`` is rewritten after every epoch::

    {"every": N, "layers": [{"name": "conv1", "shape": [16, 3, 3, 3]}, ...],
     "steps":  [{"step": 1, "epoch": 1, "grad_norm": [...], "weight_norm": [...]}, ...],
     "epochs": [{"epoch": 1, "steps_recorded": 5, "grad_norm": [...], "weight_norm": [...]}, ...]}

``step`` counts optimiser steps from the start of the run; an epoch's row is the mean of its recorded steps. A
layer without a gradient at a step (frozen) has ``null`` there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from . import checkpoint as ckpt
from .callbacks import Callback

GRADIENTS_FILE = "gradients.json"
RECORD_FLAG = "--record-gradients"


def recorded_layers(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, weight) of every layer whose gradient norm is recorded, in the order of ``model.named_modules()``
    (the order the layers are defined, which in cnnkit's networks is the order they run)."""
    layers = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(weight, nn.Parameter) and weight.dim() >= 2:
            layers.append((name, weight))
    return layers


def layer_norms(weights: list[nn.Parameter], loss_scale: float = 1.0) -> tuple[list[float | None], list[float]]:
    """(gradient norms, weight norms) of ``weights``: one pass over them, read back to the host at once. The
    gradients are divided by ``loss_scale`` (fp16's GradScaler multiplies the loss by it before backward); a
    layer without a gradient, or with a non-finite one (an fp16 step the scaler skips), has None."""
    with torch.no_grad():
        present = [index for index, weight in enumerate(weights) if weight.grad is not None]
        norms = [torch.linalg.vector_norm(weights[i].grad.float()) for i in present]
        norms += [torch.linalg.vector_norm(weight.float()) for weight in weights]
        values = torch.stack(norms).cpu().tolist() if norms else []
    grad_norms: list[float | None] = [None] * len(weights)
    for position, index in enumerate(present):
        if math.isfinite(values[position]):
            grad_norms[index] = values[position] / loss_scale
    return grad_norms, values[len(present):]


def _loss_scale(trainer) -> float:
    """The factor fp16's GradScaler has multiplied the gradients by (1 without one, or before it unscaled)."""
    scaler = getattr(trainer, "scaler", None)
    return scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0


class GradientRecorder(Callback):
    """Records per-layer gradient norms every ``every`` optimiser steps (the Trainer adds one when
    ``config.record_gradients`` is set) and writes them into the run folder after every epoch."""

    def __init__(self, every: int):
        if every < 1:
            raise ValueError(f"record gradients every N >= 1 optimiser steps, not {every}")
        self.every = every
        self.layers: list[tuple[str, nn.Parameter]] = []
        self.steps: list[dict] = []
        self.epochs: list[dict] = []

    def on_fit_start(self, trainer) -> None:
        self.layers = recorded_layers(trainer.model)
        self.steps, self.epochs = [], []
        path = trainer.out / GRADIENTS_FILE if trainer.out else None
        if trainer.epoch and path is not None and path.is_file():  # resumed: keep what the committed epochs recorded
            earlier = json.loads(path.read_text())
            self.steps = [row for row in earlier.get("steps", []) if row["epoch"] <= trainer.epoch]
            self.epochs = [row for row in earlier.get("epochs", []) if row["epoch"] <= trainer.epoch]

    def on_before_optimizer_step(self, trainer) -> None:
        epoch, step, _ = trainer.batch_position
        global_step = (epoch - 1) * trainer.steps_per_epoch + math.ceil(step / trainer.config.accumulate)
        if not trainer.is_main or (global_step != 1 and global_step % self.every):
            return
        grad_norms, weight_norms = layer_norms([weight for _, weight in self.layers], _loss_scale(trainer))
        self.steps.append({"step": global_step, "epoch": epoch, "grad_norm": grad_norms, "weight_norm": weight_norms})

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        if not trainer.is_main:
            return
        rows = [row for row in self.steps if row["epoch"] == trainer.epoch]
        if rows:
            self.epochs.append({"epoch": trainer.epoch, "steps_recorded": len(rows),
                                "grad_norm": _column_means(rows, "grad_norm"),
                                "weight_norm": _column_means(rows, "weight_norm")})
        if trainer.out:
            ckpt.atomic_write_text(trainer.out / GRADIENTS_FILE, json.dumps(self.records()))

    def records(self) -> dict:
        """What gradients.json holds."""
        layers = [{"name": name, "shape": list(weight.shape)} for name, weight in self.layers]
        return {"every": self.every, "layers": layers, "steps": self.steps, "epochs": self.epochs}


def _column_means(rows: list[dict], key: str) -> list[float | None]:
    means = []
    for column in zip(*(row[key] for row in rows)):
        present = [value for value in column if value is not None]
        means.append(sum(present) / len(present) if present else None)
    return means


def read_gradient_records(run_dir: str | Path) -> dict:
    """``RUN_DIR/gradients.json``, checked; a clear error for a run trained without recording gradients."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{str(run_dir)!r} is not a folder: expected a run folder written by `cnnkit train`.")
    path = run_dir / GRADIENTS_FILE
    if not path.is_file():
        raise CheckpointError(f"{str(run_dir)!r} holds no {GRADIENTS_FILE}: the run was trained without recording "
                              f"gradient norms. Train it with {RECORD_FLAG} N (e.g. {RECORD_FLAG} 50, or "
                              "record_gradients: 50 in a recipe) to record them every N steps.")
    try:
        records = json.loads(path.read_text())
        width = len(records["layers"])
        rows = records["steps"] + records["epochs"]
        if not all(len(row["grad_norm"]) == width == len(row["weight_norm"]) for row in rows):
            raise ValueError("rows of another length than the layer list")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not a gradient record written by the trainer ({exc}); train "
                              f"the run again with {RECORD_FLAG} N.") from None
    if not records["steps"]:
        raise CheckpointError(f"{str(path)!r} holds no recorded step yet: the run stopped before its first epoch "
                              "ended.")
    return records
