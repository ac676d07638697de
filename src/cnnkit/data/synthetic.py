"""A synthetic segmentation dataset: textured shapes on textured backgrounds, with pixel masks.

    bundle = synthetic_shapes(num_train=2000, num_test=400, image_size=64, seed=0)
    bundle.train.images   # uint8 (N, 3, 64, 64)
    bundle.train.labels   # int64 (N, 64, 64): 0 background, 1 disk, 2 square, 3 triangle

Each image has a background of random-coloured oriented stripes over smooth blotches, and one to three
shapes (disk, square, triangle; random size, position and rotation; later shapes occlude earlier ones),
each filled with its own colour and stripe texture. Colour alone therefore does not give the class away: a
segmenter has to use the outline. Everything is drawn from one ``torch.Generator`` seeded by ``seed``, so the
same seed gives the same dataset, bit for bit, on any machine; the test split uses a different stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .datasets import DatasetBundle, TensorImageDataset, channel_stats

SHAPE_CLASSES = ["background", "disk", "square", "triangle"]


def _uniform(generator, low: float, high: float, size=()) -> torch.Tensor:
    return low + (high - low) * torch.rand(size, generator=generator)


def _stripes(ys, xs, generator, period_range=(4.0, 14.0)) -> torch.Tensor:
    angle = _uniform(generator, 0, math.pi)
    period = _uniform(generator, *period_range)
    phase = _uniform(generator, 0, 2 * math.pi)
    return 0.5 + 0.5 * torch.sin(2 * math.pi * (xs * torch.cos(angle) + ys * torch.sin(angle)) / period + phase)


def _shape_mask(kind: str, ys, xs, cy, cx, radius, angle) -> torch.Tensor:
    dy, dx = ys - cy, xs - cx
    if kind == "disk":
        return dy**2 + dx**2 <= radius**2
    if kind == "square":
        u = dx * torch.cos(angle) + dy * torch.sin(angle)
        v = -dx * torch.sin(angle) + dy * torch.cos(angle)
        half = radius * 0.85  # about the disk's area, so size does not give the class away
        return (u.abs() <= half) & (v.abs() <= half)
    # an equilateral triangle: inside the three half-planes whose normals are 120 degrees apart
    inside = torch.ones_like(ys, dtype=torch.bool)
    for k in range(3):
        theta = angle + 2 * math.pi * k / 3
        inside &= dx * torch.cos(theta) + dy * torch.sin(theta) <= radius * 0.65
    return inside


def render_shapes(count: int, image_size: int = 64, generator: torch.Generator | None = None,
                  max_shapes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images (uint8, N x 3 x S x S) and their masks (int64, N x S x S)."""
    generator = generator or torch.Generator().manual_seed(0)
    size = image_size
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    masks = torch.zeros(count, size, size, dtype=torch.long)
    for index in range(count):
        colours = torch.rand(2, 3, 1, 1, generator=generator)
        pattern = _stripes(ys, xs, generator)
        blotches = F.interpolate(torch.rand(1, 3, 4, 4, generator=generator), size=(size, size), mode="bicubic",
                                 align_corners=False)[0]
        image = colours[0] * pattern + colours[1] * (1 - pattern)
        image = 0.7 * image + 0.3 * blotches
        mask = torch.zeros(size, size, dtype=torch.long)
        for _ in range(int(torch.randint(1, max_shapes + 1, (), generator=generator))):
            label = int(torch.randint(1, len(SHAPE_CLASSES), (), generator=generator))
            radius = _uniform(generator, 0.14, 0.26) * size
            cy, cx = _uniform(generator, 0.15, 0.85, (2,)) * size
            inside = _shape_mask(SHAPE_CLASSES[label], ys, xs, cy, cx, radius, _uniform(generator, 0, 2 * math.pi))
            fill = torch.rand(3, 1, 1, generator=generator)
            texture = _stripes(ys, xs, generator, (3.0, 8.0))
            shaded = fill * (0.75 + 0.25 * texture)
            image = torch.where(inside, shaded, image)
            mask[inside] = label
        image = image + 0.03 * torch.randn(image.shape, generator=generator)
        images[index] = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        masks[index] = mask
    return images, masks


def synthetic_shapes(num_train: int = 2000, num_test: int = 400, image_size: int = 64, seed: int = 0,
                     max_shapes: int = 3) -> DatasetBundle:
    """The shapes dataset as a bundle the Trainer reads (labels are per-pixel masks)."""
    splits = {}
    for offset, (split, count) in enumerate((("train", num_train), ("test", num_test))):
        generator = torch.Generator().manual_seed(seed * 2 + offset)  # disjoint streams for the two splits
        images, masks = render_shapes(count, image_size, generator, max_shapes)
        splits[split] = TensorImageDataset(images, masks, list(SHAPE_CLASSES))
    mean, std = channel_stats(splits["train"].images)
    return DatasetBundle(f"shapes(seed={seed})", splits["train"], splits["test"], list(SHAPE_CLASSES), mean, std)


__all__ = ["SHAPE_CLASSES", "render_shapes", "synthetic_shapes"]
