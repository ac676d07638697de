"""AlexNet: Krizhevsky, Sutskever, Hinton, "ImageNet classification with deep convolutional neural networks",
NeurIPS 2012, §3 and Fig. 2; the notes' table (seeds 002).

    layer  type            maps  size (227 input)  kernel / stride  padding  notes
    C1     convolution     96    55x55             11x11 / 4        0        ReLU, LRN
    S2     max-pool        96    27x27             3x3 / 2          0        overlapping pooling (§3.4)
    C3     convolution     256   27x27             5x5 / 1          2        ReLU, LRN, two towers
    S4     max-pool        256   13x13             3x3 / 2          0
    C5     convolution     384   13x13             3x3 / 1          1        ReLU, reads both towers
    C6     convolution     384   13x13             3x3 / 1          1        ReLU, two towers
    C7     convolution     256   13x13             3x3 / 1          1        ReLU, two towers
    S8     max-pool        256   6x6               3x3 / 2          0
    F9     fully connected 4096                                              dropout 0.5, ReLU
    F10    fully connected 4096                                              dropout 0.5, ReLU
    Out    fully connected 1000                                              softmax

The paper split the network across two GPUs: C3, C6 and C7 only see the 48/192/192 maps of their own GPU,
which ``two_towers=True`` (the default) reproduces with grouped convolutions (60,965,224 parameters at 1000
classes, the paper's "60 million"). The paper's 224x224 crops only fit the 11x11/4 filter evenly as 227x227,
so that is the native input.

``alexnet_owt`` is the "one weird trick" single-tower variant (Krizhevsky 2014) torchvision ships:
64-192-384-256-256 maps, 11x11/4 with padding 2, no LRN, 61,100,840 parameters at 1000 classes.

Both end with an adaptive average pool to 6x6 before the classifier (an identity at the native size), so
inputs larger than the native one also work.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import ClassicDropout, LocalResponseNorm, require_min_input_size
from .registry import register_model
from .stages import Stage, features_then_classifier

# Smallest inputs for which the third max-pool still has a 3x3 window (see the table above):
# 227-style AlexNet: ((s - 11) / 4 + 1) must be >= 15; torchvision's padding 2 gains 4 pixels.
ALEXNET_MIN_INPUT = 67
ALEXNET_OWT_MIN_INPUT = 63


class _AlexNetLayout(nn.Module):
    """``features`` (convolutions and max-pools), a 6x6 average pool, ``classifier``: both AlexNets, under
    torchvision's module names."""

    min_input_size: int
    registered_name: str

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_min_input_size(x, self.min_input_size, self.registered_name)
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def feature_stages(self) -> list[Stage]:
        return features_then_classifier(self, self.avgpool)  # conv1..conv5 grouped at the max-pools


class AlexNet(_AlexNetLayout):
    min_input_size, registered_name = ALEXNET_MIN_INPUT, "alexnet"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, two_towers: bool = True,
                 drop_rate: float = 0.5, dropout: str = "classic", init: str = "paper"):
        super().__init__()
        if init not in ("paper", "he"):
            raise ValueError(f"init must be 'paper' (§5: N(0, 0.01), biases 1) or 'he' (He et al. 2015), not {init!r}")
        groups = 2 if two_towers else 1
        # §4.2: "At test time, we use all the neurons but multiply their outputs by 0.5" -- classic dropout.
        # "inverted" (nn.Dropout) gives the same expected activations with a no-op at test time.
        if dropout not in ("classic", "inverted"):
            raise ValueError(f"dropout must be 'classic' or 'inverted', not {dropout!r}")
        make_dropout = ClassicDropout if dropout == "classic" else nn.Dropout
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, 11, stride=4),
            nn.ReLU(inplace=True),
            LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),  # §3.3: after the ReLU of C1 and C3
            nn.MaxPool2d(3, stride=2),  # §3.4: overlapping pooling, s=2 < z=3
            nn.Conv2d(96, 256, 5, padding=2, groups=groups),
            nn.ReLU(inplace=True),
            LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 384, 3, padding=1),  # the one layer whose kernels read both GPUs' maps
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=groups),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            make_dropout(drop_rate),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            make_dropout(drop_rate),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        if init == "paper":
            self._init_weights()
        else:
            self._init_he()

    def _init_he(self) -> None:
        # He et al. 2015 §2.2 (Delving deep into rectifiers): a fixed N(0, 0.01) shrinks the signal layer by
        # layer, so deep ReLU nets stall; a variance of 2/fan_in keeps it. The paper's init trained for 90 epochs
        # on ImageNet; on a few epochs of small images it stays at chance (9.7 % on MNIST), He's reaches 95.9 %.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def _init_weights(self) -> None:
        # §5: weights from N(0, 0.01); biases 1 in C3, C6, C7 and the hidden FC layers (gives ReLUs positive
        # inputs early on), 0 elsewhere.
        ones = {4, 10, 12}
        for index, m in enumerate(self.features):
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if index in ones else 0.0)
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        for i, m in enumerate(linears):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.constant_(m.bias, 1.0 if i < len(linears) - 1 else 0.0)



class AlexNetOWT(_AlexNetLayout):
    """The single-tower AlexNet of "One weird trick for parallelizing CNNs" (Krizhevsky 2014), torchvision's
    layout (module indices match torchvision's ``features.N`` / ``classifier.N`` keys)."""

    min_input_size, registered_name = ALEXNET_OWT_MIN_INPUT, "alexnet_owt"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(64, 192, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(drop_rate),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )



@register_model(input_size=(3, 227, 227), num_classes=1000, family="alexnet", paper="Krizhevsky et al. 2012",
                min_input_size=ALEXNET_MIN_INPUT)
def alexnet(num_classes: int = 1000, in_channels: int = 3, two_towers: bool = True, drop_rate: float = 0.5,
            dropout: str = "classic", init: str = "paper") -> AlexNet:
    """The 2012 AlexNet: 96-256-384-384-256 maps, LRN, overlapping pooling, dropout 0.5, FC 4096-4096.
    ``init="he"`` replaces the paper's N(0, 0.01) weights by He et al.'s (what the default recipes use)."""
    return AlexNet(num_classes, in_channels, two_towers, drop_rate, dropout, init)


@register_model(input_size=(3, 224, 224), num_classes=1000, family="alexnet", paper="Krizhevsky 2014",
                min_input_size=ALEXNET_OWT_MIN_INPUT, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
def alexnet_owt(num_classes: int = 1000, in_channels: int = 3, drop_rate: float = 0.5) -> AlexNetOWT:
    """Single-tower AlexNet (64-192-384-256-256), the layout of torchvision's ``alexnet``."""
    return AlexNetOWT(num_classes, in_channels, drop_rate)
