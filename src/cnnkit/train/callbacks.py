"""Events of the one training loop, in the fastai / Keras manner: subclass :class:`Callback`, override the
events you need, and pass it to ``Trainer(callbacks=[...])``.

    class PrintLoss(Callback):
        def on_batch_end(self, trainer, batch):
            if batch.step % 100 == 0:
                print(batch.epoch, batch.step, float(batch.loss))

    Trainer(model, data, config, callbacks=[PrintLoss()]).fit()

Events, in the order they fire: ``on_fit_start`` (after the run folder is claimed or resumed), then for every
epoch ``on_epoch_start``, ``on_before_optimizer_step`` after the backward pass of each optimiser step (the
gradients are complete: summed over ``accumulate`` batches, all-reduced under DDP, not yet clipped, and under
fp16 still multiplied by ``trainer.scaler.get_scale()``; tasks that run their own steps, such as a GAN's, do
not fire it), ``on_batch_end`` after each training batch,
``on_epoch_end`` after the epoch's checkpoint is written; ``on_fit_end`` with the run's summary. A callback
may set ``trainer.stop_requested``: the loop ends after the current batch (from ``on_batch_end``) or epoch,
then evaluates and saves as usual.

A plain function ``f(trainer, metrics)`` in the list is an ``on_epoch_end`` callback, as before this module.
:class:`TensorBoardLogger` is the callback behind ``TrainConfig(tensorboard=True)`` (``--tensorboard``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..errors import CnnkitError


@dataclasses.dataclass(frozen=True)
class BatchEnd:
    """What ``on_batch_end`` learns about the batch just trained. ``loss`` and the values of ``metrics`` (the
    task's per-batch sums, e.g. classification's ``correct``) are tensors on the device: reading them (float())
    waits for the device, so a callback that runs every batch reads them only when it needs to."""

    epoch: int  # 1-based, the epoch being trained
    step: int  # 1-based batch index within the epoch
    steps: int  # batches in this epoch
    size: int  # images in the batch (this process's share under DDP)
    loss: torch.Tensor  # the batch's mean loss, detached
    metrics: dict[str, torch.Tensor]


class Callback:
    """Base class: every event is a no-op, so a callback overrides only the events it uses."""

    def on_fit_start(self, trainer) -> None:
        pass

    def on_epoch_start(self, trainer, epoch: int) -> None:
        pass

    def on_before_optimizer_step(self, trainer) -> None:
        pass

    def on_batch_end(self, trainer, batch: BatchEnd) -> None:
        pass

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        pass

    def on_fit_end(self, trainer, summary: dict) -> None:
        pass


class EpochEndFunction(Callback):
    """A plain ``f(trainer, metrics)`` called at the end of every epoch (the callbacks of earlier versions)."""

    def __init__(self, function: Callable):
        self.function = function

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        self.function(trainer, metrics)


def as_callback(callback: Callback | Callable) -> Callback:
    return callback if isinstance(callback, Callback) else EpochEndFunction(callback)


def notify(callbacks: Iterable[Callback | Callable], event: str, trainer, *args) -> None:
    """Fire ``event`` (an ``on_...`` name) on every callback, in the list's order. The list is read when the
    event fires, so callbacks appended to ``trainer.callbacks`` after construction take part too."""
    for callback in list(callbacks):
        getattr(as_callback(callback), event)(trainer, *args)


class StopAtTarget(Callback):
    """Ends training after the first epoch whose ``metric`` reaches ``target`` (``>=``, or ``<=`` with
    ``higher_is_better=False``): a time-to-accuracy run stops paying for epochs once it has its answer."""

    def __init__(self, metric: str, target: float, higher_is_better: bool = True):
        self.metric, self.target, self.higher_is_better = metric, target, higher_is_better

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        value = metrics.get(self.metric)
        if value is None:
            raise CnnkitError(f"StopAtTarget watches {self.metric!r}, which the epoch's metrics do not have "
                              f"({', '.join(metrics)}); pass one of those.")
        if value >= self.target if self.higher_is_better else value <= self.target:
            trainer.stop_requested = True


class TensorBoardLogger(Callback):
    """The run in TensorBoard, beside (not instead of) its metrics.csv and summary.json: each numeric column of
    an epoch's row as the scalar ``epoch/<column>`` at step = epoch (plus ``epoch/loss_scale`` under fp16);
    with ``every_steps``, ``step/loss`` and ``step/lr`` every that many batches at the run's batch number; the
    run's options as text at its start; at its end curves.png and the first convolution's filters as images.
    Only the main process writes (the Trainer attaches it there)."""

    def __init__(self, log_dir: str | Path, every_steps: int = 0):
        try:  # torch's writer needs the tensorboard package, an optional extra of cnnkit
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnkitError("TensorBoard logging (tensorboard=True, --tensorboard) needs the tensorboard package: "
                              "pip install 'cnnkit[tensorboard]' (or pip install tensorboard).") from None
        self.writer_class, self.log_dir, self.every_steps = SummaryWriter, Path(log_dir), every_steps
        self.writer = None

    def on_fit_start(self, trainer) -> None:
        # Created now, not with the Trainer: a new run claims (or, with overwrite, empties) its folder first.
        self.writer = self.writer_class(str(self.log_dir))
        if trainer.epoch == 0:
            self.writer.add_text("config", "    " + json.dumps(trainer.run_description(), indent=2,
                                                               default=str).replace("\n", "\n    "))

    def on_batch_end(self, trainer, batch: BatchEnd) -> None:
        if not self.every_steps or batch.step % self.every_steps:
            return
        step = (batch.epoch - 1) * batch.steps + batch.step
        self.writer.add_scalar("step/loss", float(batch.loss), step)
        self.writer.add_scalar("step/lr", trainer.current_lr(), step)

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        epoch = metrics["epoch"]
        for name, value in metrics.items():
            # Epochs that were not validated have NaN validation figures (empty cells in metrics.csv).
            if name != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{name}", value, epoch)
        if trainer.scaler.is_enabled():
            self.writer.add_scalar("epoch/loss_scale", trainer.scaler.get_scale(), epoch)
        self.writer.flush()

    def on_fit_end(self, trainer, summary: dict) -> None:
        curves = trainer.out / "curves.png"
        if curves.is_file():
            import numpy as np
            from PIL import Image

            with Image.open(curves) as image:
                self.writer.add_image("curves", np.asarray(image.convert("RGB")), trainer.epoch, dataformats="HWC")
        filters = first_layer_filters(trainer.model)
        if filters is not None:
            self.writer.add_images("first_layer_filters", filters, trainer.epoch)
        self.writer.close()


def first_layer_filters(model: torch.nn.Module, side: int = 32) -> torch.Tensor | None:
    """The first convolution's kernels as images (N, 1 or 3, side, side) in [0, 1], each stretched over its own
    range and enlarged without smoothing; None for a model without one. Kernels over other than 3 input channels
    are shown as their mean over those channels."""
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if conv is None:
        return None
    kernels = conv.weight.detach().float().cpu()
    if kernels.shape[1] != 3:
        kernels = kernels.mean(1, keepdim=True)
    low = kernels.amin(dim=(1, 2, 3), keepdim=True)
    high = kernels.amax(dim=(1, 2, 3), keepdim=True)
    kernels = (kernels - low) / (high - low).clamp_min(1e-12)
    scale = max(1, side // max(kernels.shape[-2:]))
    return torch.nn.functional.interpolate(kernels, scale_factor=scale, mode="nearest")
