"""Hand-designed filters, the ones the notes show before any learning (001: "Convolution Filters", Gabor and
Gaussian blur; 002: "A toy example", the "\\", "X" and "/" features of the X-or-O classifier), applied to a photo.

Every kernel is a plain (k, k) float tensor that ``F.conv2d`` reads as it is (a cross-correlation, like every
convolution layer): a positive response means the patch looks like the kernel. ``cnnkit viz kernels IMAGE``
draws a photo's responses to all of them; cnnkit/viz/glyphs.py compares them with filters a CNN learns.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.image_io import read_image
from ..errors import CnnkitError
from . import plots


def sobel(direction: str) -> torch.Tensor:
    """Sobel's 3x3 edge detector: 'vertical' responds to vertical edges (the brightness changes from left to
    right, a derivative along x smoothed along y), 'horizontal' to horizontal ones."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    return _oriented(kernel, direction)


def prewitt(direction: str) -> torch.Tensor:
    """Prewitt's 3x3 edge detector: Sobel's without the heavier centre row."""
    kernel = torch.tensor([[-1.0, 0.0, 1.0]] * 3)
    return _oriented(kernel, direction)


def _oriented(vertical_edges: torch.Tensor, direction: str) -> torch.Tensor:
    if direction not in ("vertical", "horizontal"):
        raise ValueError(f"an edge direction is 'vertical' or 'horizontal', not {direction!r}")
    return vertical_edges if direction == "vertical" else vertical_edges.T.contiguous()


def gaussian(size: int = 5, sigma: float = 1.0) -> torch.Tensor:
    """The Gaussian blur, sampled on a size x size grid and normalised to sum 1 (a weighted average: flat
    regions keep their brightness)."""
    if size < 1 or size % 2 == 0 or sigma <= 0:
        raise ValueError(f"a Gaussian kernel needs an odd size >= 1 and sigma > 0, got size={size}, sigma={sigma}")
    offsets = torch.arange(size, dtype=torch.float32) - size // 2
    profile = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = profile[:, None] * profile[None, :]
    return kernel / kernel.sum()


def gabor(theta: float, size: int = 11, sigma: float = 2.5, wavelength: float = 6.0, aspect: float = 0.5,
          phase: float = 0.0) -> torch.Tensor:
    """A Gabor filter: a cosine wave of ``wavelength`` pixels travelling in direction ``theta`` (radians,
    0 = along x, so it responds to vertical stripes), under a Gaussian envelope elongated along the stripes by
    1/``aspect``. Made zero-mean so that flat regions give no response, like the simple cells it models."""
    offsets = torch.arange(size, dtype=torch.float32) - size // 2
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    along = x * math.cos(theta) + y * math.sin(theta)
    across = -x * math.sin(theta) + y * math.cos(theta)
    envelope = torch.exp(-(along**2 + (aspect * across) ** 2) / (2 * sigma**2))
    kernel = envelope * torch.cos(2 * math.pi * along / wavelength + phase)
    kernel = kernel - envelope * (kernel.sum() / envelope.sum())  # zero-mean, still under the envelope
    return kernel / kernel.abs().sum()


def notes_feature(name: str) -> torch.Tensor:
    """The 3x3 features of the notes' X-or-O example (002, "Features match pieces of the image"): +1 on the
    stroke, -1 elsewhere. '\\' and '/' are the diagonals, 'x' their crossing."""
    down = torch.eye(3) * 2 - 1  # "\": +1 on the main diagonal
    features = {"\\": down, "/": down.flip(1), "x": torch.maximum(down, down.flip(1))}
    if name not in features:
        raise ValueError(f"the notes' features are {sorted(features)}, not {name!r}")
    return features[name].contiguous()


def zero_mean(kernel: torch.Tensor) -> torch.Tensor:
    return kernel - kernel.mean()


def sharpen() -> torch.Tensor:
    """The image plus its negative Laplacian: edges are overshot, flat regions unchanged (the weights sum to 1)."""
    return torch.tensor([[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]])


def named_kernels() -> dict[str, torch.Tensor]:
    """Every kernel ``cnnkit viz kernels`` draws, by the name it goes by in the figure."""
    kernels = {"sobel vertical": sobel("vertical"), "sobel horizontal": sobel("horizontal"),
               "prewitt vertical": prewitt("vertical"), "prewitt horizontal": prewitt("horizontal"),
               "gaussian blur": gaussian(7, 1.5), "sharpen": sharpen(),
               # The notes' +-1 features sum to -3: on a photo (not a +-1 drawing) that is mostly a darkness
               # detector, so they are drawn zero-mean, leaving the diagonal structure they look for.
               "diagonal \\": zero_mean(notes_feature("\\")), "diagonal /": zero_mean(notes_feature("/"))}
    for degrees in (0, 45, 90, 135):
        kernels[f"gabor {degrees}°"] = gabor(math.radians(degrees))
    return kernels


def filter_image(grey: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The response of a (H, W) or (N, 1, H, W) grey image to ``kernel``, the same size (borders reflected)."""
    batch = grey[None, None] if grey.ndim == 2 else grey
    half_h, half_w = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = F.pad(batch.float(), (half_w, half_w, half_h, half_h), mode="reflect")
    response = F.conv2d(padded, kernel[None, None].to(padded))
    return response[0, 0] if grey.ndim == 2 else response


def kernel_figure(image_path: str | Path, out: str | Path, max_side: int = 384) -> dict[str, torch.Tensor]:
    """Draw the photo, then each kernel (small inset) with the photo's response to it, to ``out`` (a PNG).
    Returns the responses by kernel name."""
    if not Path(image_path).is_file():
        raise CnnkitError(f"{image_path} is not an image file; give a photo, e.g. /work/shared/images/content/"
                          "tubingen.jpg or docs/images/style_content.jpg.")
    image = read_image(image_path, 3)
    scale = max_side / max(image.shape[-2:])
    if scale < 1:  # responses are per pixel: a smaller copy keeps the figure light and the edges visible
        size = (round(image.shape[1] * scale), round(image.shape[2] * scale))
        image = F.interpolate(image[None].float(), size=size, mode="area")[0]
    rgb = image.float() / 255
    grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])  # ITU-R BT.601 luma
    kernels = named_kernels()
    responses = {name: filter_image(grey, kernel) for name, kernel in kernels.items()}
    figure, axes = plots.subplots(1 + len(kernels), columns=4, panel_size=3.2)
    plots.show(axes[0], plots.for_display(rgb), "photo")
    for axis, (name, response) in zip(axes[1:], responses.items()):
        kernel = kernels[name]
        if kernel.min() >= 0 or abs(float(kernel.sum()) - 1) < 1e-6:  # blur, sharpen: still an image
            axis.imshow(response.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        else:  # detectors: signed responses, red where the patch matches the kernel, blue where it is its opposite
            limit = float(response.abs().quantile(0.995)) or 1.0
            axis.imshow(response.numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        inset = axis.inset_axes([0.0, 0.72, 0.28, 0.28])
        inset.imshow(kernel.numpy(), cmap="RdBu_r", vmin=-kernel.abs().max(), vmax=kernel.abs().max())
        inset.set_xticks([])
        inset.set_yticks([])
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_title(name, fontsize=9)
    plots.save(figure, out)
    return responses


def run_kernels_tool(images: list[Path], out_dir: Path) -> list[Path]:
    """``cnnkit viz kernels IMAGE...``: one figure per photo, kernels-<name>.png (kernels.png for one photo)."""
    written = []
    for image in images:
        name = "kernels.png" if len(images) == 1 else f"kernels-{Path(image).stem}.png"
        kernel_figure(image, out_dir / name)
        written.append(out_dir / name)
    return written
