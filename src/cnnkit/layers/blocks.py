"""General blocks: conv-BN-activation, maxout, the two dropouts, LRN in the paper's constants, and the
global-average-pooling head."""

from __future__ import annotations

import torch
from torch import nn

from .norm import DEFAULT_GROUPS, conv_bias, make_norm, resolve_norm


class ConvBNAct(nn.Sequential):
    """Convolution -> batch norm -> activation, the unit of every post-2015 CNN.

    The convolution has no bias: batch norm's shift would cancel it. ``padding=None`` means "same" for odd
    kernels at stride 1 (k // 2). ``activation=None`` leaves the activation out (e.g. before a residual sum).
    ``norm`` picks another normalisation (group, layer, instance, none: see :mod:`cnnkit.layers.norm`;
    ``norm_groups`` is group norm's G); the layer keeps the name ``bn`` whatever it is, so layer names stay
    the same across norms. ``batch_norm=False`` is the older spelling of ``norm='none'``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int | None = None, groups: int = 1, activation: type[nn.Module] | None = nn.ReLU,
                 batch_norm: bool = True, norm: str = "batch", norm_groups: int = DEFAULT_GROUPS):
        super().__init__()
        norm = resolve_norm(norm, batch_norm)
        padding = kernel_size // 2 if padding is None else padding
        self.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                          groups=groups, bias=conv_bias(norm)))
        if norm != "none":
            self.add_module("bn", make_norm(norm, out_channels, norm_groups))
        if activation is not None:
            self.add_module("act", activation(inplace=True) if _takes_inplace(activation) else activation())


# Leaky ReLU's slope is Maas et al. 2013's 0.01 and ELU's alpha Clevert et al. 2016's 1.0 (torch's defaults).
ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def make_activation(name: str) -> nn.Module:
    """The non-linearity called ``name`` (relu, leaky_relu, elu, sigmoid, tanh), in place where torch allows it.
    Networks that take ``activation=`` build it here, so ReLU can be compared with what it replaced (the
    saturating sigmoid and tanh) and with the fixes for its dead units (Leaky ReLU, ELU)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, not {name!r}")
    kind = ACTIVATIONS[name]
    return kind(inplace=True) if _takes_inplace(kind) else kind()


def _takes_inplace(activation) -> bool:
    return activation in (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Hardswish)


class Maxout(nn.Module):
    """Maxout units (Goodfellow et al. 2013): max(w_1 x + b_1, ..., w_k x + b_k), k = ``pieces``.

    One linear layer computes all k affine maps at once; the max runs over a reshaped axis, so the unit
    learns a piecewise-linear convex activation (ReLU and leaky ReLU are special cases with k = 2)."""

    def __init__(self, in_features: int, out_features: int, pieces: int = 2):
        super().__init__()
        self.out_features, self.pieces = out_features, pieces
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(*x.shape[:-1], self.out_features, self.pieces).amax(-1)


class _DropoutProbability(nn.Module):
    """What both dropouts share: the drop probability ``p``, checked once."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ClassicDropout(_DropoutProbability):
    """Dropout as in Srivastava/Hinton et al. 2014 and the notes: during training each unit is dropped with
    probability ``p`` and the survivors are *not* rescaled; at test time every unit is kept and the output is
    multiplied by the keep probability 1 - p, so its expected value matches training.

    Compare :class:`InvertedDropout` (what ``nn.Dropout`` does): it scales by 1/(1 - p) while training so
    inference is a no-op. Both give the same expected activations."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            keep = torch.rand_like(x) >= self.p
            return x * keep
        return x * (1.0 - self.p)


class InvertedDropout(_DropoutProbability):
    """Dropout that rescales survivors by 1/(1 - p) during training and does nothing at test time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand_like(x) >= self.p
        return x * keep / (1.0 - self.p)


class LocalResponseNorm(nn.LocalResponseNorm):
    """Local response normalisation in the AlexNet paper's own convention (Krizhevsky et al. 2012, §3.3):

        b_i = a_i / (k + alpha * sum_{j in the n maps around i} a_j^2) ^ beta,   k=2, n=5, alpha=1e-4, beta=0.75

    torch's ``nn.LocalResponseNorm`` divides alpha by n; this subclass multiplies it back so the constants
    read as in the paper."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0):
        super().__init__(size, alpha * size, beta, k)
        self.paper_alpha = alpha


class GlobalAvgPoolHead(nn.Module):
    """Global average pooling -> (dropout) -> linear: the classifier of NIN, GoogLeNet, ResNet and Xception.

    Averaging each map to one number makes the head independent of the input size and has no parameters,
    where a flatten + fully connected layer would need one weight per pixel."""

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.0):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.pool(x))))
