"""The training state of a run folder: written after every epoch (last.safetensors first, which commits the
epoch, then the model pair and metrics.csv derived from it), and read back by ``fit(resume=True)``, which
continues exactly where the run stopped, also with another number of processes or another epoch budget."""

from __future__ import annotations

import warnings

from . import checkpoint as ckpt
from .report import write_metrics_csv


def save_epoch(trainer) -> None:
    state = {"epoch": trainer.epoch, "history": trainer.history, "best": trainer.best,
             "bad_epochs": trainer.bad_epochs, "world_size": trainer.world_size,
             "steps_per_epoch": trainer.steps_per_epoch, "lr_scale": trainer.lr_scale,
             "epochs": trainer.config.epochs, "lineage": trainer.lineage}
    # The training state first: it commits the epoch for --resume, which rewrites the rest from it.
    ckpt.save_train_state(trainer.out, trainer.model, trainer.optimizer, trainer.schedule, state, ema=trainer.ema,
                          scaler=trainer.scaler)
    save_model_files(trainer)


def save_model_files(trainer) -> None:
    """The model pair and metrics.csv, both derived from the state of the epoch just committed."""
    ckpt.save_model_checkpoint(trainer.out, trainer.ema.module if trainer.ema is not None else trainer.model,
                               trainer.checkpoint_meta())
    write_metrics_csv(trainer.out / "metrics.csv", trainer.history, trainer.task.metric_columns(trainer.history))


def resume(trainer) -> None:
    state = ckpt.load_train_state(trainer.out, trainer.model, trainer.optimizer, trainer.schedule, ema=trainer.ema,
                                  scaler=trainer.scaler)
    trainer.epoch, trainer.history = state["epoch"], state["history"]
    trainer.best, trainer.bad_epochs = state.get("best"), state.get("bad_epochs", 0)
    trainer.lineage = state.get("lineage")
    trainer.log(f"resuming {trainer.out} after epoch {trainer.epoch}")
    if trainer.is_main and trainer.history:
        # A writer killed after committing last.safetensors may have left the model pair or metrics.csv an
        # epoch behind (or torn); both are rewritten from the committed state.
        save_model_files(trainer)
    saved_steps = state.get("steps_per_epoch", trainer.steps_per_epoch)
    saved_scale = state.get("lr_scale", 1.0)
    saved_epochs = state.get("epochs", trainer.config.epochs)
    if (saved_steps, saved_scale, saved_epochs) != (trainer.steps_per_epoch, trainer.lr_scale, trainer.config.epochs):
        refit_schedule(trainer, state.get("world_size", 1), saved_steps, saved_scale, saved_epochs)


def refit_schedule(trainer, saved_world_size: int, saved_steps: int, saved_scale: float, saved_epochs: int) -> None:
    """The run continues with another number of processes, or another epoch budget. The weights, the
    optimiser's moments and the epoch do not depend on them; the schedule does: steps per epoch change with
    the global batch, the learning rate too under scale_lr, and a per-batch schedule spans all epochs. A
    schedule that steps per batch is therefore rebuilt for this run and advanced to the start of the next
    epoch, exactly where an uninterrupted run planned this way would stand; an epoch-wise schedule keeps
    its state, its rates rescaled."""
    config = trainer.config
    changes = []
    if saved_world_size != trainer.world_size or saved_steps != trainer.steps_per_epoch:
        changes.append(f"{trainer.world_size} process(es) instead of {saved_world_size}, {trainer.steps_per_epoch} "
                       f"optimiser steps per epoch instead of {saved_steps}")
    if saved_scale != trainer.lr_scale:
        changes.append(f"learning rate x{trainer.lr_scale:g} instead of x{saved_scale:g}")
    if saved_epochs != config.epochs:
        changes.append(f"{config.epochs} epochs instead of {saved_epochs}")
    trainer.log("the run continues with " + "; ".join(changes) + ": the learning-rate schedule is laid out again")
    if trainer.schedule.interval == "batch":
        for group, base in zip(trainer.optimizer.param_groups, trainer.base_lrs):
            for key in ("initial_lr", "max_lr", "min_lr"):  # set by the saved schedule; torch keeps them
                group.pop(key, None)
            group["lr"] = base
        trainer.schedule = trainer.build_schedule()
        with warnings.catch_warnings():  # stepping a scheduler without optimiser steps is the point here
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(trainer.epoch * trainer.steps_per_epoch):
                trainer.schedule.step_batch()
        return
    ratio = trainer.lr_scale / saved_scale
    for group in trainer.optimizer.param_groups:
        group["lr"] *= ratio
        if "initial_lr" in group:
            group["initial_lr"] *= ratio
    scheduler = trainer.schedule.scheduler
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
