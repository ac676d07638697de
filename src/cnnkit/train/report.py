"""What a run leaves besides its weights: metrics.csv after every epoch; at the end classification's
summary.json, confusion.csv and curves.png (other tasks write theirs in train/tasks.py)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
from pathlib import Path

import torch

from .checkpoint import atomic_write_text

METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "seconds",
                  "images_per_second"]


def write_metrics_csv(path: Path, history: list[dict], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    # Empty cells, not "nan", for the metrics of epochs that were not validated.
    writer.writerows([{k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                      for row in history])
    atomic_write_text(path, buffer.getvalue())


def classification_summary(trainer, final: dict, wall_seconds: float) -> dict:
    history, data = trainer.history, trainer.data
    train_seconds = sum(m["seconds"] for m in history)
    train_images = sum(m["seconds"] * m["images_per_second"] for m in history)
    return {
        "model": trainer.model_description(), "dataset": data.describe(),
        "epochs_completed": trainer.epoch, "test_loss": final["loss"], "test_acc": final["acc"],
        "test_top5": final["top5"], "test_error": 100 - final["acc"], "test_top5_error": 100 - final["top5"],
        "per_class_acc": {c: round(float(a), 2) for c, a in zip(data.classes, final["per_class_acc"])},
        "wall_seconds": round(wall_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "train_images_per_second": round(train_images / max(train_seconds, 1e-9), 1),
        "config": trainer.config.to_dict(), "device": describe_device(trainer.device),
        "versions": {"python": platform.python_version(), "torch": torch.__version__},
    }


def finish_classification(trainer, final: dict, wall_seconds: float) -> dict:
    """The run's summary, written with confusion.csv and curves.png into the run folder (main process)."""
    summary = classification_summary(trainer, final, wall_seconds)
    out, classes = trainer.out, trainer.data.classes
    if out and trainer.is_main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
        with open(out / "confusion.csv", "w") as f:
            f.write("true\\predicted," + ",".join(classes) + "\n")
            f.writelines(c + "," + ",".join(map(str, row)) + "\n"
                         for c, row in zip(classes, final["confusion"].tolist()))
        if trainer.history:
            plot_curves(trainer.history, out / "curves.png", title=f"{trainer.model_name} on {trainer.data.name}")
    trainer.log(f"test accuracy {final['acc']:.2f}% (top-5 {final['top5']:.2f}%), loss {final['loss']:.4f}; "
                f"{trainer.epoch} epochs in {wall_seconds:.1f}s" + (f"; run folder {out}" if out else ""))
    return summary


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return f"mps: Apple GPU ({platform.machine()})"
    return f"cpu: {os.cpu_count()}-core {platform.processor() or platform.machine()}"


PRECISION_NOTES = {"fp32": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast with loss scaling"}


def describe_setup(device: torch.device, requested: str, precision: str, threads: int) -> str:
    """The line a run starts with: where it trains (and why, under --device auto), in what precision, on how
    many CPU threads."""
    picked = " (auto: cuda > mps > cpu)" if requested == "auto" else ""
    text = f"device {device} [{describe_device(device)}]{picked}, {PRECISION_NOTES[precision]}, {threads} threads"
    if precision == "fp16" and device.type == "cpu":
        # Measured by benchmarks/precision.py: correct, but CPU fp16 kernels are a fallback, not a fast path.
        text += (" (fp16 on a CPU trains correctly but far more slowly than fp32: see benchmarks/precision.py; "
                 "bf16 is the CPU's fast format)")
    return text


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train beside validation."""
    plt = _pyplot()
    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["train_loss"] for m in history], "o-", label="train")
    ax_loss.plot(epochs, [m["val_loss"] for m in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [m["train_acc"] for m in history], "o-", label="train")
    ax_acc.plot(epochs, [m["val_acc"] for m in history], "s-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    _save_figure(plt, fig, (ax_loss, ax_acc), title, path, dpi=110)


def plot_task_curves(history: list[dict], path, title: str = "") -> None:
    """Loss, then every other per-epoch metric, train beside validation."""
    plt = _pyplot()
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
    _save_figure(plt, fig, axes[0], title, path, dpi=100)


def _pyplot():
    """matplotlib, imported when a run ends (it costs a second), drawing to files only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt, fig, axes, title: str, path, dpi: int) -> None:
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
