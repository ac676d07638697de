"""Residual blocks (He et al. 2015, "Deep residual learning for image recognition", §3.3 and Fig. 5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import make_activation
from .norm import DEFAULT_GROUPS, conv_bias, make_norm, resolve_norm


class ZeroPadShortcut(nn.Module):
    """Shortcut option A (paper §3.3 and §4.2): identity, subsampled by taking every ``stride``-th pixel, with
    the extra channels filled by zeros. It adds no parameters, which is why the CIFAR ResNets use it.

    The paper does not say where the zero channels go, and weights only work with the side they were trained
    with: ``padding="after"`` appends them all after the existing channels (cnnkit's layout, and the default,
    so every run folder trained so far rebuilds the network it was trained as); ``padding="both"`` puts half
    before and half after, so the existing channels sit in the middle, as the widespread CIFAR checkpoints
    (akamaster/pytorch_resnet_cifar10, ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes//4, planes//4))``) do."""

    PADDINGS = ("after", "both")

    def __init__(self, in_channels: int, out_channels: int, stride: int, padding: str = "after"):
        super().__init__()
        if padding not in self.PADDINGS:
            raise ValueError(f"option-A shortcut padding must be 'after' (zeros after the existing channels) or "
                             f"'both' (half on each side, the akamaster CIFAR checkpoints), not {padding!r}")
        self.extra_channels, self.stride, self.padding = out_channels - in_channels, stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if not self.extra_channels:
            return x
        before = self.extra_channels // 2 if self.padding == "both" else 0
        return F.pad(x, (0, 0, 0, 0, before, self.extra_channels - before))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}, padding={self.padding!r}"


def make_shortcut(in_channels: int, out_channels: int, stride: int, option: str, padding: str = "after",
                  norm: str = "batch", norm_groups: int = DEFAULT_GROUPS) -> nn.Module:
    """The residual branch's partner: identity when shapes agree, else option A (zero padding, on the side
    ``padding`` names: see ZeroPadShortcut) or B (1x1 projection with batch norm, or the ``norm`` given).
    Option C of the paper (projection everywhere) is ``option='C'``."""
    if option not in ("A", "B", "C"):
        raise ValueError(f"shortcut option must be 'A', 'B' or 'C' (He et al. §3.3), not {option!r}")
    if option == "C" or (option == "B" and (stride != 1 or in_channels != out_channels)):
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=conv_bias(norm)),
                             make_norm(norm, out_channels, norm_groups))
    if stride != 1 or in_channels != out_channels:
        return ZeroPadShortcut(in_channels, out_channels, stride, padding)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection: relu(F(x) + shortcut(x)) (paper Fig. 5 left).

    ``residual=False`` drops the skip connection, giving the "plain" network of the degradation experiment
    (paper Fig. 4 and 6), with exactly the same layers otherwise. ``activation`` (relu, sigmoid, tanh, ...) and
    ``batch_norm=False`` are not the paper's: they let the same network show why deep nets needed ReLU,
    normalisation and shortcuts (vanishing gradients through bounded activations, notes deck 003).
    ``norm`` puts group, layer or instance norm where batch norm was (``norm_groups``: group norm's G; see
    :mod:`cnnkit.layers.norm`); ``batch_norm=False`` is the same as ``norm='none'``."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str = "B",
                 residual: bool = True, shortcut_padding: str = "after", activation: str = "relu",
                 batch_norm: bool = True, norm: str = "batch", norm_groups: int = DEFAULT_GROUPS):
        super().__init__()
        norm = resolve_norm(norm, batch_norm)
        out_channels = channels * self.expansion
        # Without a norm a convolution needs its own bias (the norm's shift was it). bn1/bn2 keep their names
        # whatever norm they hold, as relu does: layer names stay the same across variants.
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=conv_bias(norm))
        self.bn1 = make_norm(norm, channels, norm_groups)
        self.conv2 = nn.Conv2d(channels, out_channels, 3, 1, 1, bias=conv_bias(norm))
        self.bn2 = make_norm(norm, out_channels, norm_groups)
        self.relu = make_activation(activation)  # named relu whatever it is: state dicts and layer names stay
        self.residual = residual
        self.shortcut = (make_shortcut(in_channels, out_channels, stride, shortcut, shortcut_padding, norm,
                                       norm_groups) if residual else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 -> 1x1 expand (x4), with a skip connection (paper Fig. 5 right, ResNet-50/101/152).

    ``stride_on='3x3'`` puts the downsampling stride on the 3x3 convolution (torchvision's "ResNet v1.5",
    slightly more accurate); ``stride_on='1x1'`` puts it on the first 1x1 convolution as the paper does.
    ``norm``/``norm_groups`` as in :class:`BasicBlock` (Wu & He 2018 trained this block with group norm)."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: str = "B",
                 residual: bool = True, stride_on: str = "3x3", norm: str = "batch",
                 norm_groups: int = DEFAULT_GROUPS):
        super().__init__()
        if stride_on not in ("3x3", "1x1"):
            raise ValueError(f"stride_on must be '3x3' or '1x1', not {stride_on!r}")
        bias = conv_bias(norm)
        out_channels = channels * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_on == "1x1" else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, channels, 1, stride_1x1, bias=bias)
        self.bn1 = make_norm(norm, channels, norm_groups)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride_3x3, 1, bias=bias)
        self.bn2 = make_norm(norm, channels, norm_groups)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=bias)
        self.bn3 = make_norm(norm, out_channels, norm_groups)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual
        self.shortcut = (make_shortcut(in_channels, out_channels, stride, shortcut, norm=norm, norm_groups=norm_groups)
                         if residual else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.relu(out)
