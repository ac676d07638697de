"""What the one training loop trains for: a *task* turns a loader batch into model inputs and targets, scores
the model's outputs, and names the metrics the run reports.

    Trainer(model, bundle, config)                                # classification (the default)
    Trainer(autoencoder, mnist, config, task=DenoisingTask("gaussian", 0.3))
    Trainer(unet, shapes, config, task=SegmentationTask(num_classes=4))

The loop itself (optimiser, schedule, accumulation, clipping, AMP, checkpoints, exact resume) is shared; a
task only decides what goes in, what comes out and how it is judged. Classification keeps the Trainer's own
cross-entropy, top-k and confusion-matrix code, so its behaviour and files are unchanged.

Three optional hooks extend the loop without changing it for the tasks that lack them:
  ``input_channels(data)``     the channels the model reads, when not the data's (colourisation: 1 for RGB data);
  ``train_step(trainer, inputs, targets, generator) -> (loss, metric sums)``
                               replaces the default forward / backward / optimiser step for a batch: a GAN updates
                               its discriminator, then its generator. Both networks live in the one model and
                               their parameters in the Trainer's one optimiser (Adam and SGD keep per-parameter
                               state, so stepping it with only one network's gradients present is exactly a
                               separate optimiser for that network), hence the Trainer's checkpoints, schedule
                               and exact resume cover both. Random draws come from ``generator`` (seeded by
                               seed and epoch). No gradient accumulation or data-parallel training with it;
  ``end_epoch(trainer, metrics)``  after each epoch's checkpoint, on the main process (a GAN's sample grid).

A task's per-batch ``metrics`` are *sums* (tensors on the device, no host synchronisation in the hot loop);
``summarize`` turns the sums over a whole split into the reported numbers. Sums rather than means make the
result exact for any batch size and let distributed ranks add their partial sums.
"""

from __future__ import annotations

import json

import torch

from ..card import build_record
from ..data.augment import MixedLabels, mix_batch
from ..data.loader import make_loader


class Task:
    """Base class of non-classification tasks; subclasses define prepare, loss, metrics and summarize."""

    name = "task"
    higher_is_better = ()  # metric names that improve upwards (for early stopping and plateau schedules)

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

    # The generic parts below use only the four methods above.
    @torch.no_grad()
    def evaluate(self, trainer, dataset) -> dict:
        """Mean loss and the task's metrics over ``dataset`` (evaluation mode, fixed noise/no augmentation)."""
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
        """The run's summary.json and curves.png for this task (classification writes its own)."""
        final = self.evaluate(trainer, trainer.data.test)
        summary = {"model": build_record(trainer.model) or None, "task": self.describe(),
                   "dataset": trainer.data.describe(), "epochs_completed": trainer.epoch,
                   **{f"test_{k}": v for k, v in final.items()}, "wall_seconds": round(wall_seconds, 2),
                   "train_seconds": round(sum(m["seconds"] for m in trainer.history), 2),
                   "config": trainer.config.to_dict()}
        if trainer.out and trainer.is_main:
            from .checkpoint import atomic_write_text

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


def plot_task_curves(history: list[dict], path, title: str = "") -> None:
    """Loss, then every other per-epoch metric, train beside validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k[len("val_"):] for k in history[0] if k.startswith("val_")]
    # A run without validation figures (a GAN trained with fid_samples=0) still gets its training curves.
    names = names or [k[len("train_"):] for k in history[0] if k.startswith("train_")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    epochs = [m["epoch"] for m in history]
    for ax, name in zip(axes[0], names):
        for split, marker in (("train", "o-"), ("val", "s-")):
            if f"{split}_{name}" in history[0]:
                ax.plot(epochs, [m[f"{split}_{name}"] for m in history], marker,
                        label="validation" if split == "val" else split)
        ax.set(xlabel="epoch", title=name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class ClassificationTask:
    """The default: images are preprocessed (resized, augmented, normalised), labels are class indices, and
    the Trainer's own cross-entropy (with GoogLeNet's auxiliary heads) and top-k evaluation apply."""

    name = "classification"
    higher_is_better = ("acc", "top5")

    def prepare(self, trainer, images, labels, train=False, generator=None):
        x = trainer.preprocess(images, train=train, generator=generator)
        if train:  # mixup / CutMix: after the per-image augmentation, as in timm and fastai
            return mix_batch(x, labels, trainer.config.mixup, trainer.config.cutmix, generator)
        return x, labels

    def loss(self, trainer, outputs, targets):
        if isinstance(targets, MixedLabels):
            return (targets.weight * trainer.loss(outputs, targets.first)
                    + (1 - targets.weight) * trainer.loss(outputs, targets.second))
        return trainer.loss(outputs, targets)

    def metrics(self, outputs, targets):
        logits = outputs[0] if isinstance(outputs, (tuple, list)) else outputs
        predicted = logits.argmax(1)
        if isinstance(targets, MixedLabels):  # a hit on either class counts in the mixing proportion
            return {"correct": targets.weight * (predicted == targets.first).sum()
                    + (1 - targets.weight) * (predicted == targets.second).sum()}
        return {"correct": (predicted == targets).sum()}

    def summarize(self, sums, count):
        return {"acc": 100.0 * sums["correct"].item() / max(count, 1)}

    def describe(self) -> dict:
        return {"name": self.name}


def is_classification(task) -> bool:
    return isinstance(task, ClassificationTask)
