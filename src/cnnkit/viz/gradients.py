"""Gradient norm against depth, from the records a run made with ``--record-gradients N``
(:mod:`cnnkit.train.gradients`): one line per run and chosen moment (a recorded step, or an epoch's mean) on a
log scale, several runs on one figure; beside it, the ratio of the first layer's gradient norm to the last
layer's over training. A deep plain sigmoid net's first layers get gradients many orders of magnitude smaller
than its last (notes deck 003, vanishing gradients with bounded activations); ReLU, batch norm and shortcuts
keep the ratio near one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ..errors import CnnkitError
from . import plots

LINE_STYLES = ("-", "--", ":", "-.")


def moment_rows(records: dict, epochs: Sequence[int] = (), steps: Sequence[int] = ()) -> list[tuple[str, dict]]:
    """(label, row) of each moment to draw: the recorded steps and epochs asked for, by default the first
    recorded step (the initial weights) and the last epoch's mean."""
    by_step = {row["step"]: row for row in records["steps"]}
    by_epoch = {row["epoch"]: row for row in records["epochs"]}
    chosen = []
    for step in steps:
        if step not in by_step:
            raise CnnkitError(f"step {step} was not recorded; recorded steps: {_span(sorted(by_step))} "
                              f"(every {records['every']} and the first).")
        chosen.append((f"step {step}", by_step[step]))
    for epoch in epochs:
        if epoch not in by_epoch:
            raise CnnkitError(f"epoch {epoch} was not recorded; recorded epochs: {_span(sorted(by_epoch))}.")
        chosen.append((f"epoch {epoch} (mean)", by_epoch[epoch]))
    if chosen:
        return chosen
    first = min(by_step)
    chosen = [(f"step {first}", by_step[first])]
    if by_epoch:
        last = max(by_epoch)
        chosen.append((f"epoch {last} (mean)", by_epoch[last]))
    return chosen


def _span(values: list[int]) -> str:
    return ", ".join(map(str, values)) if len(values) <= 8 else f"{values[0]}, {values[1]}, ..., {values[-1]}"


def norms(row: dict, relative: bool = False) -> np.ndarray:
    """A row's gradient norms per layer (NaN where a layer had none), over the weight norms when ``relative``."""
    grads = np.array([np.nan if value is None else value for value in row["grad_norm"]], dtype=float)
    if not relative:
        return grads
    weights = np.array(row["weight_norm"], dtype=float)
    return grads / np.where(weights > 0, weights, np.nan)


def first_to_last_ratio(row: dict) -> float:
    """The first recorded layer's gradient norm over the last one's (NaN when either is missing or zero)."""
    values = norms(row)
    if len(values) < 2 or not values[-1] or np.isnan(values[[0, -1]]).any():
        return float("nan")
    return float(values[0] / values[-1])


def plot_gradient_depth(runs: Sequence[tuple[str, dict]], png: str | Path, epochs: Sequence[int] = (),
                        steps: Sequence[int] = (), relative: bool = False) -> Path:
    """Left: gradient norm (or norm over weight norm) against layer depth, for each run at each chosen moment.
    Right: the first-to-last layer ratio over the recorded steps of each run."""
    figure, axes = plots.subplots(2, columns=2, panel_size=5.0)
    depth_axis, ratio_axis = axes[0], axes[1]
    colours = plots.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, records) in enumerate(runs):
        colour = colours[index % len(colours)]
        for position, (moment, row) in enumerate(moment_rows(records, epochs, steps)):
            values = norms(row, relative)
            depth_axis.plot(np.arange(1, len(values) + 1), values, marker=".", color=colour,
                            linestyle=LINE_STYLES[position % len(LINE_STYLES)], label=f"{label}, {moment}")
        recorded = [(row["step"], first_to_last_ratio(row)) for row in records["steps"]]
        ratio_axis.plot(*zip(*recorded), marker=".", color=colour, label=label)
    depth_axis.set_yscale("log")
    depth_axis.set_xlabel("layer (1 = first, input side)")
    depth_axis.set_ylabel("|grad W| / |W|" if relative else "weight-gradient L2 norm")
    depth_axis.set_title("gradient norm through depth")
    ratio_axis.set_yscale("log")
    ratio_axis.axhline(1.0, color="grey", linewidth=0.8)
    ratio_axis.set_xlabel("optimiser step")
    ratio_axis.set_ylabel("first layer / last layer gradient norm")
    ratio_axis.set_title("first-to-last ratio during training")
    for axis in (depth_axis, ratio_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers and steps are whole numbers
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=7)
    return plots.save(figure, png)
