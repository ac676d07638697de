"""Convolution variants: depthwise-separable (Chollet 2017, "Xception", §2; Sifre 2014), and convolution
as one matrix product (im2col), as the notes explain it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError


class SeparableConv2d(nn.Module):
    """A depthwise convolution (one k x k filter per input channel, groups = in_channels) followed by a
    pointwise 1x1 convolution that mixes channels. Spatial and cross-channel correlations are learnt
    separately: k*k*C + C*C' weights instead of k*k*C*C'."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, dilation: int = 1, bias: bool = False):
        super().__init__()
        padding = dilation * (kernel_size // 2) if padding is None else padding
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation,
                                   groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv2d_im2col(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=1,
                  padding=0, dilation=1, groups: int = 1) -> torch.Tensor:
    """2-D convolution computed as im2col + one batched matrix product, equal to ``F.conv2d``.

    ``F.unfold`` copies every receptive field into a column: a (C/groups * kh * kw) x (H_out * W_out) matrix
    per image and group (see :func:`im2col_matrix_shape`); the filters, flattened to rows, multiply it. The
    pixels are duplicated kh*kw times, which is the memory price of turning convolution into a GEMM."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    batch, in_channels, height, width = x.shape
    out_channels, channels_per_group, kh, kw = weight.shape
    if in_channels != channels_per_group * groups:
        raise ShapeError(f"input has {in_channels} channels, the weight expects {channels_per_group} x {groups} groups")
    out_h = (height + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if out_h < 1 or out_w < 1:
        raise ShapeError(f"a {kh}x{kw} filter does not fit a {height}x{width} input with padding {padding}")
    columns = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, C*kh*kw, L)
    columns = columns.view(batch, groups, channels_per_group * kh * kw, out_h * out_w)
    filters = weight.view(groups, out_channels // groups, channels_per_group * kh * kw)
    out = torch.einsum("gok,ngkl->ngol", filters, columns).reshape(batch, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def im2col_matrix_shape(in_channels: int, kernel_size, out_height: int, out_width: int) -> tuple[int, int]:
    """Rows x columns of the unfolded matrix for one image (all groups stacked): C*kh*kw x H_out*W_out."""
    kh, kw = _pair(kernel_size)
    return in_channels * kh * kw, out_height * out_width
