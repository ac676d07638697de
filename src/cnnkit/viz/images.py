"""Reading an image file into the input a model expects, and back into something to look at.

The model's expectations come from ``model.default_config`` (set by ``create_model``): channels and size
from ``input_size``, normalisation from ``mean``/``std`` when the model defines them. Models trained with
their dataset's own statistics (``mean=None``) get them passed explicitly by the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ..data.image_io import open_image, scaled_size
from ..errors import ImageError


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: ``channels`` x ``height`` x ``width``, normalised by ``mean``/``std`` (None: no
    normalisation, the image stays in [0, 1])."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> model input."""
        if self.mean is None:
            return images
        mean, std = self._stats(images)
        return (images - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """Model input -> [0, 1] images (clamped), for display."""
        if self.mean is not None:
            mean, std = self._stats(images)
            images = images * std + mean
        return images.clamp(0, 1)

    def _stats(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(shape)
        std = torch.tensor(self.std if self.std is not None else [1.0] * len(self.mean), dtype=images.dtype,
                           device=images.device).view(shape)
        return mean, std


def input_spec(
    model: nn.Module,
    size: int | Sequence[int] | None = None,
    channels: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> InputSpec:
    """The model's input description, from ``model.default_config`` with explicit arguments taking precedence.

    ``in_channels`` recorded by ``create_model`` wins over the paper's channel count (a LeNet built for RGB).
    """
    config = getattr(model, "default_config", None) or {}
    built = getattr(model, "cnnkit_config", None) or {}
    default_size = config.get("input_size")
    if channels is None:
        channels = built.get("in_channels") or (default_size[0] if default_size else None)
    if size is None and default_size:
        size = default_size[1:]
    if channels is None or size is None:
        raise ImageError(
            f"Cannot tell what input {type(model).__name__} expects: it has no default_config (models built by "
            "cnnkit.create_model have one). Pass size=(height, width) and channels= explicitly."
        )
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean = mean if mean is not None else config.get("mean")
    std = std if std is not None else config.get("std")
    if mean is not None:
        mean = _per_channel(mean, channels, "mean")
        std = _per_channel(std if std is not None else [1.0], channels, "std")
    return InputSpec(int(channels), height, width, mean, std)


def _per_channel(values: Sequence[float], channels: int, what: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) == 1:
        return values * channels
    if len(values) != channels:
        raise ImageError(f"{what} has {len(values)} values but the model takes {channels} channels; "
                         f"give 1 or {channels}.")
    return values


def load_image(path: str | Path, spec: InputSpec) -> torch.Tensor:
    """Read ``path`` and return a (1, C, H, W) float batch ready for the model.

    The shorter side is resized to the model's size and the centre cropped, so the aspect ratio is kept (the
    usual ImageNet evaluation transform); colour images become grey for 1-channel models and vice versa.
    """
    path = Path(path)
    if spec.channels not in (1, 3):
        raise ImageError(f"The model takes {spec.channels}-channel input; only 1- and 3-channel images can be read.")
    image = open_image(path, spec.channels)
    image = _resize_and_centre_crop(image, spec.height, spec.width)
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array.copy())
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return spec.normalize(tensor.unsqueeze(0))


def _resize_and_centre_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    scale = max(height / image.height, width / image.width)
    resized = image.resize(scaled_size(image.width, image.height, scale, width, height), Image.BICUBIC)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))
