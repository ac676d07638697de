"""LeNet-5: LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to document recognition",
Proc. IEEE 1998, section II.B and Fig. 2.

    layer  type                     maps  size   kernel  parameters
    In     input                    1     32x32  -       -         (MNIST's 28x28 digits padded by 2)
    C1     convolution              6     28x28  5x5     156
    S2     trainable subsampling    6     14x14  2x2/2   12
    C3     partial convolution      16    10x10  5x5     1,516     (Table I: 60 of the 96 map pairs)
    S4     trainable subsampling    16    5x5    2x2/2   32
    C5     convolution              120   1x1    5x5     48,120
    F6     fully connected          84    -      -       10,164
    Out    Euclidean RBF            10    -      -       (840 fixed +-1 centres)

Every layer is followed by the scaled tanh 1.7159 tanh(2a/3). ``output="linear"`` swaps the RBF layer for a
linear layer read by softmax cross-entropy. ``lenet5_relu`` is the modern variant: ReLU, max-pooling, full C3.
"""

from __future__ import annotations

from torch import nn

from ..layers import (
    LENET_C3_TABLE,
    PartialConv2d,
    RBFOutput,
    ScaledTanh,
    TrainableSubsampling,
    lecun_uniform_,
)
from .registry import register_model
from .stages import Stage, features_then_classifier


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, output: str = "rbf"):
        super().__init__()
        if output not in ("rbf", "linear"):
            raise ValueError(f"output must be 'rbf' or 'linear', not {output!r}")
        self.features = nn.Sequential()
        self.features.add_module("c1", nn.Conv2d(in_channels, 6, 5))
        self.features.add_module("c1_act", ScaledTanh())
        self.features.add_module("s2", TrainableSubsampling(6))
        self.features.add_module("s2_act", ScaledTanh())
        self.features.add_module("c3", PartialConv2d(6, LENET_C3_TABLE, 5))
        self.features.add_module("c3_act", ScaledTanh())
        self.features.add_module("s4", TrainableSubsampling(16))
        self.features.add_module("s4_act", ScaledTanh())
        self.features.add_module("c5", nn.Conv2d(16, 120, 5))
        self.features.add_module("c5_act", ScaledTanh())
        self.classifier = nn.Sequential()
        self.classifier.add_module("flatten", nn.Flatten())
        self.classifier.add_module("f6", nn.Linear(120, 84))
        self.classifier.add_module("f6_act", ScaledTanh())
        self.classifier.add_module("output",
                                   RBFOutput(84, num_classes) if output == "rbf" else nn.Linear(84, num_classes))
        lecun_uniform_(self)

    def forward(self, x):
        return self.classifier(self.features(x))

    def feature_stages(self) -> list[Stage]:
        return features_then_classifier(self)  # C1-S2, C3-S4, C5; the classifier flattens itself


class LeNet5ReLU(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(16, 120, 5), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), nn.ReLU(inplace=True),
                                        nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))

    def feature_stages(self) -> list[Stage]:
        return features_then_classifier(self)  # C1-S2, C3-S4, C5; the classifier flattens itself


@register_model(input_size=(1, 32, 32), num_classes=10, family="lenet", paper="LeCun et al. 1998", min_input_size=32)
def lenet5(num_classes: int = 10, in_channels: int = 1, output: str = "rbf") -> LeNet5:
    """The 1998 LeNet-5: scaled tanh, trainable subsampling, partial C3, RBF output."""
    return LeNet5(num_classes, in_channels, output)


@register_model(input_size=(1, 32, 32), num_classes=10, family="lenet", paper="LeCun et al. 1998 (modernised)",
                min_input_size=32)
def lenet5_relu(num_classes: int = 10, in_channels: int = 1) -> LeNet5ReLU:
    """LeNet-5 with ReLU, max-pooling, a full C3 and a linear softmax output."""
    return LeNet5ReLU(num_classes, in_channels)
