"""DeepDream ("Inceptionism", Mordvintsev, Olah & Tyka 2015; the notes' "Generated using the Inceptionism
approach"): start from a photo and change it by gradient ascent so that a chosen layer responds more strongly to
whatever it already sees there, so the patterns that layer detects grow in the picture.

The recipe is that of the authors' published notebook (google/deepdream, ``dream.ipynb``):

- the objective is the mean square of the layer's activations (its L2 norm, up to a constant), so every unit is
  pushed in the direction it already leans, not one chosen unit as in activation maximisation;
- each step moves the pixels by the gradient divided by its mean absolute value, so ``step_size`` is the mean
  change of a pixel per step whatever the layer's scale;
- jitter: the image is rolled by a random offset before each step and the gradient rolled back, which averages
  out the network's stride grid (otherwise a checkerboard appears) and leaves the picture aligned;
- octaves: the photo is dreamt at several scales, smallest first, and each octave's *detail* (dream minus photo) is
  upsampled onto the next, so the patterns grow larger than the layer's receptive field at full size.

Images are changed in display space ([0, 1], clipped after each step) and normalised with the model's mean/std
before the forward pass, so the result stays a valid picture; clipping there is clipping the normalised input to
the range a real image can have.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..card import card_of
from ..errors import CnnkitError, ShapeError, UnknownNameError, did_you_mean
from ..models.stages import CLASSIFIER, Stage, model_stages, run_stages
from ..progress import progress_bar
from . import plots
from .hooks import evaluation_mode, layer_names
from .images import InputSpec


@dataclass(frozen=True)
class DreamSettings:
    """The gradient ascent and its octaves; defaults are the published notebook's (its step of 1.5 on 0..255
    pixels is 0.006 on 0..1)."""

    steps: int = 20  # gradient-ascent steps per octave
    step_size: float = 0.006  # mean absolute change of a pixel per step, on [0, 1] pixels
    octaves: int = 4  # scales, each octave_scale times smaller than the next
    octave_scale: float = 1.4
    jitter: int = 32  # largest random roll, in pixels, before each step
    seed: int = 0

    def __post_init__(self):
        problems = [f"{name} must be {bound}, got {value}" for name, value, ok, bound in (
            ("steps", self.steps, self.steps >= 0, "0 or more"),
            ("step_size", self.step_size, self.step_size > 0, "above 0"),
            ("octaves", self.octaves, self.octaves >= 1, "at least 1"),
            ("octave_scale", self.octave_scale, self.octave_scale >= 1, "at least 1 (1: every octave full size)"),
            ("jitter", self.jitter, self.jitter >= 0, "0 or more (0: no jitter)"),
        ) if not ok]
        if problems:
            raise CnnkitError("DeepDream settings: " + "; ".join(problems) + ".")


@dataclass
class DreamResult:
    layer: str
    images: torch.Tensor  # (N, C, H, W) in [0, 1]: the dreams, the input's size
    model_inputs: torch.Tensor  # the same, normalised as the model expects
    start_norm: torch.Tensor  # (N,) root mean square of the layer's activations on the input
    final_norm: torch.Tensor  # (N,) the same on the dream
    octave_sizes: list[tuple[int, int]]  # (height, width) of each octave, smallest first
    # One row per step: (octave index, the objective before the step, averaged over the images).
    history: list[tuple[int, float]] = field(default_factory=list)


def dream_stages(model: nn.Module, layer: str) -> tuple[list[Stage], int]:
    """What :func:`cnnkit.models.stages.run_stages` needs to compute ``layer``: a stage name (``stage3``, ``layer2``;
    see :func:`cnnkit.models.stages.model_stages`) or any module name of ``model.named_modules()``. Stages of chain
    models run only the layers up to the one wanted; a module is read by a hook that stops the forward pass there."""
    stages = model_stages(model)
    names = [stage.name for stage in stages]
    if layer in names:
        return stages, names.index(layer)
    modules = layer_names(model)
    if layer in modules:
        return [Stage(layer, (), None, layer)], 0
    hint = did_you_mean(layer, names + modules).split(" Valid names:")[0]
    raise UnknownNameError(
        f"Unknown layer {layer!r} for DeepDream in {type(model).__name__}: give one of its stages "
        f"({', '.join(names)}) or a module name of model.named_modules() (see `cnnkit summary`).{hint}")


def default_dream_layer(model: nn.Module) -> str:
    """The middle stage below the classifier: mid-level features (textures, parts), the notebook's choice of
    ``inception_4c`` in GoogLeNet."""
    body = [stage.name for stage in model_stages(model) if stage.name != CLASSIFIER]
    if not body:
        raise UnknownNameError(f"{type(model).__name__} has no stage below its classifier to dream with; pass a layer.")
    return body[(len(body) - 1) // 2]


def octave_sizes(height: int, width: int, settings: DreamSettings) -> list[tuple[int, int]]:
    """(height, width) of each octave, smallest first, the last being the input's own size."""
    sizes = [(max(1, round(height / settings.octave_scale ** k)), max(1, round(width / settings.octave_scale ** k)))
             for k in range(settings.octaves)]
    return sizes[::-1]


def _roll(images: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    return torch.roll(images, shifts=shift, dims=(-2, -1))


def deep_dream(model: nn.Module, images: torch.Tensor, layer: str, spec: InputSpec,
               settings: DreamSettings = DreamSettings(), progress: bool = False) -> DreamResult:
    """Dream ``images`` (a preprocessed (N, C, H, W) batch, normalised as ``spec`` says) with ``layer`` (a stage
    name or a module name; see :func:`dream_stages`). Each image is stepped as if it were alone (per-image
    gradient normalisation); the model's weights and their ``.grad`` are left untouched. ``progress``: a bar on a
    terminal, plain periodic lines otherwise (cnnkit.progress)."""
    if images.ndim != 4:
        raise ShapeError(f"DeepDream takes an (N, C, H, W) batch; got shape {tuple(images.shape)}.")
    stages, index = dream_stages(model, layer)
    height, width = images.shape[-2:]
    sizes = octave_sizes(height, width, settings)
    minimum = card_of(model).min_input_size
    if min(sizes[0]) < minimum:
        raise ShapeError(f"The smallest octave would be {sizes[0][0]}x{sizes[0][1]} pixels, below the "
                         f"{minimum} pixels {type(model).__name__} accepts: use fewer octaves, a smaller octave "
                         "scale, or a larger image.")
    generator = torch.Generator().manual_seed(settings.seed)
    original = spec.denormalize(images.detach())

    def activations(pixels: torch.Tensor, size: tuple[int, int], octave: int) -> torch.Tensor:
        try:
            return run_stages(model, stages, spec.normalize(pixels), {index})[index]
        except RuntimeError as error:  # a fully connected layer below `layer` that wants the model's own size
            raise ShapeError(
                f"{type(model).__name__} cannot compute {layer!r} on octave {octave + 1}'s {size[0]}x{size[1]} "
                f"input ({error}). Use fewer octaves or a smaller octave scale, a larger image, or a layer "
                "below the fully connected ones.") from error

    def rms(pixels: torch.Tensor, octave: int) -> torch.Tensor:
        with torch.no_grad():
            return activations(pixels, tuple(pixels.shape[-2:]), octave).pow(2).flatten(1).mean(1).sqrt().cpu()

    history: list[tuple[int, float]] = []
    with evaluation_mode(model), progress_bar(settings.steps * len(sizes), "dream", unit="step",
                                              enabled=progress) as bar:
        start = rms(original, len(sizes) - 1)
        # Each octave's base is the photo resized from full size (antialiased), not a resize of a resize.
        bases = [original if size == (height, width) else
                 F.interpolate(original, size=size, mode="bilinear", align_corners=False, antialias=True)
                 for size in sizes]
        detail = torch.zeros_like(bases[0])
        pixels = original
        for octave, (base, size) in enumerate(zip(bases, sizes)):
            if detail.shape[-2:] != base.shape[-2:]:
                detail = F.interpolate(detail, size=size, mode="bilinear", align_corners=False)
            pixels = (base + detail).clamp(0, 1)
            for _ in range(settings.steps):
                shift = tuple(torch.randint(-settings.jitter, settings.jitter + 1, (2,), generator=generator).tolist())
                shifted = _roll(pixels, shift).requires_grad_(True)
                objective = activations(shifted, size, octave).pow(2).flatten(1).mean(1)
                # Differentiate w.r.t. the image only: the model's .grad fields are left untouched.
                (gradient,) = torch.autograd.grad(objective.sum(), shifted)
                gradient = _roll(gradient, (-shift[0], -shift[1]))  # undo the jitter: the step lands in place
                scale = gradient.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                pixels = (pixels + settings.step_size * gradient / scale).clamp(0, 1).detach()
                history.append((octave, float(objective.detach().mean())))
                bar.update(1)
            detail = pixels - base
        final = rms(pixels, len(sizes) - 1)
    return DreamResult(layer, pixels.detach().cpu(), spec.normalize(pixels.detach()).cpu(), start, final, sizes,
                       history)


def plot_dreams(originals: torch.Tensor, results: Sequence[DreamResult], png: str | Path) -> Path:
    """One row per image: the original, then its dream with each layer, titled with the layer and how much its
    activations' root mean square rose."""
    columns = 1 + len(results)
    height, width = originals.shape[-2:]
    figure, axes = plots.subplots(len(originals) * columns, columns=columns, panel_size=4.0)
    figure.set_size_inches(4.0 * columns, 4.0 * len(originals) * height / width + 0.4 * len(originals))
    for row, original in enumerate(originals):
        plots.show(axes[row * columns], plots.for_display(original), "original")
        for column, result in enumerate(results, 1):
            before, after = float(result.start_norm[row]), float(result.final_norm[row])
            plots.show(axes[row * columns + column], plots.for_display(result.images[row]),
                       f"{result.layer}: activation RMS {before:.3g} -> {after:.3g}")
    return plots.save(figure, png)
