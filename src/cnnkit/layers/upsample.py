"""Upsampling (Ronneberger et al. 2015 "up-convolution"; Zeiler & Fergus 2014 unpooling)."""

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
