"""Upsampling (Ronneberger et al. 2015 "up-convolution"; Long et al. 2015 bilinear-initialised deconvolution;
Zeiler & Fergus 2014 unpooling)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBNAct


class TransposedConvUpsample(nn.Module):
    """Learnt upsampling: a transposed convolution that scales height and width by ``scale`` (each input
    pixel stamps a weighted k x k patch into the output, the adjoint of a strided convolution), then ReLU.
    U-Net's "up-conv 2x2" is ``TransposedConvUpsample(c, c // 2, scale=2, activation=False)``."""

    def __init__(self, in_channels: int, out_channels: int, scale: int = 2, activation: bool = True):
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=scale, stride=scale)
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.up(x))


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """ConvTranspose2d weights (channels, channels, k, k), k = 2 x factor - factor % 2, that upsample each channel
    on its own by bilinear interpolation: the separable tent 1 - |i - centre| / factor on the diagonal, zero
    across channels (the FCN reference code's ``surgery.interp``)."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 else factor - 0.5
    tent = 1 - (torch.arange(size, dtype=torch.float32) - centre).abs() / factor
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = tent[:, None] * tent[None, :]
    return weight


class BilinearUpsample(nn.ConvTranspose2d):
    """FCN's "deconvolution" (Long et al. 2015, §3.3): a transposed convolution with stride ``factor`` whose
    weights start as bilinear interpolation, so an untrained network already upsamples sensibly and learning only
    refines it. Kernel 2f - f % 2 with padding ceil((f - 1) / 2) maps n pixels to exactly f x n, aligned as
    ``F.interpolate(scale_factor=f, mode="bilinear", align_corners=False)``, which it equals away from the border
    (the border sees zeros where interpolate repeats the edge). ``learnable=False`` keeps it fixed, as the paper
    does for the final upsampling of FCN-32s (§4.2)."""

    def __init__(self, channels: int, factor: int, learnable: bool = True):
        if factor < 1:
            raise ValueError(f"BilinearUpsample needs an integer factor >= 1, got {factor}")
        weight = bilinear_kernel(channels, factor)
        super().__init__(channels, channels, weight.shape[-1], stride=factor, padding=factor // 2,
                         bias=False)
        with torch.no_grad():
            self.weight.copy_(weight)
        self.weight.requires_grad_(learnable)
        self.factor = factor

    def reset_parameters(self) -> None:  # nn.ConvTranspose2d's init would replace the bilinear weights
        if hasattr(self, "factor"):
            with torch.no_grad():
                self.weight.copy_(bilinear_kernel(self.in_channels, self.factor))
        else:
            super().reset_parameters()


class MaxPoolWithIndices(nn.Module):
    """Max-pooling that also returns where each maximum came from, for :class:`MaxUnpoolUpsample`."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        self.pool = nn.MaxPool2d(kernel_size, stride, return_indices=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pool(x)


class MaxUnpoolUpsample(nn.Module):
    """Unpooling: puts each value back where the matching max-pool found its maximum and zeros elsewhere
    (SegNet, deconvnet), then a 3x3 convolution fills the holes. Takes ``(x, indices, output_size)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int | None = None):
        super().__init__()
        self.unpool = nn.MaxUnpool2d(kernel_size, stride)
        self.conv = ConvBNAct(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size=None) -> torch.Tensor:
        return self.conv(self.unpool(x, indices, output_size=output_size))
