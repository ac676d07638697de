"""The notes' toy example (002, "A toy example": "A simple example of classifying X or O"), grown to four
classes: small binary drawings of an X, an O, a "/" and a "\\", at random sizes and places, with pixel noise.

    bundle = glyph_dataset(num_train=2000, num_test=500, image_size=12, seed=0)
    bundle.train.images   # uint8 (N, 1, 12, 12): strokes 255 on 0, some pixels flipped
    bundle.train.labels   # 0 "X", 1 "O", 2 "/", 3 "\\"

Drawn with tensor ops over the whole batch from one ``torch.Generator``: the same seed gives the same images on
any machine, and the test split uses a stream of its own.
"""

from __future__ import annotations

import torch

from .datasets import DatasetBundle, TensorImageDataset

GLYPH_CLASSES = ["X", "O", "/", "\\"]


def render_glyphs(labels: torch.Tensor, image_size: int = 12, noise: float = 0.03,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """One (N, 1, S, S) uint8 drawing per label (an index into GLYPH_CLASSES): the glyph spans a square of
    half-side 2 to S/2 - 1 pixels at a random place inside the image, one pixel wide; then each pixel is flipped
    with probability ``noise``."""
    if image_size < 7:
        raise ValueError(f"glyphs need images of at least 7x7 pixels, got {image_size}")
    count = len(labels)
    half = torch.randint(2, image_size // 2, (count,), generator=generator)
    # Centres that keep the whole glyph inside the image (drawn as a fraction of the free room).
    room = image_size - 1 - 2 * half
    cy = half + (torch.rand(count, generator=generator) * (room + 1)).long()
    cx = half + (torch.rand(count, generator=generator) * (room + 1)).long()
    ys = torch.arange(image_size)[None, :, None] - cy[:, None, None]
    xs = torch.arange(image_size)[None, None, :] - cx[:, None, None]
    radius = half[:, None, None]
    inside = (ys.abs() <= radius) & (xs.abs() <= radius)
    down, up = inside & (ys == xs), inside & (ys == -xs)  # "\" (y grows downwards) and "/"
    distance = (ys.float() ** 2 + xs.float() ** 2).sqrt()
    ring = (distance - radius.float()).abs() < 0.5
    strokes = torch.stack([down | up, ring, up, down])  # in GLYPH_CLASSES order
    drawn = strokes[labels, torch.arange(count)]
    flipped = torch.rand(drawn.shape, generator=generator) < noise
    return ((drawn ^ flipped).to(torch.uint8) * 255)[:, None]


def glyph_dataset(num_train: int = 2000, num_test: int = 500, image_size: int = 12, noise: float = 0.03,
                  seed: int = 0) -> DatasetBundle:
    """The four-glyph toy set as a bundle the Trainer reads, the classes balanced in each split."""
    splits = {}
    for offset, (split, count) in enumerate((("train", num_train), ("test", num_test))):
        generator = torch.Generator().manual_seed(seed * 2 + offset)  # disjoint streams for the two splits
        labels = torch.arange(count) % len(GLYPH_CLASSES)
        labels = labels[torch.randperm(count, generator=generator)]
        splits[split] = TensorImageDataset(render_glyphs(labels, image_size, noise, generator), labels,
                                           list(GLYPH_CLASSES))
    # Fixed statistics of a binary image (mostly background): the same normalisation for every seed.
    return DatasetBundle(f"glyphs(seed={seed})", splits["train"], splits["test"], list(GLYPH_CLASSES),
                         (0.15,), (0.35,))
