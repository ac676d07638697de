"""The eval transform: a photo of any size made into the input a model reads, the way its weights saw their
evaluation images (the ImageNet protocol): the shorter side resized to ``resize``, the centre ``size`` cropped,
the pixels normalised. predict, viz (Grad-CAM, saliency inputs), the web page and transfer's classifier all
use this one, so the same photo gives the same input everywhere. The values come from the model card
(:func:`cnnkit.card.card_of`), which knows them from the weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from .augment import normalize
from .image_io import read_image, scaled_size


def resize_and_centre_crop(image: torch.Tensor, size: tuple[int, int], resize: int | None = None,
                           interpolation: str = "bilinear", source: str = "the image") -> torch.Tensor:
    """uint8 (C, H, W) -> uint8 (C, *size): the shorter side scaled to ``resize`` (None: just enough to cover
    ``size``), then the centre cropped. The output size is checked before anything is allocated."""
    height, width = image.shape[-2:]
    crop_height, crop_width = size
    scale = resize / min(height, width) if resize else max(crop_height / height, crop_width / width)
    out_width, out_height = scaled_size(width, height, scale, crop_width, crop_height, source)
    top, left = (out_height - crop_height) // 2, (out_width - crop_width) // 2
    # One channel at a time: a float copy of a whole 40-megapixel photo would take 480 MB; channels are
    # resized independently, so the result is the same.
    planes = [F.interpolate(plane[None, None].float(), size=(out_height, out_width), mode=interpolation,
                            align_corners=False, antialias=True)[0, 0, top:top + crop_height, left:left + crop_width]
              for plane in image]
    return torch.stack(planes).clamp_(0, 255).round().to(torch.uint8)


@dataclasses.dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``resize``, centre crop ``size`` (height, width), normalise by ``mean`` and
    ``std`` (None: the pixels stay in [0, 1]). Build it from a model card: ``card_of(model).eval_transform()``."""

    size: tuple[int, int]
    resize: int | None = None
    interpolation: str = "bilinear"
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None

    def crop(self, image: torch.Tensor, source: str = "the image") -> torch.Tensor:
        """uint8 (C, H, W) photo -> uint8 (C, *size), what the model sees before normalisation."""
        return resize_and_centre_crop(image, tuple(self.size), self.resize, self.interpolation, source)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> float model input."""
        pixels = batch.float() / 255
        if self.mean is None:
            return pixels
        return normalize(pixels, self.mean, self.std if self.std is not None else [1.0])

    def read(self, path: str | Path, channels: int) -> torch.Tensor:
        """An image file as the cropped uint8 (C, *size) picture (grey for 1 channel, RGB for 3)."""
        return self.crop(read_image(path, channels), str(path))

    def __call__(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 photo(s), (C, H, W) or a list of them -> the normalised (N, C, *size) batch."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = [images]
        return self.normalise(torch.stack([self.crop(image) for image in images]))


__all__ = ["EvalTransform", "resize_and_centre_crop"]
