"""VGG: Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition",
ICLR 2015, Table 1 (configurations) and Table 2 (parameters); the notes' table (seeds 003).

    stage  A (vgg11)  A-LRN       B (vgg13)  C (vgg16_c)        D (vgg16)  E (vgg19)
    1      3-64       3-64, LRN   3-64 x2    3-64 x2            3-64 x2    3-64 x2
    2      3-128      3-128       3-128 x2   3-128 x2           3-128 x2   3-128 x2
    3      3-256 x2   3-256 x2    3-256 x2   3-256 x2, 1-256    3-256 x3   3-256 x4
    4      3-512 x2   3-512 x2    3-512 x2   3-512 x2, 1-512    3-512 x3   3-512 x4
    5      3-512 x2   3-512 x2    3-512 x2   3-512 x2, 1-512    3-512 x3   3-512 x4
    (each stage ends with a 2x2/2 max-pool; "3-64" is a 3x3 convolution with 64 maps, stride 1, padding 1)
    head   FC-4096, dropout 0.5, FC-4096, dropout 0.5, FC-num_classes
    params (1000 classes, M)  133  133  133  134  138  144    (Table 2)

An adaptive average pool to 7x7 sits before the head, as in torchvision: an identity at 224x224, and it lets
32x32 CIFAR images through (the 1x1 map is repeated to 7x7) without changing the parameter count.
``batch_norm=True`` (the ``_bn`` models) adds batch norm after every convolution, which the paper predates.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import LocalResponseNorm, require_min_input_size
from .registry import register_model
from .stages import Stage, features_then_classifier

# Each entry: 3 / 1 = a 3x3 / 1x1 convolution with that many maps, "M" = max-pool, "LRN" = local response norm.
VGG_CONFIGS: dict[str, list] = {
    "A": [(3, 64), "M", (3, 128), "M", (3, 256), (3, 256), "M", (3, 512), (3, 512), "M", (3, 512), (3, 512), "M"],
    "A-LRN": [(3, 64), "LRN", "M", (3, 128), "M", (3, 256), (3, 256), "M", (3, 512), (3, 512), "M",
              (3, 512), (3, 512), "M"],
    "B": [(3, 64), (3, 64), "M", (3, 128), (3, 128), "M", (3, 256), (3, 256), "M", (3, 512), (3, 512), "M",
          (3, 512), (3, 512), "M"],
    "C": [(3, 64), (3, 64), "M", (3, 128), (3, 128), "M", (3, 256), (3, 256), (1, 256), "M",
          (3, 512), (3, 512), (1, 512), "M", (3, 512), (3, 512), (1, 512), "M"],
    "D": [(3, 64), (3, 64), "M", (3, 128), (3, 128), "M", (3, 256), (3, 256), (3, 256), "M",
          (3, 512), (3, 512), (3, 512), "M", (3, 512), (3, 512), (3, 512), "M"],
    "E": [(3, 64), (3, 64), "M", (3, 128), (3, 128), "M", (3, 256), (3, 256), (3, 256), (3, 256), "M",
          (3, 512), (3, 512), (3, 512), (3, 512), "M", (3, 512), (3, 512), (3, 512), (3, 512), "M"],
}

VGG_MIN_INPUT = 32  # five 2x2/2 max-pools


class VGG(nn.Module):
    def __init__(self, config: str, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
                 drop_rate: float = 0.5):
        super().__init__()
        self.config = config
        self.features = _make_features(VGG_CONFIGS[config], in_channels, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)  # §3.1: N(0, 1e-2) weights, zero biases
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_min_input_size(x, VGG_MIN_INPUT, f"vgg (configuration {self.config})")
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def feature_stages(self) -> list[Stage]:
        return features_then_classifier(self, self.avgpool)  # a stage per block between max-pools


def _make_features(config: list, in_channels: int, batch_norm: bool) -> nn.Sequential:
    # Module indices follow torchvision's layout (conv, [bn], relu, ... "M") so its state dicts load as-is.
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(2, stride=2))
        elif item == "LRN":
            layers.append(LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))  # as AlexNet's (paper §2.1)
        else:
            kernel_size, maps = item
            layers.append(nn.Conv2d(channels, maps, kernel_size, padding=kernel_size // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(maps))
            layers.append(nn.ReLU(inplace=True))
            channels = maps
    return nn.Sequential(*layers)


def _vgg(config: str, num_classes: int, in_channels: int, batch_norm: bool, drop_rate: float = 0.5) -> VGG:
    return VGG(config, num_classes, in_channels, batch_norm, drop_rate)


_IMAGENET = {"input_size": (3, 224, 224), "num_classes": 1000, "family": "vgg", "min_input_size": VGG_MIN_INPUT,
             "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
_PAPER = "Simonyan & Zisserman 2015"


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration A")
def vgg11(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("A", num_classes, in_channels, False, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration A-LRN")
def vgg11_lrn(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("A-LRN", num_classes, in_channels, False, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration B")
def vgg13(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("B", num_classes, in_channels, False, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration C (1x1 convolutions)")
def vgg16_c(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("C", num_classes, in_channels, False, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration D")
def vgg16(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("D", num_classes, in_channels, False, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration E")
def vgg19(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("E", num_classes, in_channels, False, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration A + batch norm")
def vgg11_bn(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("A", num_classes, in_channels, True, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration B + batch norm")
def vgg13_bn(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("B", num_classes, in_channels, True, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration D + batch norm")
def vgg16_bn(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("D", num_classes, in_channels, True, drop_rate)


@register_model(**_IMAGENET, paper=f"{_PAPER}, configuration E + batch norm")
def vgg19_bn(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> VGG:
    return _vgg("E", num_classes, in_channels, True, drop_rate)
