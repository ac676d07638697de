"""Training curves from a run folder's ``metrics.csv`` (written by the trainer, one row per epoch)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import CheckpointError
from . import plots

COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")


def read_metrics(run_dir: str | Path) -> dict[str, np.ndarray]:
    """The columns of ``RUN_DIR/metrics.csv`` as float arrays (empty cells become NaN)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise CheckpointError(f"{str(path)!r} does not exist: expected a run folder written by `cnnkit train` "
                              "(it holds metrics.csv). Check the folder name.")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [name for name in ("epoch", "train_loss") if rows and name not in rows[0]]
    if not rows or missing:
        raise CheckpointError(f"{str(path)!r} has no rows or lacks the columns {missing}; expected the header "
                              f"{','.join(COLUMNS)}.")

    def number(text: str | None) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return float("nan")

    return {name: np.array([number(row.get(name)) for row in rows]) for name in rows[0]}


def plot_curves(metrics: dict[str, np.ndarray], png: str | Path, title: str = "") -> Path:
    """Loss, accuracy and learning rate against epoch, train and validation together."""
    epochs = metrics["epoch"]
    figure, axes = plots.subplots(3, columns=3, panel_size=4.0)
    for axis, quantity in zip(axes[:2], ("loss", "acc")):
        for split in ("train", "val"):
            values = metrics.get(f"{split}_{quantity}")
            if values is not None and not np.all(np.isnan(values)):
                axis.plot(epochs, values, marker=".", label=split)
        axis.set_xlabel("epoch")
        axis.set_ylabel(quantity)
        axis.legend()
        axis.grid(alpha=0.3)
    if "lr" in metrics:
        axes[2].plot(epochs, metrics["lr"], marker=".")
        if np.all(metrics["lr"] > 0):  # warm-up from 0 cannot go on a log axis
            axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("learning rate")
    axes[2].grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return plots.save(figure, png)


def plot_error_curves(panels: dict[str, dict[str, dict[str, list[float]]]], png: str | Path,
                      title: str = "", ylabel: str = "error (%)", colours: dict[str, str] | None = None) -> Path:
    """Training and test error against epoch in the manner of He et al.'s Fig. 1 and 6: one panel per entry of
    ``panels`` (``{panel title: {curve label: {"epoch": [...], "train_error": [...], "test_error": [...]}}}``),
    training error dashed and test error solid in the same colour, so that a deeper network's curves sit
    directly against a shallower one's. ``colours`` ({label: matplotlib colour}) keeps a label's colour the same in
    every panel; others take the next of the cycle. A curve may lack either split (a run stopped before validating)."""
    if not panels or not any(panels.values()):
        raise ValueError("plot_error_curves needs at least one panel with one curve: "
                         "{panel title: {label: {'epoch': [...], 'train_error': [...], 'test_error': [...]}}}.")
    figure, axes = plots.subplots(len(panels), columns=len(panels), panel_size=4.5)
    for axis, (panel, curves) in zip(axes, panels.items()):
        for index, (label, curve) in enumerate(curves.items()):
            if "epoch" not in curve:
                raise ValueError(f"curve {label!r} of panel {panel!r} has no 'epoch' list; it has {sorted(curve)}.")
            colour = (colours or {}).get(label, f"C{index}")
            for split, style in (("train_error", "--"), ("test_error", "-")):
                values = curve.get(split)
                if values is None:
                    continue
                if len(values) != len(curve["epoch"]):
                    raise ValueError(f"curve {label!r}: {len(values)} {split} values for {len(curve['epoch'])} "
                                     "epochs; give one value per epoch.")
                axis.plot(curve["epoch"], values, style, color=colour, marker=".",
                          label=f"{label} {split.split('_')[0]}", linewidth=1.0 if style == "--" else 2.0)
        axis.set_title(panel)
        axis.set_xlabel("epoch")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    # One error scale for all panels, as in the paper's figures: plain and residual curves compare by eye.
    low = min(axis.get_ylim()[0] for axis in axes)
    high = max(axis.get_ylim()[1] for axis in axes)
    for axis in axes:
        axis.set_ylim(low, high)
        axis.xaxis.get_major_locator().set_params(integer=True)
    if title:
        figure.suptitle(title, fontsize=10)
    return plots.save(figure, png)
