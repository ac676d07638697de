"""GoogLeNet (Inception v1): Szegedy et al., "Going deeper with convolutions", CVPR 2015, Table 1 and §5.

    stage          kernel/stride  output     #1x1  #3x3 reduce  #3x3  #5x5 reduce  #5x5  pool proj
    conv           7x7/2          112x112x64
    max pool       3x3/2          56x56x64                                                  (then LRN)
    conv           1x1 + 3x3/1    56x56x192         64           192                        (then LRN)
    max pool       3x3/2          28x28x192
    inception 3a                  28x28x256  64    96           128   16           32    32
    inception 3b                  28x28x480  128   128          192   32           96    64
    max pool       3x3/2          14x14x480
    inception 4a                  14x14x512  192   96           208   16           48    64   -> auxiliary 1
    inception 4b                  14x14x512  160   112          224   24           64    64
    inception 4c                  14x14x512  128   128          256   24           64    64
    inception 4d                  14x14x528  112   144          288   32           64    64   -> auxiliary 2
    inception 4e                  14x14x832  256   160          320   32           128   128
    max pool       3x3/2          7x7x832
    inception 5a                  7x7x832    256   160          320   32           128   128
    inception 5b                  7x7x1024   384   192          384   48           128   128
    avg pool       7x7/1          1x1x1024
    dropout (40%), linear, softmax

22 layers with parameters (27 with pooling). The 5x5 branches are real 5x5 convolutions, as in the paper.
Each auxiliary classifier (§5): 5x5/3 average pool -> 1x1 conv 128 -> FC 1024 -> dropout 70% -> linear.

Training contract: in ``train()`` mode, ``forward`` returns ``GoogLeNetOutputs(logits, aux1, aux2)``, a
NamedTuple; the loss is ``CE(logits) + model.auxiliary_loss_weight * (CE(aux1) + CE(aux2))`` with
``auxiliary_loss_weight = 0.3`` (§5); ``model.training_loss(outputs, targets)`` computes exactly that. In
``eval()`` mode (or with ``aux_logits=False``) it returns the plain logits tensor: the auxiliary classifiers
are discarded at inference, as the paper says.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Inception, LocalResponseNorm, require_min_input_size
from .registry import register_model
from .stages import CLASSIFIER, PooledClassifier, Stage

# (in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj), Table 1.
INCEPTION_TABLE = {
    "3a": (192, 64, 96, 128, 16, 32, 32),
    "3b": (256, 128, 128, 192, 32, 96, 64),
    "4a": (480, 192, 96, 208, 16, 48, 64),
    "4b": (512, 160, 112, 224, 24, 64, 64),
    "4c": (512, 128, 128, 256, 24, 64, 64),
    "4d": (512, 112, 144, 288, 32, 64, 64),
    "4e": (528, 256, 160, 320, 32, 128, 128),
    "5a": (832, 256, 160, 320, 32, 128, 128),
    "5b": (832, 384, 192, 384, 48, 128, 128),
}

GOOGLENET_MIN_INPUT = 31  # below this the four stride-2 stages leave no 3x3 window for the last max-pool


class GoogLeNetOutputs(NamedTuple):
    """What GoogLeNet returns in training mode: the main logits and the two auxiliary classifiers' logits."""

    logits: torch.Tensor
    aux1: torch.Tensor
    aux2: torch.Tensor


class AuxiliaryClassifier(nn.Module):
    """The side classifier on inception 4a / 4d (§5), adding gradient signal to the middle of the network."""

    def __init__(self, in_channels: int, num_classes: int, batch_norm: bool = False):
        super().__init__()
        # The paper's 5x5/3 average pooling gives 4x4 on the native 14x14 maps; the adaptive pool after it is
        # then an identity, and brings other input sizes to the 4x4 the fully connected layer expects.
        self.pool = nn.AvgPool2d(5, stride=3)
        self.resize = nn.AdaptiveAvgPool2d((4, 4))
        self.conv = nn.Conv2d(in_channels, 128, 1, bias=not batch_norm)
        self.bn = nn.BatchNorm2d(128) if batch_norm else nn.Identity()
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 5:  # a per-batch shape check: maps smaller than the window skip it
            x = self.pool(x)
        x = F.relu(self.bn(self.conv(self.resize(x))), inplace=True)
        x = F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)
        return self.fc2(self.dropout(x))


class GoogLeNet(nn.Module):
    auxiliary_loss_weight = 0.3  # §5: "their loss is added to the total loss with a discount weight of 0.3"

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = True,
                 batch_norm: bool = False, drop_rate: float = 0.4):
        super().__init__()
        self.aux_logits = aux_logits

        def conv(cin, cout, k, stride=1):
            layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            return nn.Sequential(*layers, nn.ReLU(inplace=True))

        # With batch norm the LRN layers are redundant (Inception v2 removed them).
        lrn = nn.Identity if batch_norm else (lambda: LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
        self.stem = nn.Sequential(
            conv(in_channels, 64, 7, stride=2),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
            lrn(),
            conv(64, 64, 1),
            conv(64, 192, 3),
            lrn(),
            nn.MaxPool2d(3, stride=2, ceil_mode=True),
        )
        self.inception3a = Inception(*INCEPTION_TABLE["3a"], batch_norm=batch_norm)
        self.inception3b = Inception(*INCEPTION_TABLE["3b"], batch_norm=batch_norm)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(*INCEPTION_TABLE["4a"], batch_norm=batch_norm)
        self.inception4b = Inception(*INCEPTION_TABLE["4b"], batch_norm=batch_norm)
        self.inception4c = Inception(*INCEPTION_TABLE["4c"], batch_norm=batch_norm)
        self.inception4d = Inception(*INCEPTION_TABLE["4d"], batch_norm=batch_norm)
        self.inception4e = Inception(*INCEPTION_TABLE["4e"], batch_norm=batch_norm)
        self.maxpool4 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception5a = Inception(*INCEPTION_TABLE["5a"], batch_norm=batch_norm)
        self.inception5b = Inception(*INCEPTION_TABLE["5b"], batch_norm=batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # 7x7/1 average pool at the native size
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(1024, num_classes)
        if aux_logits:
            self.aux1 = AuxiliaryClassifier(512, num_classes, batch_norm)
            self.aux2 = AuxiliaryClassifier(528, num_classes, batch_norm)
        else:
            self.aux1 = self.aux2 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        require_min_input_size(x, GOOGLENET_MIN_INPUT, "googlenet")
        x = self.stem(x)
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        with_aux = self.training and self.aux_logits
        aux1 = self.aux1(x) if with_aux else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if with_aux else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if with_aux:
            return GoogLeNetOutputs(logits, aux1, aux2)
        return logits

    def training_loss(self, outputs, targets: torch.Tensor, criterion=F.cross_entropy) -> torch.Tensor:
        """The paper's training loss: main loss + 0.3 x each auxiliary loss (plain loss for a plain tensor)."""
        if isinstance(outputs, GoogLeNetOutputs):
            aux = criterion(outputs.aux1, targets) + criterion(outputs.aux2, targets)
            return criterion(outputs.logits, targets) + self.auxiliary_loss_weight * aux
        return criterion(outputs, targets)

    def feature_stages(self) -> list[Stage]:
        def chain(*names):
            return nn.Sequential(*(getattr(self, name) for name in names))

        # The auxiliary classifiers are heads too (used only in training), so they belong to the classifier stage.
        inception4 = [f"inception4{c}" for c in "abcde"]
        return [
            Stage("stem", ("stem.",), self.stem),
            Stage("inception3", ("inception3a.", "inception3b."), chain("inception3a", "inception3b", "maxpool3")),
            Stage("inception4", tuple(f"{name}." for name in inception4), chain(*inception4, "maxpool4")),
            Stage("inception5", ("inception5a.", "inception5b."), chain("inception5a", "inception5b")),
            Stage(CLASSIFIER, ("fc.", "aux1.", "aux2."), PooledClassifier(self.avgpool, self.dropout, self.fc)),
        ]


@register_model(input_size=(3, 224, 224), num_classes=1000, family="googlenet", paper="Szegedy et al. 2014",
                min_input_size=GOOGLENET_MIN_INPUT, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
def googlenet(num_classes: int = 1000, in_channels: int = 3, aux_logits: bool = True, batch_norm: bool = False,
              drop_rate: float = 0.4) -> GoogLeNet:
    """Inception v1 with the two auxiliary classifiers (used in training, dropped in eval mode)."""
    return GoogLeNet(num_classes, in_channels, aux_logits, batch_norm, drop_rate)
