"""The confusion matrix of a classifier on a dataset, drawn with class names."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import DataError
from ..train.metrics import confusion_matrix as count_confusions
from . import plots
from .hooks import evaluation_mode

MAX_LABELLED_CLASSES = 50  # class names on the axes up to this many classes
MAX_ANNOTATED_CLASSES = 20  # counts written in the cells up to this many


def confusion_matrix(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     num_classes: int | None = None) -> torch.Tensor:
    """(K, K) counts: row = true class, column = predicted class. K defaults to the model's output width."""
    counts = None
    with torch.no_grad(), evaluation_mode(model):
        for images, labels in batches:
            logits = model(images)
            classes = num_classes or logits.shape[1]
            batch_counts = count_confusions(logits.argmax(dim=1).cpu(), torch.as_tensor(labels).cpu(), classes)
            counts = batch_counts if counts is None else counts + batch_counts
    if counts is None:
        raise DataError("The confusion matrix got no batches: the dataset split is empty. Check --data.")
    return counts


def plot_confusion(matrix: torch.Tensor, png: str | Path, class_names: Sequence[str] | None = None,
                   normalize: bool = True) -> Path:
    """Heatmap of the matrix, rows normalised to recall when ``normalize``; counts written in each cell
    when the matrix is small enough to read them."""
    counts = matrix.numpy().astype(np.float64)
    shown = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    classes = len(counts)
    names = list(class_names) if class_names is not None else [str(i) for i in range(classes)]
    # The figure grows with the class count up to a cap: 1000 ImageNet classes must not make a 50,000-pixel PNG.
    figure, (axis,) = plots.subplots(1, panel_size=min(max(4.0, 0.45 * classes + 2), 14.0))
    image = axis.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    figure.colorbar(image, ax=axis, fraction=0.046)
    if classes <= MAX_LABELLED_CLASSES:
        axis.set_xticks(range(classes), names, rotation=90, fontsize=8)
        axis.set_yticks(range(classes), names, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axis.set_title(f"confusion matrix (accuracy {100 * accuracy:.2f}%)")
    if classes <= MAX_ANNOTATED_CLASSES:
        for row in range(classes):
            for column in range(classes):
                colour = "white" if shown[row, column] > 0.5 * shown.max() else "black"
                axis.text(column, row, int(counts[row, column]), ha="center", va="center", fontsize=7, color=colour)
    return plots.save(figure, png)
