"""CIFAR ResNet-20/32/44/56/110 after akamaster/pytorch_resnet_cifar10, resnet.py at commit
d5489e8995e81e91ce6b1d69dcc98ad579b0b153 (the file behind the widespread resnetNN-*.th checkpoints).

Its conventions, which an importer must reproduce: option-A shortcuts take every second pixel and pad
``planes // 4`` zero channels on EACH side (F.pad(..., (0, 0, 0, 0, planes//4, planes//4))), so the old
channels sit in the middle; 3x3 convolutions without bias; ReLU after the addition; average pooling over the
whole (square) final map with a kernel of its width; the classifier is called ``linear``; the trainer wraps the
model in nn.DataParallel, so saved keys start with ``module.``, inside ``{"state_dict": ..., "best_prec1": ...}``.
"""

import torch.nn.functional as F
from torch import nn


class ChannelPadShortcut(nn.Module):
    def __init__(self, planes: int):
        super().__init__()
        self.planes = planes

    def forward(self, x):
        side = self.planes // 4
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, side, side), "constant", 0)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = ChannelPadShortcut(planes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, blocks_per_stage, 1)
        self.layer2 = self._stage(32, blocks_per_stage, 2)
        self.layer3 = self._stage(64, blocks_per_stage, 2)
        self.linear = nn.Linear(64, num_classes)

    def _stage(self, planes, count, stride):
        blocks = []
        for block_stride in [stride] + [1] * (count - 1):
            blocks.append(BasicBlock(self.in_planes, planes, block_stride))
            self.in_planes = planes
        return nn.Sequential(*blocks)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


def resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    return CifarResNet((depth - 2) // 6, num_classes)
