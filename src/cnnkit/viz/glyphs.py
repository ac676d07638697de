"""Filters a CNN learns on the notes' toy example next to the hand-designed ones (notes 002, "Features match
pieces of the image"): a one-convolution network trained on X / O / "/" / "\\" drawings (cnnkit.data.glyphs)
with the one Trainer, and each learned 3x3 filter matched to the hand-designed 3x3 kernel it correlates with best.

    result = train_glyph_network(epochs=6)         # seconds on a CPU
    matches = match_filters(result.filters)        # learned filter -> best hand-designed kernel, correlation
    glyph_filter_figure(result, matches, "glyph_filters.png")
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
from torch import nn

from ..data.glyphs import GLYPH_CLASSES, glyph_dataset
from ..train import TrainConfig, Trainer
from . import plots
from .kernels import notes_feature, prewitt, sobel


class GlyphNetwork(nn.Module):
    """The notes' pipeline at its smallest: a few 3x3 filters, ReLU, max pooling over the whole image (the
    feature's best match anywhere: shifts do not matter), one linear layer to the four classes."""

    def __init__(self, filters: int = 4, num_classes: int = 4, in_channels: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, filters, 3, padding=1)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.classifier = nn.Linear(filters, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(torch.relu(self.conv(x))).flatten(1))


def hand_designed_3x3() -> dict[str, torch.Tensor]:
    """The 3x3 kernels a learned filter is compared with: the notes' three features and the edge detectors."""
    return {"notes \\": notes_feature("\\"), "notes /": notes_feature("/"), "notes x": notes_feature("x"),
            "sobel vertical": sobel("vertical"), "sobel horizontal": sobel("horizontal"),
            "prewitt vertical": prewitt("vertical"), "prewitt horizontal": prewitt("horizontal")}


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two kernels' weights (shape and sign, not scale)."""
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-12))


@dataclasses.dataclass
class FilterMatch:
    learned: int  # index of the learned filter
    kernel: str  # name of the best-matching hand-designed kernel
    correlation: float  # signed Pearson correlation with it


def match_filters(filters: torch.Tensor, kernels: dict[str, torch.Tensor] | None = None) -> list[FilterMatch]:
    """For each learned (1, 3, 3) filter, the hand-designed kernel with the highest correlation. Signed: a
    filter followed by ReLU that is the negative of '/' detects something else than '/'."""
    kernels = kernels or hand_designed_3x3()
    matches = []
    for index, weights in enumerate(filters):
        scores = {name: correlation(weights[0], kernel) for name, kernel in kernels.items()}
        best = max(scores, key=scores.get)
        matches.append(FilterMatch(index, best, scores[best]))
    return matches


@dataclasses.dataclass
class GlyphResult:
    model: GlyphNetwork
    filters: torch.Tensor  # (filters, 1, 3, 3), the learned first-layer weights
    test_acc: float
    seconds: float


def train_glyph_network(filters: int = 4, epochs: int = 6, num_train: int = 2000, seed: int = 0,
                        out: str | Path | None = None) -> GlyphResult:
    """Train :class:`GlyphNetwork` on the glyphs with the Trainer (Adam, one-cycle), return its filters."""
    torch.manual_seed(seed)
    data = glyph_dataset(num_train=num_train, num_test=500, seed=seed)
    model = GlyphNetwork(filters)
    # One thread: a 12x12 image through four 3x3 filters is too little work to share, and on a busy machine
    # two threads waiting for each other made a 1-second run take 30 (measured at load 7 on 2 cores).
    config = TrainConfig(epochs=epochs, batch_size=32, lr=0.03, optimizer="adam", weight_decay=0.0,
                         schedule="onecycle", seed=seed, progress=False, num_workers=0, validate_every=0,
                         num_threads=1)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        summary = Trainer(model, data, config, out=out, overwrite=True).fit()
    finally:
        torch.set_num_threads(threads)  # the Trainer sets it for the process; give the caller its own back
    return GlyphResult(model, model.conv.weight.detach().clone(), summary["test_acc"], time.perf_counter() - start)


def glyph_filter_figure(result: GlyphResult, matches: list[FilterMatch], out: str | Path) -> Path:
    """Top row: some training drawings; middle: the learned filters; bottom: each one's best-matching
    hand-designed kernel with the correlation."""
    samples = glyph_dataset(num_train=8, num_test=4, seed=1).train
    kernels = hand_designed_3x3()
    columns = max(len(matches), 4)
    figure, axes = plots.subplots(3 * columns, columns=columns, panel_size=1.9)
    for axis in axes:
        axis.axis("off")
    for column in range(min(columns, 4)):
        label = GLYPH_CLASSES[int(samples.labels[column])]
        plots.show(axes[column], samples.images[column, 0].float().numpy() / 255, f"class {label}")
    for match in matches:
        learned = result.filters[match.learned, 0]
        best = f"{match.kernel}\nr = {match.correlation:.2f}"
        for row, (weights, title) in enumerate(((learned, f"learned {match.learned}"), (kernels[match.kernel], best))):
            axis = axes[(row + 1) * columns + match.learned]
            limit = float(weights.abs().max()) or 1.0
            axis.imshow(weights.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
            axis.set_title(title, fontsize=9)
    figure.suptitle(f"learned 3x3 filters (test accuracy {result.test_acc:.1f}%) and the best-matching "
                    "hand-designed kernels", fontsize=10)
    return plots.save(figure, out)
