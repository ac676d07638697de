"""Small networks designed for time-to-accuracy on a CPU (the speed benchmarks, issue "fastest
time-to-accuracy"), not taken from a paper.

``mnist_fast_cnn``: LeNet's layout (two 5x5 convolutions, each followed by 2x2 max-pooling) with batch norm and
ReLU, 16 and 32 maps, and one linear layer on the 4x4x32 maps. About 1 M multiply-accumulates per image: small
enough that an epoch of MNIST takes ~4 s on two cores, and batch norm lets it take a large learning rate, so two
epochs reach 99 %.

    layer   type                       maps  size   parameters
    conv1   5x5 conv + BN + ReLU       16    24x24  432
    pool1   2x2 max-pool               16    12x12  -
    conv2   5x5 conv + BN + ReLU       32    8x8    12,864
    pool2   2x2 max-pool               32    4x4    -
    fc      linear                     10    -      5,130
"""

from __future__ import annotations

import torch.nn as nn

from .registry import register_model


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # No bias: batch norm's shift does its job.
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 5, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))


class FastMNISTNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (16, 32)):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, widths[0]), nn.MaxPool2d(2),
            _conv_bn_relu(widths[0], widths[1]), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * widths[1], num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model(input_size=(1, 28, 28), num_classes=10, family="fast", paper="cnnkit (speed benchmark)",
                min_input_size=28)
def mnist_fast_cnn(num_classes: int = 10, in_channels: int = 1, widths: tuple[int, int] = (16, 32)) -> FastMNISTNet:
    """Two conv-BN-ReLU-pool blocks and a linear layer: 99 % on MNIST in two epochs."""
    return FastMNISTNet(num_classes, in_channels, tuple(widths))
