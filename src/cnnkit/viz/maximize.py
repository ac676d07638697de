"""Activation maximisation: the input that most excites one unit, x* = argmin_x R(x) - <Phi(x), e_i>.

Plain gradient ascent on pixels finds high-frequency patterns that no camera produces. The prior R is what
makes the result look like something (Mahendran & Vedaldi 2016; Yosinski et al. 2015; Olah et al. 2017,
"Feature Visualization"):

- an L2 penalty keeps pixel values near grey and a total-variation penalty penalises noise;
- jitter (a random translation each step) stops the optimiser from exploiting exact pixel positions;
- an occasional Gaussian blur of the pixel image removes the high frequencies that build up (Yosinski);
- the Fourier parameterisation optimises a spectrum scaled by 1/frequency, so every frequency learns at the
  same rate instead of high ones dominating, and for RGB a fixed colour-decorrelation matrix (the square
  root of ImageNet's colour covariance) so the optimiser moves along natural colour directions.

Images are optimised in display space ([0, 1]) and normalised with the model's mean/std before the forward
pass, so the result is always a valid picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn

from ..data.augment import gaussian_blur
from ..errors import CnnkitError, UnknownNameError
from ..progress import progress_bar
from . import plots
from .hooks import UnitOutOfRangeError, evaluation_mode, record_outputs
from .images import InputSpec

# Square root of ImageNet's RGB covariance (from lucid), columns normalised below: maps decorrelated
# components to RGB.
_COLOUR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOUR_MIXING = _COLOUR_CORRELATION_SQRT / _COLOUR_CORRELATION_SQRT.norm(dim=0).max()

TARGETS = ("channel", "neuron", "logit")
PARAMETERIZATIONS = ("fourier", "pixel")


@dataclass(frozen=True)
class MaximizeSettings:
    """The optimisation and its prior R. ``unregularized()`` switches the whole prior off."""

    steps: int = 200
    learning_rate: float = 0.05
    parameterization: str = "fourier"  # "fourier" (decorrelated spectrum) or "pixel"
    decorrelate_colour: bool = True  # RGB only
    l2_weight: float = 0.05  # on the image's deviation from grey, per pixel
    tv_weight: float = 0.25  # on the mean absolute difference of neighbouring pixels
    jitter: int = 2  # largest random translation, in pixels, each step
    blur_every: int = 4  # blur the pixel image every this many steps (0: never)
    blur_sigma: float = 0.5
    seed: int = 0

    @classmethod
    def unregularized(cls, **overrides) -> MaximizeSettings:
        """Plain gradient ascent on pixels: the baseline the prior is compared with."""
        plain = cls(parameterization="pixel", decorrelate_colour=False, l2_weight=0.0, tv_weight=0.0, jitter=0,
                    blur_every=0)
        return replace(plain, **overrides)


@dataclass
class MaximizationResult:
    units: list[int]
    images: torch.Tensor  # (units, C, H, W) in [0, 1]
    model_inputs: torch.Tensor  # the same, normalised as the model expects
    start_activation: torch.Tensor  # (units,) for the starting (grey + noise) image
    final_activation: torch.Tensor  # (units,) for the result


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between horizontally and vertically adjacent pixels, per image: (N,)."""
    horizontal = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    vertical = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    return horizontal + vertical


class PixelImage(nn.Module):
    """Pixels in [0, 1], started at grey plus a little noise and clamped after each step."""

    def __init__(self, count: int, channels: int, height: int, width: int, generator: torch.Generator):
        super().__init__()
        noise = torch.randn(count, channels, height, width, generator=generator)
        self.pixels = nn.Parameter(0.5 + 0.01 * noise)

    def forward(self) -> torch.Tensor:
        return self.pixels

    @torch.no_grad()
    def after_step(self, step: int, settings: MaximizeSettings) -> None:
        if settings.blur_every and (step + 1) % settings.blur_every == 0:
            self.pixels.copy_(gaussian_blur(self.pixels, settings.blur_sigma))
        self.pixels.clamp_(0.0, 1.0)


class FourierImage(nn.Module):
    """An image whose spectrum is the parameter, scaled by 1/frequency (Olah et al. 2017), optionally mixed
    through the colour-decorrelation matrix, squashed into [0, 1] with a sigmoid."""

    def __init__(self, count: int, channels: int, height: int, width: int, generator: torch.Generator,
                 decorrelate_colour: bool = True):
        super().__init__()
        self.size = (height, width)
        frequencies = torch.sqrt(torch.fft.fftfreq(height)[:, None] ** 2 + torch.fft.rfftfreq(width)[None, :] ** 2)
        self.register_buffer("scale", 1.0 / frequencies.clamp_min(1.0 / max(height, width)))
        spectrum_shape = (count, channels, height, width // 2 + 1, 2)
        self.spectrum = nn.Parameter(0.01 * torch.randn(spectrum_shape, generator=generator))
        self.decorrelate_colour = decorrelate_colour and channels == 3

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        image = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0  # /4: lucid's range for the sigmoid
        if self.decorrelate_colour:
            image = torch.einsum("nchw,dc->ndhw", image, _COLOUR_MIXING.to(image))
        return torch.sigmoid(image)

    def after_step(self, step: int, settings: MaximizeSettings) -> None:
        """Nothing to do: the 1/f scaling already plays the role of the blur."""


def _jitter(images: torch.Tensor, amount: int, generator: torch.Generator) -> torch.Tensor:
    if amount <= 0:
        return images
    dy, dx = (torch.randint(-amount, amount + 1, (2,), generator=generator)).tolist()
    return torch.roll(images, shifts=(dy, dx), dims=(-2, -1))


def unit_activations(output: torch.Tensor, units: Sequence[int], target: str,
                     position: tuple[int, int] | None = None) -> torch.Tensor:
    """Pick, for image k of the batch, the activation of ``units[k]``: (len(units),).

    For 4-D outputs, ``"channel"`` is the channel's mean over positions and ``"neuron"`` its value at
    ``position`` (default: the centre); 2-D outputs (fully connected layers, logits) have one value per unit.
    """
    rows = torch.arange(len(units), device=output.device)
    columns = torch.as_tensor(list(units), device=output.device)
    if output.ndim == 4:
        if target == "neuron":
            height, width = output.shape[-2:]
            y, x = position if position is not None else (height // 2, width // 2)
            return output[rows, columns, y, x]
        return output[rows, columns].mean(dim=(-2, -1))
    return output[rows, columns].flatten(1).mean(1) if output.ndim > 2 else output[rows, columns]


def _check_units(output: torch.Tensor, units: Sequence[int], where: str, target: str,
                 position: tuple[int, int] | None) -> None:
    count = output.shape[1]
    for unit in units:
        if not 0 <= int(unit) < count:
            raise UnitOutOfRangeError(
                f"Unit {unit} is out of range for {where}, which has {count} "
                f"{'outputs' if output.ndim == 2 else 'channels'}: valid units are 0 to {count - 1}."
            )
    if target == "neuron" and position is not None and output.ndim == 4:
        height, width = output.shape[-2:]
        y, x = position
        if not (0 <= y < height and 0 <= x < width):
            raise UnitOutOfRangeError(f"Position {position} is outside {where}'s {height}x{width} maps: "
                             f"valid positions are (0..{height - 1}, 0..{width - 1}).")


def maximize_activation(
    model: nn.Module,
    spec: InputSpec,
    units: Sequence[int],
    layer: str | None = None,
    target: str = "channel",
    position: tuple[int, int] | None = None,
    settings: MaximizeSettings = MaximizeSettings(),
    png: str | Path | None = None,
    unit_names: Sequence[str] | None = None,
    progress: bool = False,
) -> MaximizationResult:
    """Find, for each of ``units``, an image (of the shape ``spec`` describes) that maximises it.

    ``target``: ``"channel"`` (mean of a channel of ``layer``), ``"neuron"`` (one position of a channel,
    default the centre) or ``"logit"`` (a class score of the model's output; ``layer`` must be None).
    All units are optimised together, one image each, and with ``png`` drawn side by side (titled with
    ``unit_names[unit]`` when given, e.g. the class names for logits). ``progress``: a bar on a terminal, plain
    periodic lines otherwise (cnnkit.progress).
    """
    if target not in TARGETS:
        raise UnknownNameError(f"Unknown target {target!r}: use one of {', '.join(TARGETS)}.")
    if settings.parameterization not in PARAMETERIZATIONS:
        raise UnknownNameError(f"Unknown parameterization {settings.parameterization!r}: use one of "
                               f"{', '.join(PARAMETERIZATIONS)}.")
    if target == "logit" and layer is not None:
        raise CnnkitError(f"Target 'logit' reads the model's output, so no layer is needed (got {layer!r}); "
                          "drop the layer, or use target 'channel' or 'neuron' for a layer's unit.")
    units = [int(unit) for unit in units]
    generator = torch.Generator().manual_seed(settings.seed)
    shape = (len(units), spec.channels, spec.height, spec.width)
    if settings.parameterization == "fourier":
        image = FourierImage(*shape, generator=generator, decorrelate_colour=settings.decorrelate_colour)
    else:
        image = PixelImage(*shape, generator=generator)
    device = next(iter(model.parameters()), torch.empty(0)).device
    image = image.to(device)
    where = f"layer {layer!r}" if layer is not None else "the model's output"

    def activations(pixels: torch.Tensor) -> torch.Tensor:
        if layer is None:
            output = model(spec.normalize(pixels))
        else:
            with record_outputs(model, [layer]) as recorded:
                model(spec.normalize(pixels))
            output = recorded[layer]
        _check_units(output, units, where, target, position)
        return unit_activations(output, units, target, position)

    optimizer = torch.optim.Adam(image.parameters(), lr=settings.learning_rate)
    with evaluation_mode(model), progress_bar(settings.steps, "maximize", unit="step", enabled=progress) as bar:
        with torch.no_grad():
            start = activations(image()).detach().cpu()
        for step in range(settings.steps):
            pixels = image()
            values = activations(_jitter(pixels, settings.jitter, generator))
            # Penalties are per image and summed, so each unit's image is optimised as if it were alone.
            prior = (settings.l2_weight * (pixels - 0.5).pow(2).flatten(1).mean(1)
                     + settings.tv_weight * total_variation(pixels))
            loss = (prior - values).sum()
            # Differentiate w.r.t. the image only: the model's .grad fields are left untouched.
            gradients = torch.autograd.grad(loss, list(image.parameters()))
            for parameter, gradient in zip(image.parameters(), gradients):
                parameter.grad = gradient
            optimizer.step()
            image.after_step(step, settings)
            bar.update(1)
            if progress and step % 10 == 0:  # reading the value waits for the step: only when it is shown
                bar.set_postfix(activation=f"{values.detach().mean().item():.3g}")
        with torch.no_grad():
            final_images = image().detach()
            final = activations(final_images).detach().cpu()
    result = MaximizationResult(units, final_images.cpu(), spec.normalize(final_images).cpu(), start, final)
    if png is not None:
        plot_maximization(result, png, title=where if target != "logit" else "class logits", unit_names=unit_names)
    return result


def plot_maximization(result: MaximizationResult, png: str | Path, title: str = "",
                      unit_names: Sequence[str] | None = None) -> Path:
    """One panel per unit, titled with its name (or index) and the activation reached."""
    figure, axes = plots.subplots(len(result.units), panel_size=2.5)
    for axis, unit, image, value in zip(axes, result.units, result.images, result.final_activation):
        name = unit_names[unit] if unit_names is not None and unit < len(unit_names) else f"unit {unit}"
        plots.show(axis, plots.for_display(image), f"{name}: {value:.3g}")
    if title:
        figure.suptitle(title)
    return plots.save(figure, png)
