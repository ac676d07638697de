"""Inception (Szegedy et al. 2014, "Going deeper with convolutions", §4 and Fig. 2)."""

from __future__ import annotations

import torch
from torch import nn

from .blocks import ConvBNAct


def _conv_relu(in_channels: int, out_channels: int, kernel_size: int, batch_norm: bool = False) -> nn.Sequential:
    """A 'same'-padded convolution followed by ReLU (and batch norm before it when asked)."""
    if batch_norm:
        return ConvBNAct(in_channels, out_channels, kernel_size)
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                         nn.ReLU(inplace=True))


class InceptionNaive(nn.Module):
    """The naive inception module (paper Fig. 2a): 1x1, 3x3 and 5x5 convolutions and a 3x3 max-pool side by
    side, concatenated along channels. The pooling branch keeps every input channel, so the output is always
    deeper than the input; on 28x28x256 with 128/192/96 filters it costs 854 M multiply-adds (the notes)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3: int, ch5x5: int, batch_norm: bool = False):
        super().__init__()
        self.branch1x1 = _conv_relu(in_channels, ch1x1, 1, batch_norm)
        self.branch3x3 = _conv_relu(in_channels, ch3x3, 3, batch_norm)
        self.branch5x5 = _conv_relu(in_channels, ch5x5, 5, batch_norm)
        self.branch_pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1)


class Inception(nn.Module):
    """The inception module with dimension reductions (paper Fig. 2b and Table 1's column names):
    1x1 convolutions shrink the depth before the 3x3 and 5x5 convolutions and after the pooling, which brings
    the notes' 28x28x256 example from 854 M down to 271 M multiply-adds (the notes print 358 M: their sum counts
    the 3x3 branch twice; tests/test_calculator.py shows the terms). The 5x5 branch uses a real 5x5
    convolution as in the paper (torchvision uses 3x3 there)."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3_reduce: int, ch3x3: int, ch5x5_reduce: int,
                 ch5x5: int, pool_proj: int, batch_norm: bool = False):
        super().__init__()
        self.branch1x1 = _conv_relu(in_channels, ch1x1, 1, batch_norm)
        self.branch3x3 = nn.Sequential(_conv_relu(in_channels, ch3x3_reduce, 1, batch_norm),
                                       _conv_relu(ch3x3_reduce, ch3x3, 3, batch_norm))
        self.branch5x5 = nn.Sequential(_conv_relu(in_channels, ch5x5_reduce, 1, batch_norm),
                                       _conv_relu(ch5x5_reduce, ch5x5, 5, batch_norm))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1),
                                         _conv_relu(in_channels, pool_proj, 1, batch_norm))
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x)], 1)
