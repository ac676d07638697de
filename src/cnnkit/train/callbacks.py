"""Events of the one training loop, in the fastai / Keras manner: subclass :class:`Callback`, override the
events you need, and pass it to ``Trainer(callbacks=[...])``.

    class PrintLoss(Callback):
        def on_batch_end(self, trainer, batch):
            if batch.step % 100 == 0:
                print(batch.epoch, batch.step, float(batch.loss))

    Trainer(model, data, config, callbacks=[PrintLoss()]).fit()

Events, in the order they fire: ``on_fit_start`` (after the run folder is claimed or resumed), then for every
epoch ``on_epoch_start``, ``on_before_optimizer_step`` after the backward pass of each optimiser step (the
gradients are complete: summed over ``accumulate`` batches, all-reduced under DDP, not yet clipped; tasks that
run their own steps, such as a GAN's, do not fire it), ``on_batch_end`` after each training batch,
``on_epoch_end`` after the epoch's checkpoint is written; ``on_fit_end`` with the run's summary. A callback
may set ``trainer.stop_requested``: the loop ends after the current batch (from ``on_batch_end``) or epoch,
then evaluates and saves as usual.

A plain function ``f(trainer, metrics)`` in the list is an ``on_epoch_end`` callback, as before this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch


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
