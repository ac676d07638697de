"""Shape arithmetic and checks: the notes' output-size formula, and the minimum input a model accepts."""

from __future__ import annotations

import torch

from ..errors import ShapeError


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """(N + 2P - D(F-1) - 1) / S + 1, the notes' formula; raises when the filter does not fit evenly."""
    span = size + 2 * padding - dilation * (kernel_size - 1) - 1
    if span < 0:
        raise ShapeError(
            f"a {kernel_size}x{kernel_size} filter does not fit a {size}x{size} input with padding {padding}"
        )
    if span % stride:
        raise ShapeError(
            f"a {kernel_size}x{kernel_size} filter with stride {stride} does not fit a {size}x{size} input "
            f"with padding {padding}: ({size} + 2*{padding} - {kernel_size})/{stride} + 1 = "
            f"{span / stride + 1:.2f} is not a whole number; change the stride or the padding "
            f"(or crop the input) so that the filter lands on the last pixel"
        )
    return span // stride + 1


def require_min_input_size(x: torch.Tensor, min_size: int, model_name: str) -> None:
    """Raise a ShapeError naming the minimum input size when ``x`` is too small for the architecture.

    Called at the top of a model's forward: a one-shape check per batch, so the error says what to do instead
    of a cryptic "output size is too small" from deep inside the network."""
    height, width = x.shape[-2], x.shape[-1]
    if height < min_size or width < min_size:
        raise ShapeError(
            f"{model_name} needs inputs of at least {min_size}x{min_size} pixels, got {height}x{width}; "
            f"resize the images (e.g. --input-size {min_size}) or pick a model for small images"
        )
