"""t-SNE of the penultimate layer: does the network's last representation separate the classes?"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import UnknownNameError
from ..progress import progress_bar
from . import plots
from .hooks import evaluation_mode, record_last_input, record_outputs


def penultimate_features(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    layer: str | None = None,
    max_examples: int | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and labels of the examples in ``batches``: (N, D) float and (N,) long.

    By default the features are the *input* of the last ``nn.Linear`` to run (the classifier), which is
    the penultimate representation in every zoo model; with ``layer`` they are that layer's output, flattened.
    """
    if layer is None:
        recorder, key = record_last_input(model, nn.Linear), "input"
    else:
        recorder, key = record_outputs(model, [layer]), layer
    features, labels, seen = [], [], 0
    bar = progress_bar(max_examples, "features for t-SNE", unit="img", enabled=progress)
    with torch.no_grad(), evaluation_mode(model), recorder as recorded, bar:
        for images, targets in batches:
            if max_examples is not None and seen >= max_examples:
                break
            model(images)
            if key not in recorded:
                raise UnknownNameError(f"{type(model).__name__} ran no nn.Linear classifier; pass layer= to choose "
                                       "which layer's output to embed.")
            features.append(recorded[key].flatten(1).float().cpu())
            labels.append(torch.as_tensor(targets).cpu())
            seen += len(images)
            bar.update(len(images))
    features, labels = torch.cat(features), torch.cat(labels).long()
    if max_examples is not None:
        features, labels = features[:max_examples], labels[:max_examples]
    return features, labels


def tsne(features: torch.Tensor | np.ndarray, perplexity: float = 30.0, seed: int = 0,
         progress: bool = False) -> np.ndarray:
    """2-D t-SNE coordinates (scikit-learn) of (N, D) features; PCA initialisation for stable layouts.
    ``progress``: scikit-learn's fit reports no steps, so a line before and one after (with its time)."""
    import sys
    import time

    from sklearn.manifold import TSNE

    features = np.asarray(features, dtype=np.float32)
    perplexity = min(perplexity, max(2.0, (len(features) - 1) / 3))  # sklearn requires perplexity < N
    if progress:
        print(f"t-SNE of {len(features)} points x {features.shape[1]} features (perplexity {perplexity:g}; "
              "about a minute for 2,000 points on 2 cores)...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    coordinates = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
    if progress:
        print(f"t-SNE done in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return coordinates


def plot_embedding(coordinates: np.ndarray, labels: torch.Tensor | np.ndarray, png: str | Path,
                   class_names: Sequence[str] | None = None, title: str = "t-SNE of penultimate features") -> Path:
    labels = np.asarray(labels)
    figure, (axis,) = plots.subplots(1, panel_size=6.0)
    colours = plots.plt.get_cmap("tab10" if labels.max(initial=0) < 10 else "tab20")
    for label in np.unique(labels):
        chosen = labels == label
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        axis.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=6, color=colours(label % colours.N), label=name)
    axis.legend(markerscale=3, fontsize=8, loc="best")
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    return plots.save(figure, png)
