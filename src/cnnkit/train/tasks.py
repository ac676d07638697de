"""What the one training loop trains for: a *task* turns a loader batch into model inputs and targets, scores
the model's outputs, and names the metrics the run reports.

    Trainer(model, bundle, config)                                # classification (the default)
    Trainer(autoencoder, mnist, config, task=DenoisingTask("gaussian", 0.3))
    Trainer(unet, shapes, config, task=SegmentationTask(num_classes=4))

The loop itself (optimiser, schedule, accumulation, clipping, AMP, checkpoints, exact resume) is shared; a
task decides what goes in, what comes out and how it is judged, through the hooks of :class:`Task`. Every task,
classification included, is a ``Task``; the Trainer calls each hook unconditionally and the base class gives
those a task does not need a default:

  ``prepare``, ``loss``, ``metrics``, ``summarize``   a batch in, its loss and metric sums out (required);
  ``input_channels(data)``     the channels the model reads (default: the data's; colourisation: 1 for RGB);
  ``train_step(trainer, inputs, targets, generator) -> (loss, metric sums)``
                               one batch's optimisation, by default the Trainer's gradient step. A task that
                               sets ``runs_own_step`` replaces it: a GAN updates its discriminator, then its
                               generator. Both networks live in the one model and their parameters in the
                               Trainer's one optimiser (Adam and SGD keep per-parameter state, so stepping it
                               with only one network's gradients present is exactly a separate optimiser for
                               that network), hence the Trainer's checkpoints, schedule and exact resume cover
                               both. Random draws come from ``generator`` (seeded by seed and epoch). No
                               gradient accumulation, ema or data-parallel training with it;
  ``evaluate(trainer, dataset)``  loss and metrics over a split; ``validate(trainer, epoch)`` after each epoch;
  ``metric_columns``, ``format_epoch``   the columns of metrics.csv and the epoch's log line;
  ``end_epoch(trainer, metrics)``  after each epoch's checkpoint, on the main process (a GAN's sample grid);
  ``finish(trainer, wall_seconds)``  the final evaluation and the run's summary files.

A task's per-batch ``metrics`` are *sums* (tensors on the device, no host synchronisation in the hot loop);
``summarize`` turns the sums over a whole split into the reported numbers. Sums rather than means make the
result exact for any batch size and let distributed ranks add their partial sums.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F

from ..data.augment import MixedLabels, mix_batch
from ..data.loader import make_loader
from .checkpoint import atomic_write_text
from .evaluate import evaluate_classifier
from .report import METRIC_COLUMNS, finish_classification, plot_task_curves


class Task:
    """Base class of the tasks: subclasses define prepare, loss, metrics and summarize, and override the
    other hooks where they differ from these defaults."""

    name = "task"
    higher_is_better = ()  # metric names that improve upwards (for early stopping and plateau schedules)
    runs_own_step = False  # True when train_step runs its own optimiser steps (see the module docstring)

    def prepare(self, trainer, images: torch.Tensor, labels: torch.Tensor, train: bool = False,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, trainer, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def summarize(self, sums: dict[str, torch.Tensor], count: int) -> dict[str, float]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}

    def input_channels(self, data) -> int:
        return data.image_shape[0]

    def train_step(self, trainer, inputs, targets, generator: torch.Generator):
        """Forward, loss, backward, and an optimiser step every ``accumulate`` batches: the Trainer's own."""
        return trainer.gradient_step(inputs, targets)

    def validate(self, trainer, epoch: int) -> dict:
        """The validation figures after ``epoch``: every epoch, on the Trainer's validation split."""
        return trainer.evaluate(trainer.val_set)

    def metric_columns(self, history: list[dict]) -> list[str]:
        return list(history[-1])

    def format_epoch(self, metrics: dict, epochs: int) -> str:
        return format_task_epoch(metrics, epochs)

    def end_epoch(self, trainer, metrics: dict) -> None:
        pass

    # The generic parts below use only the four methods above.
    @torch.no_grad()
    def evaluate(self, trainer, dataset, **options) -> dict:
        """Mean loss and the task's metrics over ``dataset`` (evaluation mode, fixed noise/no augmentation).
        ``options`` are classification's (with_confusion, keep_logits); other tasks have none."""
        was_training = trainer.model.training
        trainer.model.eval()
        loader = make_loader(dataset, trainer.config.eval_batch_size, shuffle=False, device=trainer.device,
                             num_workers=trainer.config.num_workers)
        total_loss, seen, sums = 0.0, 0, {}
        for images, labels in loader:
            inputs, targets = self.prepare(trainer, images, labels, train=False)
            with trainer.autocast():
                outputs = trainer.evaluation_model(inputs)
            outputs = outputs.float()
            total_loss += self.loss(trainer, outputs, targets).item() * len(inputs)
            accumulate(sums, self.metrics(outputs, targets))
            seen += len(inputs)
        trainer.model.train(was_training)
        return {"loss": total_loss / max(seen, 1), **self.summarize(sums, seen), "images": seen}

    def finish(self, trainer, wall_seconds: float) -> dict:
        """The run's summary.json and curves.png for this task."""
        final = self.evaluate(trainer, trainer.data.test)
        summary = {"model": trainer.model_description(), "task": self.describe(),
                   "dataset": trainer.data.describe(), "epochs_completed": trainer.epoch,
                   **{f"test_{k}": v for k, v in final.items()}, "wall_seconds": round(wall_seconds, 2),
                   "train_seconds": round(sum(m["seconds"] for m in trainer.history), 2),
                   "config": trainer.config.to_dict()}
        if trainer.out and trainer.is_main:
            atomic_write_text(trainer.out / "summary.json", json.dumps(summary, indent=2, default=str))
            if trainer.history:
                plot_task_curves(trainer.history, trainer.out / "curves.png",
                                 title=f"{trainer.model_name} on {trainer.data.name} ({self.name})")
        trainer.log(f"test: {format_metrics(final)}; {trainer.epoch} epochs in {wall_seconds:.1f}s"
                    + (f"; run folder {trainer.out}" if trainer.out else ""))
        return summary


def accumulate(sums: dict, batch: dict) -> None:
    for key, value in batch.items():
        sums[key] = sums[key] + value if key in sums else value.clone()


def format_metrics(values: dict, skip=("images", "epoch", "lr", "seconds", "images_per_second")) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in values.items() if k not in skip and isinstance(v, (int, float)))


def format_task_epoch(m: dict, epochs: int) -> str:
    return (f"epoch {m['epoch']:>3}/{epochs}  {format_metrics(m)}  lr {m['lr']:.3g}  {m['seconds']:.1f}s  "
            f"{m['images_per_second']:.0f} img/s")


class ClassificationTask(Task):
    """The default: images are preprocessed (resized, augmented, normalised), labels are class indices; the
    loss is cross-entropy (with GoogLeNet's auxiliary heads), evaluation reports top-1 and top-5 accuracy
    with test-time views, and the run ends with a confusion matrix."""

    name = "classification"
    higher_is_better = ("acc", "top5")

    def prepare(self, trainer, images, labels, train=False, generator=None):
        x = trainer.preprocess(images, train=train, generator=generator)
        if train:  # mixup / CutMix: after the per-image augmentation, as in timm and fastai
            return mix_batch(x, labels, trainer.config.mixup, trainer.config.cutmix, generator)
        return x, labels

    def loss(self, trainer, outputs, targets):
        if isinstance(targets, MixedLabels):
            return (targets.weight * cross_entropy(trainer, outputs, targets.first)
                    + (1 - targets.weight) * cross_entropy(trainer, outputs, targets.second))
        return cross_entropy(trainer, outputs, targets)

    def metrics(self, outputs, targets):
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        predicted = logits.argmax(1)
        if isinstance(targets, MixedLabels):  # a hit on either class counts in the mixing proportion
            return {"correct": targets.weight * (predicted == targets.first).sum()
                    + (1 - targets.weight) * (predicted == targets.second).sum()}
        return {"correct": (predicted == targets).sum()}

    def summarize(self, sums, count):
        return {"acc": 100.0 * sums["correct"].item() / max(count, 1)}

    def evaluate(self, trainer, dataset, with_confusion: bool = False, keep_logits: bool = False) -> dict:
        return evaluate_classifier(trainer, dataset, with_confusion, keep_logits)

    def validate(self, trainer, epoch: int) -> dict:
        """After every ``validate_every``-th epoch and the last; the last on the test set keeps its confusion
        matrix for the run's summary, which then need not evaluate again."""
        config = trainer.config
        last = epoch == config.epochs
        every = config.validate_every
        if not (last or (every and epoch % every == 0)):  # skipped to save time: the time-to-accuracy recipes
            return {"loss": float("nan"), "acc": float("nan"), "top5": float("nan")}  # need the final figure only
        final = last and trainer.val_set is trainer.data.test
        val = trainer.evaluate(trainer.val_set, with_confusion=final)
        if final:
            trainer.final_evaluation = (epoch, val)
        return val

    def metric_columns(self, history: list[dict]) -> list[str]:
        return METRIC_COLUMNS

    def format_epoch(self, m: dict, epochs: int) -> str:
        # An epoch that was not validated (validate_every) says nothing about validation: "nan" reads as divergence.
        validated = not math.isnan(m["val_loss"])
        return (f"epoch {m['epoch']:>3}/{epochs}  "
                f"train loss {m['train_loss']:.4f} acc {m['train_acc']:6.2f}%  "
                + (f"val loss {m['val_loss']:.4f} acc {m['val_acc']:6.2f}% top-5 {m['val_top5']:6.2f}%  "
                   if validated else "")
                + f"lr {m['lr']:.3g}  {m['seconds']:.1f}s  {m['images_per_second']:.0f} img/s")

    def finish(self, trainer, wall_seconds: float) -> dict:
        if trainer.final_evaluation and trainer.final_evaluation[0] == trainer.epoch:
            final = trainer.final_evaluation[1]
        else:
            final = trainer.evaluate(trainer.data.test, with_confusion=True)
        return finish_classification(trainer, final, wall_seconds)


def cross_entropy(trainer, outputs, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the config's label smoothing; a model that returns auxiliary logits in training
    (GoogLeNet) adds them with the weight it declares (``auxiliary_loss_weight``, 0.3 in the paper)."""
    smoothing = trainer.config.label_smoothing
    if isinstance(outputs, (tuple, list)):
        main, *aux = outputs
        weight = getattr(trainer.model, "auxiliary_loss_weight", 0.3)
        loss = F.cross_entropy(main.float(), targets, label_smoothing=smoothing)
        return loss + sum(weight * F.cross_entropy(a.float(), targets, label_smoothing=smoothing) for a in aux)
    return F.cross_entropy(outputs.float(), targets, label_smoothing=smoothing)
