"""The learning-rate range test (Smith 2015, "Cyclical learning rates", §3.3; fastai's ``lr_find``).

    result = lr_find(create_model("lenet5_relu"), load_dataset("mnist"), TrainConfig(optimizer="sgd"))
    result.suggestion, result.plot("lr.png")

Train for up to ``steps`` mini-batches while the learning rate grows exponentially from ``start_lr`` to
``end_lr``, record each batch's loss (an exponential moving average, bias-corrected as in Adam, because single
batches are noisy), and stop once the smoothed loss exceeds ``divergence`` times its minimum or turns non-finite.
The loss falls while the rate is useful and explodes once it is too large; a good peak rate for training lies
where the loss still falls steeply, below the minimum. The suggestion is **the rate at the minimum of the
smoothed loss divided by 10** (fastai's ``lr_min``: robust, one order of magnitude below the edge of
divergence); the rate of steepest descent of the smoothed curve (fastai's ``lr_steep``) is reported beside it.

The test runs the Trainer's own batch loop (its optimiser, augmentation, precision and parameter groups, so
the suggestion fits the configuration it is for): the exponential ramp is the Trainer's schedule and the
recorder a batch callback. The model's weights (and batch-norm statistics) are restored afterwards, and the
caller's random state is left as it was.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import torch
from torch.optim import lr_scheduler

from ..errors import CnnkitError, TrainingDivergedError
from .callbacks import BatchEnd, Callback
from .optim import Schedule
from .trainer import TrainConfig, Trainer


@dataclasses.dataclass
class LRFindResult:
    lrs: list[float]  # the learning rate of each recorded batch (the first parameter group's)
    losses: list[float]  # each batch's training loss as computed (before that batch's update)
    smoothed: list[float]  # the bias-corrected moving average of the losses
    stopped: str  # why the test ended: "diverged", "non-finite loss" or "end of range"
    lr_min: float  # the rate at the smoothed loss's minimum, divided by 10
    lr_steep: float  # the rate where the smoothed loss falls fastest per decade of rate

    @property
    def suggestion(self) -> float:
        return self.lr_min

    def describe(self) -> str:
        return (f"suggested learning rate {self.lr_min:.3g} (minimum of the smoothed loss / 10); steepest descent "
                f"at {self.lr_steep:.3g}; {len(self.lrs)} batches, stopped: {self.stopped}")

    def plot(self, path: str | Path, title: str = "") -> Path:
        """Loss against learning rate (log scale), raw and smoothed, with both rates marked."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        ax.plot(self.lrs, self.losses, color="0.75", linewidth=0.8, label="batch loss")
        ax.plot(self.lrs, self.smoothed, color="C0", linewidth=1.8, label="smoothed loss")
        ax.axvline(self.lr_min, color="C3", linestyle="--", label=f"suggested: minimum / 10 = {self.lr_min:.2g}")
        ax.axvline(self.lr_steep, color="C2", linestyle=":", label=f"steepest descent = {self.lr_steep:.2g}")
        ax.set_xscale("log")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:  # the exploding tail would squash the useful part of the curve
            low, first = min(finite), finite[0]
            ax.set_ylim(low - 0.1 * max(first - low, 1e-3), max(first, low) + 0.5 * max(first - low, 1e-3))
        ax.set(xlabel="learning rate (log scale)", ylabel="training loss", title=title or "learning-rate range test")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


class _RangeRecorder(Callback):
    """The Trainer batch callback: record (lr, loss), smooth, and stop at divergence or the range's end."""

    def __init__(self, lrs: list[float], smoothing: float, divergence: float):
        self.planned, self.beta, self.divergence = lrs, smoothing, divergence
        self.lrs, self.losses, self.smoothed = [], [], []
        self.average, self.best, self.stopped = 0.0, math.inf, "end of range"

    def on_batch_end(self, trainer, batch: BatchEnd) -> None:
        step = len(self.losses)
        value = float(batch.loss)
        self.lrs.append(self.planned[step])
        self.losses.append(value)
        self.average = self.beta * self.average + (1 - self.beta) * value
        smoothed = self.average / (1 - self.beta ** (step + 1))
        self.smoothed.append(smoothed)
        self.best = min(self.best, smoothed)
        if not math.isfinite(smoothed) or (step > 0 and smoothed > self.divergence * self.best):
            self.stopped = "diverged"
            trainer.stop_requested = True
        elif step + 1 >= len(self.planned):
            trainer.stop_requested = True


def suggestions(lrs: list[float], smoothed: list[float], skip_start: int = 10, skip_end: int = 5):
    """(minimum / 10, steepest descent) of a smoothed loss curve. The first batches (the moving average still
    warming up) and the last (the explosion) are left out of the search, as fastai does, when there are enough."""
    if len(lrs) < 2:
        raise CnnkitError("the learning-rate range test recorded fewer than 2 batches; lower start_lr or give "
                          "more training images")
    start, end = (skip_start, len(lrs) - skip_end) if len(lrs) > skip_start + skip_end + 2 else (0, len(lrs))
    window = range(start, end)
    finite = [i for i in window if math.isfinite(smoothed[i])]
    if not finite:
        raise CnnkitError("the loss was not finite anywhere in the range test: lower start_lr")
    lowest = min(finite, key=lambda i: smoothed[i])
    # d loss / d log10(lr), from the neighbours, up to the minimum (after it the loss rises anyway)
    slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / math.log10(lrs[i + 1] / lrs[i - 1])
              for i in finite if start < i < min(lowest + 1, end - 1) and i + 1 < len(lrs)}
    steepest = min(slopes, key=slopes.get) if slopes else lowest
    return lrs[lowest] / 10, lrs[steepest]


def lr_find(model: torch.nn.Module, data, config=None, start_lr: float = 1e-7, end_lr: float = 10.0,
            steps: int = 200, smoothing: float = 0.98, divergence: float = 4.0, task=None) -> LRFindResult:
    """Run the range test on ``model`` (weights restored afterwards) with ``config``'s optimiser, batch size,
    augmentation and precision; its learning rate and schedule are replaced by the exponential ramp."""
    if not 0 < start_lr < end_lr:
        raise CnnkitError(f"the range test needs 0 < start_lr < end_lr, not {start_lr:g} and {end_lr:g}")
    if steps < 2:
        raise CnnkitError(f"the range test needs at least 2 steps (a few hundred is usual), not {steps}")
    if not 0 <= smoothing < 1:
        raise CnnkitError(f"smoothing is the moving average's decay, in [0, 1), not {smoothing}")
    config = dataclasses.replace(
        config or TrainConfig(), lr=start_lr, schedule="constant", warmup_epochs=0.0, scale_lr=False, ema=0.0,
        accumulate=1, early_stopping=None, validate_every=0, epochs=10**6)  # no validation: it never ends
    lrs = [start_lr * (end_lr / start_lr) ** (i / (steps - 1)) for i in range(steps)]
    saved = copy.deepcopy(model.state_dict())
    recorder = _RangeRecorder(lrs, smoothing, divergence)
    with torch.random.fork_rng(devices=[]):
        trainer = Trainer(model, data, config, task=task)
        if trainer.world_size > 1:
            raise CnnkitError("run the learning-rate range test in one process (not under torchrun)")
        ratio = end_lr / start_lr
        # The ramp is the Trainer's schedule: the factor of batch i is ratio^(i / (steps - 1)), times each
        # group's own base rate (parameter groups with lr multipliers keep their proportions).
        trainer.schedule = Schedule(lr_scheduler.LambdaLR(trainer.optimizer, lambda i: ratio ** (min(i, steps - 1)
                                                                                                 / (steps - 1))),
                                    "batch")
        trainer.callbacks.append(recorder)
        try:
            epoch = 0
            while not trainer.stop_requested:
                epoch += 1
                trainer.train_epoch(epoch)
        except TrainingDivergedError:  # a non-finite batch loss: the end of the useful range
            recorder.stopped = "non-finite loss"
        finally:
            model.load_state_dict(saved)
    lr_min, lr_steep = suggestions(recorder.lrs, recorder.smoothed)
    return LRFindResult(recorder.lrs, recorder.losses, recorder.smoothed, recorder.stopped, lr_min, lr_steep)
