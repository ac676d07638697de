"""Xception: Chollet, "Xception: deep learning with depthwise separable convolutions", CVPR 2017, Fig. 5.

    flow    block                                                     output (299 input)
    entry   conv 3x3/2 32, conv 3x3 64 (unpadded)                      147x147x64
            [sep 128, sep 128, max-pool 3x3/2] + conv 1x1/2 shortcut   74x74x128
            [sep 256, sep 256, max-pool 3x3/2] + conv 1x1/2 shortcut   37x37x256
            [sep 728, sep 728, max-pool 3x3/2] + conv 1x1/2 shortcut   19x19x728
    middle  8 x [sep 728, sep 728, sep 728] + identity                 19x19x728
    exit    [sep 728, sep 1024, max-pool 3x3/2] + conv 1x1/2 shortcut  10x10x1024
            sep 1536, sep 2048                                         10x10x2048
            global average pool, (optional fc layers), logistic regression

"sep" is a 3x3 depthwise-separable convolution followed by batch norm; ReLU comes before each separable
convolution inside the residual blocks (the first one of the entry flow's first block reads the stem's ReLU
output directly). No bias anywhere except the classifier: 22,855,952 parameters at 1000 classes, exactly the
count of the paper's Table 3 (Keras reports 22.9 M because it adds batch norm's running statistics).
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import SeparableConv2d, require_min_input_size
from .registry import register_model
from .stages import CLASSIFIER, PooledClassifier, Stage, own_children

XCEPTION_MIN_INPUT = 29  # the two unpadded stem convolutions and four stride-2 stages


class SeparableBN(nn.Sequential):
    """(ReLU) -> depthwise-separable 3x3 convolution -> batch norm, the unit every Xception block repeats."""

    def __init__(self, in_channels: int, out_channels: int, relu_first: bool = True):
        super().__init__()
        if relu_first:
            self.add_module("relu", nn.ReLU(inplace=False))  # not in place: the input is also the shortcut
        self.add_module("sep", SeparableConv2d(in_channels, out_channels, 3))
        self.add_module("bn", nn.BatchNorm2d(out_channels))


class XceptionBlock(nn.Module):
    """A residual block of separable convolutions; strided blocks end with a 3x3/2 max-pool and project the
    shortcut with a strided 1x1 convolution + batch norm, the others add the input unchanged."""

    def __init__(self, in_channels: int, channels: list[int], stride: int = 1, relu_first: bool = True):
        super().__init__()
        layers = []
        previous = in_channels
        for index, width in enumerate(channels):
            layers.append(SeparableBN(previous, width, relu_first=relu_first or index > 0))
            previous = width
        if stride > 1:
            layers.append(nn.MaxPool2d(3, stride, padding=1))
        self.body = nn.Sequential(*layers)
        if stride > 1 or in_channels != previous:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, previous, 1, stride, bias=False),
                                          nn.BatchNorm2d(previous))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Xception(nn.Module):
    def __init__(self, num_classes: int = 1000, in_channels: int = 3, middle_repeats: int = 8,
                 drop_rate: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        )
        self.entry_flow = nn.Sequential(
            XceptionBlock(64, [128, 128], stride=2, relu_first=False),
            XceptionBlock(128, [256, 256], stride=2),
            XceptionBlock(256, [728, 728], stride=2),
        )
        self.middle_flow = nn.Sequential(*[XceptionBlock(728, [728, 728, 728]) for _ in range(middle_repeats)])
        self.exit_flow = nn.Sequential(
            XceptionBlock(728, [728, 1024], stride=2),
            SeparableConv2d(1024, 1536, 3), nn.BatchNorm2d(1536), nn.ReLU(inplace=True),
            SeparableConv2d(1536, 2048, 3), nn.BatchNorm2d(2048), nn.ReLU(inplace=True),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_min_input_size(x, XCEPTION_MIN_INPUT, "xception")
        x = self.exit_flow(self.middle_flow(self.entry_flow(self.stem(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-map output before pooling: the base model of the notes' transfer-learning recipe."""
        return self.exit_flow(self.middle_flow(self.entry_flow(self.stem(x))))

    def feature_stages(self) -> list[Stage]:
        classifier = Stage(CLASSIFIER, ("fc.",), PooledClassifier(self.avgpool, self.dropout, self.fc))
        return own_children(self, "stem", "entry_flow", "middle_flow", "exit_flow") + [classifier]


@register_model(input_size=(3, 299, 299), num_classes=1000, family="xception", paper="Chollet 2017",
                min_input_size=XCEPTION_MIN_INPUT, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
def xception(num_classes: int = 1000, in_channels: int = 3, middle_repeats: int = 8,
             drop_rate: float = 0.0) -> Xception:
    """Xception with the 8-fold middle flow of the paper."""
    return Xception(num_classes, in_channels, middle_repeats, drop_rate)
