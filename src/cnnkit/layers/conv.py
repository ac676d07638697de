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



def _patches(padded: torch.Tensor, kernel_size: int, stride: int, out_h: int, out_w: int) -> torch.Tensor:
    """(Hp, Wp, N, C) padded input -> (out_h * out_w, N, k * k * C) patches, one row of k*k*C values (row, column,
    channel order) per position and image. Built from a strided view in one copy whose innermost runs are the
    C contiguous channels: F.unfold's (N, C*k*k, L) layout would need a full transpose before the batched product,
    which on a busy 2-core machine took 10x longer than the product itself."""
    s = padded.stride()
    view = padded.as_strided((out_h, out_w, padded.shape[2], kernel_size, kernel_size, padded.shape[3]),
                             (s[0] * stride, s[1] * stride, s[2], s[0], s[1], s[3]))
    return view.reshape(out_h * out_w, padded.shape[2], -1)


class _LocallyConnected(torch.autograd.Function):
    """out[l] = patches[l] @ weight[l] for every position l, with a hand-written backward: autograd's generic
    as_strided backward is slow, and the input's gradient is k*k shifted adds of contiguous blocks."""

    @staticmethod
    def forward(ctx, x, weight, kernel_size: int, stride: int, padding: int, out_h: int, out_w: int):
        padded = F.pad(x, (padding,) * 4).permute(2, 3, 0, 1).contiguous()  # (Hp, Wp, N, C)
        patches = _patches(padded, kernel_size, stride, out_h, out_w)
        ctx.save_for_backward(patches, weight)
        ctx.geometry = (x.shape, kernel_size, stride, padding, out_h, out_w)
        out = torch.bmm(patches, weight)  # (L, N, out_channels)
        return out.view(out_h, out_w, x.shape[0], -1).permute(2, 3, 0, 1).contiguous()

    @staticmethod
    def backward(ctx, grad):
        patches, weight = ctx.saved_tensors
        (batch, channels, height, width), k, stride, padding, out_h, out_w = ctx.geometry
        grad = grad.to(weight.dtype).permute(2, 3, 0, 1).reshape(out_h * out_w, batch, -1)  # (L, N, out)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(patches.transpose(1, 2), grad)
        if ctx.needs_input_grad[0]:
            grad_patches = torch.bmm(grad, weight.transpose(1, 2)).view(out_h, out_w, batch, k, k, channels)
            grad_patches = grad_patches.permute(3, 4, 0, 1, 2, 5).contiguous()  # (k, k, out_h, out_w, N, C)
            padded = torch.zeros(height + 2 * padding, width + 2 * padding, batch, channels, dtype=grad.dtype,
                                 device=grad.device)
            for row in range(k):
                for column in range(k):
                    padded[row:row + stride * out_h:stride, column:column + stride * out_w:stride] += \
                        grad_patches[row, column]
            grad_x = padded[padding:padding + height, padding:padding + width].permute(2, 3, 0, 1).contiguous()
        return grad_x, grad_weight, None, None, None, None, None


class LocallyConnected2d(nn.Module):
    """A convolution without weight sharing ("untied" weights; Keras's LocallyConnected2D, DeepFace's L4-L6):
    every output position has its own ``out_channels x in_channels x k x k`` kernel and its own bias, so the
    layer learns position-specific filters where a convolution learns one filter per channel. It needs the
    input's size at construction (the number of kernels is the number of output positions).

    weight: (positions, k * k * in_channels, out_channels), Keras's layout (positions = out_h * out_w in
    row-major order; kernel rows, columns, then input channels); bias: (out_channels, out_h, out_w). As many
    multiply-adds as the convolution of the same shape, positions x the weights. Under CPU/CUDA autocast it
    computes in the autocast dtype.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, input_size, stride: int = 1,
                 padding: int = 0, bias: bool = True):
        super().__init__()
        height, width = _pair(input_size)
        out_h = (height + 2 * padding - kernel_size) // stride + 1
        out_w = (width + 2 * padding - kernel_size) // stride + 1
        if out_h < 1 or out_w < 1:
            raise ShapeError(f"LocallyConnected2d: a {kernel_size}x{kernel_size} kernel with padding {padding} does "
                             f"not fit a {height}x{width} input; give a larger input_size or more padding.")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.input_size, self.output_size = (height, width), (out_h, out_w)
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_h * out_w, kernel_size ** 2 * in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels, out_h, out_w)) if bias else None
        # A conv's default scale (Kaiming uniform with a = sqrt(5): bound 1/sqrt(fan_in)) at every position.
        bound = 1 / (in_channels * kernel_size ** 2) ** 0.5
        nn.init.uniform_(self.weight, -bound, bound)

    def kernels(self) -> torch.Tensor:
        """The weights as one conv kernel per position: (out_h, out_w, out_channels, in_channels, k, k)."""
        k = self.kernel_size
        return self.weight.view(*self.output_size, k, k, self.in_channels, self.out_channels).permute(0, 1, 5, 4, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ShapeError(f"LocallyConnected2d was built for (N, {self.in_channels}, {self.input_size[0]}, "
                             f"{self.input_size[1]}) inputs (one kernel per output position), got "
                             f"{tuple(x.shape)}; build it with the input size it will read.")
        # Autocast does not reach inside a custom autograd function: cast here (meta tensors have no autocast).
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
        out = _LocallyConnected.apply(x.to(dtype), self.weight.to(dtype), self.kernel_size, self.stride,
                                      self.padding, *self.output_size)
        return out if self.bias is None else out + self.bias.to(out.dtype)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"input_size={self.input_size}, stride={self.stride}, padding={self.padding}, "
                f"bias={self.bias is not None}")
