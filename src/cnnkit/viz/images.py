"""Reading an image file into the input a model expects, and back into something to look at.

The model's expectations come from its card (:func:`cnnkit.card.card_of`): channels, input size, the resize
before the centre crop and the normalisation its weights were trained with. A network built from scratch has
no normalisation on its card; callers pass its dataset's statistics explicitly. Files are read with the one
eval transform (:mod:`cnnkit.data.transforms`), so Grad-CAM and saliency see the crop predict and the web
page see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..card import card_of
from ..data.image_io import read_image
from ..data.transforms import resize_and_centre_crop
from ..errors import ImageError


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: ``channels`` x ``height`` x ``width``, normalised by ``mean``/``std`` (None: no
    normalisation, the image stays in [0, 1]); a photo's shorter side is resized to ``resize`` (None: just
    enough to cover height x width) before the centre crop."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: int | None = None
    interpolation: str = "bilinear"

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
    """The model's input description, from its card with explicit arguments taking precedence.

    The channels the model was built with win over the paper's channel count (a LeNet built for RGB). The
    card's resize applies when the size is the card's own (a 256 resize before the 224 crop)."""
    card = card_of(model)
    channels = channels if channels is not None else card.in_channels
    size = size if size is not None else card.input_size
    if channels is None or size is None:
        raise ImageError(
            f"Cannot tell what input {type(model).__name__} expects: it has no model card (models built by "
            "cnnkit.create_model have one). Pass size=(height, width) and channels= explicitly."
        )
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mean = mean if mean is not None else card.mean
    std = std if std is not None else card.std
    if mean is not None:
        mean = _per_channel(mean, channels, "mean")
        std = _per_channel(std if std is not None else [1.0], channels, "std")
    resize = card.resize if (height, width) == card.input_size else None
    return InputSpec(int(channels), height, width, mean, std, resize, card.interpolation)


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

    The shorter side is resized (to the spec's ``resize``, else to the model's size) and the centre cropped, so
    the aspect ratio is kept (the ImageNet evaluation transform, the one predict and the web page use); colour
    images become grey for 1-channel models and vice versa.
    """
    path = Path(path)
    if spec.channels not in (1, 3):
        raise ImageError(f"The model takes {spec.channels}-channel input; only 1- and 3-channel images can be read.")
    image = read_image(path, spec.channels)
    pixels = resize_and_centre_crop(image, (spec.height, spec.width), spec.resize, spec.interpolation, str(path))
    return spec.normalize(pixels[None].float() / 255)
