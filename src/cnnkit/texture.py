"""Feed-forward texture networks (Ulyanov, Lebedev, Vedaldi, Lempitsky, "Texture networks: feed-forward
synthesis of textures and stylized images", ICML 2016; the notes, seeds 004, "Applications: texture synthesis"):
a generator trained once on the style loss of :mod:`cnnkit.style`, so that each new texture of any size is a
single forward pass instead of an optimisation.

The generator normalises with instance norm by default, as Ulyanov, Vedaldi & Lempitsky found better in
"Improved texture networks" (CVPR 2017, §3; notes deck 003, "Alternative forms of normalization"): each
sample's maps are normalised on their own, in training and in sampling alike, where the 2016 paper's batch norm
mixes the few samples of a tiny batch (2 here) and samples with running averages that training never used.
``TextureGenerator(norm="batch")`` (``cnnkit texture --generator-norm batch``) is the 2016 network; generator
files saved before the choice existed hold that one and load as it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data.image_io import resize_longer_side
from .errors import CnnkitError
from .layers.norm import make_norm
from .progress import progress_bar
from .style import Descriptor, StyleConfig, StyleObjective, build_descriptor


GENERATOR_NORMS = ("instance", "batch")


class _ConvBlock(nn.Sequential):
    """3x3, 3x3, 1x1 convolutions, each with a norm (instance or batch) and LeakyReLU (the paper's *conv*
    block). Circular padding makes the texture tile seamlessly and keeps borders from looking different from
    the middle. The convolutions keep their bias with either norm so both variants share one layout."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        layers = []
        for cin, kernel in [(in_channels, 3), (out_channels, 3), (out_channels, 1)]:
            layers += [nn.Conv2d(cin, out_channels, kernel, padding=kernel // 2, padding_mode="circular"),
                       make_norm(norm, out_channels), nn.LeakyReLU(0.01, inplace=True)]
        super().__init__(*layers)


class TextureGenerator(nn.Module):
    """Ulyanov et al. 2016, Fig. 2: noise tensors z_1 ... z_K at sizes S/2^(K-1) ... S each go through a conv
    block; from the coarsest up, the running result is upsampled 2x (nearest), normalised and concatenated
    (*join*) with the next finer branch, then another conv block; a 1x1 convolution gives RGB.
    Fully convolutional, so it samples textures of any size (rounded up to a multiple of 2^(K-1), then cropped).
    ``norm``: ``"instance"`` (default; Ulyanov et al. 2017) or ``"batch"`` (the 2016 paper's)."""

    def __init__(self, scales: int = 5, noise_channels: int = 3, width: int = 8, norm: str = "instance"):
        super().__init__()
        if norm not in GENERATOR_NORMS:
            raise ValueError(f"the texture generator's norm must be 'instance' (Ulyanov et al. 2017, the default) "
                             f"or 'batch' (the 2016 paper's), not {norm!r}")
        self.config = {"scales": scales, "noise_channels": noise_channels, "width": width, "norm": norm}
        self.scales, self.noise_channels = scales, noise_channels
        self.branches = nn.ModuleList(_ConvBlock(noise_channels, width, norm) for _ in range(scales))
        self.joins = nn.ModuleList()
        self.norms = nn.ModuleList()
        channels = width
        for _ in range(scales - 1):
            self.norms.append(make_norm(norm, channels))
            self.joins.append(_ConvBlock(channels + width, channels + width, norm))
            channels += width
        self.to_rgb = nn.Conv2d(channels, 3, 1)

    def noise(self, batch: int, height: int, width: int, generator: torch.Generator | None = None,
              device=None) -> list[torch.Tensor]:
        factor = 2 ** (self.scales - 1)
        # Instance norm of a 1x1 map would erase it (and torch refuses one value per group in training): its
        # coarsest noise is at least 2x2, the samples cropped as always. Batch norm keeps the 2016 sizes.
        least = 2 if self.config["norm"] == "instance" else 1
        h, w = (max(math.ceil(height / factor), least) * factor, max(math.ceil(width / factor), least) * factor)
        return [torch.rand(batch, self.noise_channels, h >> k, w >> k, generator=generator, device=device)
                for k in reversed(range(self.scales))]  # coarsest first

    def forward(self, noises: list[torch.Tensor]) -> torch.Tensor:
        x = self.branches[0](noises[0])
        for branch, norm, join, z in zip(self.branches[1:], self.norms, self.joins, noises[1:]):
            x = norm(F.interpolate(x, scale_factor=2, mode="nearest"))
            x = join(torch.cat([x, branch(z)], 1))
        return torch.sigmoid(self.to_rgb(x))

    @torch.no_grad()
    def sample(self, height: int, width: int, count: int = 1, seed: int | None = None) -> torch.Tensor:
        """``count`` new textures (count, 3, height, width) in [0, 1]."""
        self.eval()
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        device = self.to_rgb.weight.device
        out = self(self.noise(count, height, width, generator, device))
        return out[..., :height, :width]


def train_texture_generator(style: torch.Tensor, descriptor: Descriptor | None = None, iterations: int = 300,
                            size: int = 128, batch_size: int = 2, lr: float = 0.01, config: StyleConfig | None = None,
                            generator: TextureGenerator | None = None, seed: int = 0,
                            progress: bool = False, norm: str = "instance") -> tuple[TextureGenerator, list[dict]]:
    """Train a :class:`TextureGenerator` on one texture with the style loss (Adam, as in the paper), on
    ``size`` x ``size`` samples. Returns the generator and the loss history. ``norm`` is the new generator's
    normalisation where ``generator`` is not given."""
    descriptor = descriptor or build_descriptor()
    config = dataclasses.replace(config or StyleConfig(), content_weight=0.0, size=size).resolved(descriptor)
    torch.manual_seed(seed)
    generator = generator or TextureGenerator(norm=norm)
    objective = StyleObjective(descriptor, config, None, [(resize_longer_side(style, size), 1.0)])
    optimizer = torch.optim.Adam(generator.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, iterations)
    noise_generator = torch.Generator().manual_seed(seed)
    history, start = [], time.perf_counter()
    bar = None
    if progress:
        bar = progress_bar(iterations, "texture generator")
    generator.train()
    for step in range(1, iterations + 1):
        samples = generator(generator.noise(batch_size, size, size, noise_generator))[..., :size, :size]
        # the style loss of each sample, averaged: each must look like the texture on its own
        loss = sum(objective(s[None])[0] for s in samples) / batch_size
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        history.append({"iteration": step, "loss": loss.item(), "seconds": round(time.perf_counter() - start, 3)})
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4g}")
    if bar is not None:
        bar.close()
    return generator.eval(), history


def save_texture_generator(generator: TextureGenerator, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, str(path),
              metadata={"cnnkit": "texture_generator", "config": json.dumps(generator.config)})
    return path


def load_texture_generator(path: str | Path) -> TextureGenerator:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise CnnkitError(f"{path} is not a readable texture generator ({exc}); write one with "
                          "'cnnkit texture STYLE --feedforward --save-generator FILE'.") from None
    if meta.get("cnnkit") != "texture_generator":
        raise CnnkitError(f"{path} is a safetensors file but not a cnnkit texture generator; write one with "
                          "'cnnkit texture STYLE --feedforward --save-generator FILE'.")
    # Files written before the norm was a choice hold the 2016 batch-norm generator.
    generator = TextureGenerator(**{"norm": "batch", **json.loads(meta["config"])})
    generator.load_state_dict(state)
    return generator.eval()


__all__ = ["GENERATOR_NORMS", "TextureGenerator", "load_texture_generator", "save_texture_generator",
           "train_texture_generator"]
