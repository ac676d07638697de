"""Small networks designed for time-to-accuracy (the speed benchmarks, issue "fastest time-to-accuracy").

``mnist_fast_cnn``: LeNet's layout (two 5x5 convolutions, each followed by 2x2 max-pooling) with batch norm and
ReLU, 16 and 32 maps, and one linear layer on the 4x4x32 maps. About 1 M multiply-accumulates per image.
Pooling comes straight after each convolution, before batch norm and ReLU (as in airbench): the profile of a
Fashion-MNIST epoch showed batch norm, ReLU and pooling, memory-bound passes over full-size maps, taking more
time than the convolutions; after the pool they touch a quarter of the values. Batch norm lets the net take a
large learning rate, so two epochs reach 99 % on MNIST. ``norm="group"`` (or layer, instance, none; G =
``norm_groups``, 8 by default: 2 channels a group in the 16-map layer) puts another normalisation there.
``kernel_sizes=(5, 3)`` makes the second convolution 3x3 (unpadded, so 10x10 maps pooled to 5x5): the Fashion-MNIST
recipe's choice, where the 5x5 second layer was ~90 % of the arithmetic: at 32/96 maps the network costs 3.25 M
multiply-accumulates an image against 3.75 M with the 5x5 at 32/64, and reached 92.1 % in 6 epochs where that one
stopped at 92.0 % in 7.

    layer   type                              maps  size   parameters
    conv1   5x5 conv, 2x2 max-pool, BN, ReLU  16    12x12  400 + 32
    conv2   5x5 conv, 2x2 max-pool, BN, ReLU  32    4x4    12,800 + 64
    fc      linear                            10    -      5,130

``cifar_fast_cnn``: the layout of Keller Jordan's airbench94 (2024), the CIFAR-10 speed record network, written
here from its description: a frozen 2x2 "whitening" convolution whose filters are the eigenvectors of the
covariance of 2x2 training patches (scaled by the inverse square root of their eigenvalues, each used with
both signs), then three blocks of conv-pool-BN-GELU-conv-BN-GELU and a linear layer on the max-pooled maps,
its logits scaled by 1/9. BatchNorm scales stay 1 (only the shifts learn). About 118 M multiply-accumulates
per 32x32 image (widths 64/256/256).

    layer     type                                   maps   size    parameters
    whiten    2x2 conv (frozen, from the data)       24     31x31   288 + 24 bias
    block1    3x3 conv, 2x2 max-pool, BN, GELU,      64     15x15   13,824 + 36,864 + BN
              3x3 conv, BN, GELU
    block2    as block1                              256    7x7     147,456 + 589,824 + BN
    block3    as block1                              256    3x3     589,824 + 589,824 + BN
    pool      3x3 max-pool                           256    1x1     -
    fc        linear (no bias), x 1/9                10     -       2,560
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..layers import require_min_input_size
from ..layers.norm import check_norm, conv_bias, make_norm
from .registry import register_model


def _conv_pool_bn_relu(in_channels: int, out_channels: int, norm: str = "batch", norm_groups: int = 8,
                       kernel_size: int = 5) -> nn.Sequential:
    # No bias: the norm's shift does its job (norm='none' keeps it). The norm stays at index 2 whatever its
    # kind (Identity for none) so layer names do not move.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, bias=conv_bias(norm)), nn.MaxPool2d(2),
                         make_norm(norm, out_channels, norm_groups), nn.ReLU(inplace=True))


class FastMNISTNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (16, 32),
                 norm: str = "batch", norm_groups: int = 8, kernel_sizes: tuple[int, int] = (5, 5)):
        super().__init__()
        check_norm(norm)
        if len(widths) != 2 or len(kernel_sizes) != 2 or not all(k in (3, 5) for k in kernel_sizes):
            raise ConfigError(f"mnist_fast_cnn takes two widths and two kernel sizes, each 3 or 5; got "
                              f"widths={widths}, kernel_sizes={kernel_sizes}")
        self.features = nn.Sequential(
            _conv_pool_bn_relu(in_channels, widths[0], norm, norm_groups, kernel_sizes[0]),
            _conv_pool_bn_relu(widths[0], widths[1], norm, norm_groups, kernel_sizes[1]),
        )
        side = 28
        for k in kernel_sizes:  # an unpadded k x k convolution, then 2x2 pooling
            side = (side - k + 1) // 2
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(side * side * widths[1], num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(input_size=(1, 28, 28), num_classes=10, family="fast", paper="cnnkit (speed benchmark)",
                min_input_size=28)
def mnist_fast_cnn(num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (16, 32),
                   norm: str = "batch", norm_groups: int = 8, kernel_sizes: tuple[int, int] = (5, 5)) -> FastMNISTNet:
    """Two conv-BN-ReLU-pool blocks and a linear layer: 99 % on MNIST in two epochs."""
    return FastMNISTNet(num_classes, in_channels, tuple(widths), norm, norm_groups, tuple(kernel_sizes))


class _ConvGroup(nn.Sequential):
    """conv - max-pool - BN - GELU - conv - BN - GELU: pooling right after the first convolution halves the
    cost of everything after it, the trick that makes airbench's blocks cheap."""

    def __init__(self, in_channels: int, out_channels: int):
        def norm():
            bn = nn.BatchNorm2d(out_channels, momentum=0.4, eps=1e-12)
            bn.weight.requires_grad_(False)  # scale fixed at 1: the following conv rescales anyway
            return bn

        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.MaxPool2d(2), norm(),
                         nn.GELU(), nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), norm(), nn.GELU())


class FastCIFARNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, widths: tuple[int, int, int] = (64, 256, 256),
                 logit_scale: float = 1 / 9):
        super().__init__()
        whiten_channels = 2 * in_channels * 2 * 2
        self.whiten = nn.Conv2d(in_channels, whiten_channels, 2, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.blocks = nn.Sequential(_ConvGroup(whiten_channels, widths[0]), _ConvGroup(widths[0], widths[1]),
                                    _ConvGroup(widths[1], widths[2]))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes, bias=False)
        self.logit_scale = logit_scale
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module is not self.whiten:
                # Dirac (identity) initialisation of the first in_channels filters, as airbench does: the
                # block starts close to passing its input through, which trains faster in a few epochs.
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.dirac_(module.weight[:module.in_channels])

    @torch.no_grad()
    def initialize_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from (normalised) training images: eigenvectors V and eigenvalues L of
        the covariance of all 2x2 patches give filters V / sqrt(L + eps), used once positive, once negated,
        so that GELU keeps both signs. The Trainer calls this once before the first epoch."""
        c, k = images.shape[1], self.whiten.kernel_size[0]
        # (N, C, H', W', kh, kw) -> one row per patch, ordered (c, kh, kw) like the conv's weight.
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        patches = patches - patches.mean(0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).view(-1, c, k, k).flip(0)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight.dtype))
        self.whiten.bias.zero_()

    def forward(self, x):
        require_min_input_size(x, 9, "cifar_fast_cnn")  # 2x2 stem, then three 2x2 pools need 8 pixels
        x = self.blocks(nn.functional.gelu(self.whiten(x)))
        return self.fc(self.pool(x).flatten(1)) * self.logit_scale


@register_model(input_size=(3, 32, 32), num_classes=10, family="fast", paper="airbench94 layout (Jordan 2024)",
                min_input_size=9)
def cifar_fast_cnn(num_classes: int = 10, in_channels: int = 3,
                   widths: tuple[int, int, int] = (64, 256, 256)) -> FastCIFARNet:
    """airbench94's network for CIFAR-10: data-whitened 2x2 stem, three pooled conv blocks, 118 M MACs."""
    return FastCIFARNet(num_classes, in_channels, tuple(widths))
