"""ResNet: He, Zhang, Ren, Sun, "Deep residual learning for image recognition", CVPR 2016.

ImageNet networks, Table 1 (224x224 input):

    stage    output   18-layer      34-layer      50-layer          101-layer         152-layer
    conv1    112x112  7x7, 64, stride 2
             56x56    3x3 max pool, stride 2
    conv2_x  56x56    [3x3 64]x2 x2  [3x3 64]x2 x3  [1x1 64, 3x3 64, 1x1 256] x3   x3   x3
    conv3_x  28x28    [3x3 128]x2 x2 [3x3 128]x2 x4 [1x1 128, 3x3 128, 1x1 512] x4  x4   x8
    conv4_x  14x14    [3x3 256]x2 x2 [3x3 256]x2 x6 [1x1 256, 3x3 256, 1x1 1024] x6 x23  x36
    conv5_x  7x7      [3x3 512]x2 x2 [3x3 512]x2 x3 [1x1 512, 3x3 512, 1x1 2048] x3 x3   x3
             1x1      average pool, 1000-d fc, softmax
    multiply-adds     1.8 G         3.6 G         3.8 G             7.6 G             11.3 G

Shortcuts use option B (projection only where the shape changes). Where a bottleneck downsamples, two
placements of the stride exist, and the user chooses by name or argument:

    resnet50/101/152          ``stride_on="3x3"``: torchvision's "ResNet v1.5" (its weights load directly),
                              ~0.5 % more accurate, 4.09/7.80/11.51 G multiply-adds
    resnet50_v1/101_v1/152_v1 ``stride_on="1x1"``: the paper's "v1" (stride on the first 1x1 convolution),
                              3.86/7.57/11.28 G multiply-adds -- Table 1's 3.8/7.6/11.3 G

Both have the same parameters; v1.5 costs more because its 3x3 convolution runs at the higher resolution.
``residual=False`` gives the plain counterparts (``plain18``, ``plain34``; Table 2).

CIFAR-10 networks, §4.2: a 3x3 convolution with 16 maps, then three stages of n basic blocks on 32x32, 16x16
and 8x8 maps with 16, 32 and 64 filters, global average pooling and a 10-way fc: 6n + 2 layers
(n = 3, 5, 7, 9, 18, 200 -> ResNet-20/32/44/56/110/1202, 0.27 M ... 19.4 M parameters). Shortcuts use option A
(identity with zero padding, no extra parameters). ``plain20/32/44/56/110`` drop the shortcuts (Fig. 6).
Every CIFAR network also takes ``activation="sigmoid"`` (or ``"tanh"``) and ``batch_norm=False``,
which are not the paper's: with them ``plain20`` is the deep sigmoid net whose gradients vanish (notes deck 003;
benchmarks/gradient_depth.py puts the four side by side).
Every network takes ``norm="group"`` (or ``"layer"``, ``"instance"``, ``"none"``; default ``"batch"``, the
paper's, so existing weights load) to put another normalisation wherever batch norm was, and ``norm_groups``,
group norm's G: 32 for the ImageNet networks (Wu & He 2018's default, 2 channels a group in ResNet-50's
narrowest layers), 8 for the CIFAR ones, whose 16-channel layers 32 groups do not divide (8 keeps the same
2 channels a group there). ``batch_norm=False`` is the older spelling of ``norm="none"``.
benchmarks/norm_batch_size.py compares batch and group norm at batches of 2, 4 and 32.
``shortcut_padding`` says where option A's zero channels go: ``"after"`` the existing ones (cnnkit's layout,
the default) or half on ``"both"`` sides (the layout of the widespread akamaster ``resnetNN-*.th`` checkpoints,
which ``cnnkit import`` and ``load_pretrained`` select for them); it is recorded in checkpoint.json.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers import BasicBlock, Bottleneck, GlobalAvgPoolHead
from ..layers import make_activation
from ..layers.norm import DEFAULT_GROUPS, conv_bias, make_norm, resolve_norm
from .registry import register_model
from .stages import CLASSIFIER, PooledClassifier, Stage

IMAGENET_LAYERS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
IMAGENET_WIDTHS = (64, 128, 256, 512)
CIFAR_WIDTHS = (16, 32, 64)
CIFAR_NORM_GROUPS = 8  # group norm's G for the CIFAR networks: 2 channels a group in the 16-channel stage


class ResNet(nn.Module):
    """The ImageNet ResNet. Attribute names follow torchvision (conv1, bn1, layer1..4, fc) so its state dicts
    load directly; the shortcut is called ``shortcut`` here and ``downsample`` there (see cnnkit.weights)."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers, num_classes: int = 1000,
                 in_channels: int = 3, shortcut: str = "B", residual: bool = True, stride_on: str = "3x3",
                 zero_init_residual: bool = False, norm: str = "batch", norm_groups: int = DEFAULT_GROUPS):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=conv_bias(norm))
        self.bn1 = make_norm(norm, 64, norm_groups)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block_kwargs = {"shortcut": shortcut, "residual": residual, "norm": norm, "norm_groups": norm_groups}
        if block is Bottleneck:
            block_kwargs["stride_on"] = stride_on
        channels = 64
        stages = []
        for index, (width, count) in enumerate(zip(IMAGENET_WIDTHS, layers)):
            stride = 1 if index == 0 else 2
            stage, channels = _make_stage(block, channels, width, count, stride, block_kwargs)
            stages.append(stage)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        _init_resnet(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def feature_stages(self) -> list[Stage]:
        classifier = Stage(CLASSIFIER, ("fc.",), PooledClassifier(self.avgpool, self.fc))
        return _residual_stages(self, [self.conv1, self.bn1, self.relu, self.maxpool], classifier)


class CifarResNet(nn.Module):
    """The 6n+2-layer CIFAR ResNet of §4.2 (no max-pool, three stages, option-A shortcuts by default).
    ``activation`` and ``norm`` (or ``batch_norm``) change every block and the stem alike (see BasicBlock).
    ``zero_init_residual`` starts each block's last norm at scale 0, so each block begins as its shortcut (Goyal et
    al. 2017 for batch norm; Wu & He 2018, §4.1, for group norm); the paper's nets start at 1."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
                 residual: bool = True, shortcut_padding: str = "after", activation: str = "relu",
                 batch_norm: bool = True, norm: str = "batch", norm_groups: int = CIFAR_NORM_GROUPS,
                 zero_init_residual: bool = False):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has 6n+2 layers (8, 14, 20, 32, 44, 56, 110, 1202), not {depth}")
        norm = resolve_norm(norm, batch_norm)
        blocks_per_stage = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, CIFAR_WIDTHS[0], 3, padding=1, bias=conv_bias(norm))
        self.bn1 = make_norm(norm, CIFAR_WIDTHS[0], norm_groups)
        self.relu = make_activation(activation)
        channels = CIFAR_WIDTHS[0]
        stages = []
        for index, width in enumerate(CIFAR_WIDTHS):
            stride = 1 if index == 0 else 2
            stage, channels = _make_stage(BasicBlock, channels, width, blocks_per_stage, stride,
                                          {"shortcut": shortcut, "residual": residual,
                                           "shortcut_padding": shortcut_padding, "activation": activation,
                                           "norm": norm, "norm_groups": norm_groups})
            stages.append(stage)
        self.layer1, self.layer2, self.layer3 = stages
        self.head = GlobalAvgPoolHead(channels, num_classes)
        _init_resnet(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.head(self.layer3(self.layer2(self.layer1(x))))

    def feature_stages(self) -> list[Stage]:
        return _residual_stages(self, [self.conv1, self.bn1, self.relu], Stage(CLASSIFIER, ("head.",), self.head))


def _residual_stages(model: nn.Module, stem: list[nn.Module], classifier: Stage) -> list[Stage]:
    """The stem, the paper's stages of residual blocks (conv2_x.. as layer1..), then the classifier."""
    layers = [name for name, _ in model.named_children() if name.startswith("layer")]
    return ([Stage("stem", ("conv1.", "bn1."), nn.Sequential(*stem))]
            + [Stage(name, (f"{name}.",), getattr(model, name)) for name in layers] + [classifier])


def _make_stage(block, in_channels: int, width: int, count: int, stride: int, block_kwargs: dict):
    # Only the first block of a stage changes resolution and width; the rest keep them.
    blocks = [block(in_channels, width, stride, **block_kwargs)]
    out_channels = width * block.expansion
    blocks += [block(out_channels, width, 1, **block_kwargs) for _ in range(count - 1)]
    return nn.Sequential(*blocks), out_channels


def _init_resnet(model: nn.Module, zero_init_residual: bool) -> None:
    # He initialisation (He et al. 2015, "Delving deep into rectifiers"), which the paper uses (§3.4).
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:  # Goyal et al. 2017: each block starts as the identity
        for m in model.modules():
            last_norm = m.bn3 if isinstance(m, Bottleneck) else m.bn2 if isinstance(m, BasicBlock) else None
            if getattr(last_norm, "weight", None) is not None:  # norm='none' has no scale to zero
                nn.init.zeros_(last_norm.weight)


def _resnet(depth: int, num_classes: int, in_channels: int, **kwargs) -> ResNet:
    block, layers = IMAGENET_LAYERS[depth]
    return ResNet(block, layers, num_classes, in_channels, **kwargs)


_IMAGENET = {"input_size": (3, 224, 224), "num_classes": 1000, "family": "resnet", "paper": "He et al. 2015",
             "min_input_size": 1, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
_CIFAR = {"input_size": (3, 32, 32), "num_classes": 10, "family": "resnet_cifar", "paper": "He et al. 2015, §4.2",
          "min_input_size": 1}


@register_model(**_IMAGENET)
def resnet18(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    return _resnet(18, num_classes, in_channels, **kwargs)


@register_model(**_IMAGENET)
def resnet34(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    return _resnet(34, num_classes, in_channels, **kwargs)


# Where a downsampling bottleneck strides, named in `cnnkit models` (see the module docstring).
_TORCHVISION_STRIDE = {**_IMAGENET, "paper": "He et al. 2015 (v1.5: stride in the 3x3, as torchvision)"}


@register_model(**_TORCHVISION_STRIDE)
def resnet50(num_classes: int = 1000, in_channels: int = 3, stride_on: str = "3x3", **kwargs) -> ResNet:
    """ResNet-50, torchvision's "v1.5" placement by default; ``stride_on="1x1"`` is ``resnet50_v1``."""
    return _resnet(50, num_classes, in_channels, stride_on=stride_on, **kwargs)


@register_model(**_TORCHVISION_STRIDE)
def resnet101(num_classes: int = 1000, in_channels: int = 3, stride_on: str = "3x3", **kwargs) -> ResNet:
    """ResNet-101, torchvision's "v1.5" placement by default; ``stride_on="1x1"`` is ``resnet101_v1``."""
    return _resnet(101, num_classes, in_channels, stride_on=stride_on, **kwargs)


@register_model(**_TORCHVISION_STRIDE)
def resnet152(num_classes: int = 1000, in_channels: int = 3, stride_on: str = "3x3", **kwargs) -> ResNet:
    """ResNet-152, torchvision's "v1.5" placement by default; ``stride_on="1x1"`` is ``resnet152_v1``."""
    return _resnet(152, num_classes, in_channels, stride_on=stride_on, **kwargs)


_PAPER_STRIDE = {**_IMAGENET, "paper": "He et al. 2015 (v1: stride on the first 1x1)"}


@register_model(**_PAPER_STRIDE)
def resnet50_v1(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-50 with the paper's stride placement (3.86 G multiply-adds at 224x224; Table 1: 3.8 G)."""
    return _resnet(50, num_classes, in_channels, stride_on="1x1", **kwargs)


@register_model(**_PAPER_STRIDE)
def resnet101_v1(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-101 with the paper's stride placement (7.57 G multiply-adds; Table 1: 7.6 G)."""
    return _resnet(101, num_classes, in_channels, stride_on="1x1", **kwargs)


@register_model(**_PAPER_STRIDE)
def resnet152_v1(num_classes: int = 1000, in_channels: int = 3, **kwargs) -> ResNet:
    """ResNet-152 with the paper's stride placement (11.28 G multiply-adds; Table 1: 11.3 G)."""
    return _resnet(152, num_classes, in_channels, stride_on="1x1", **kwargs)


@register_model(**{**_IMAGENET, "family": "plain", "paper": "He et al. 2015, Table 2 (plain)"})
def plain18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    return _resnet(18, num_classes, in_channels, residual=False)


@register_model(**{**_IMAGENET, "family": "plain", "paper": "He et al. 2015, Table 2 (plain)"})
def plain34(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    return _resnet(34, num_classes, in_channels, residual=False)


def _cifar(depth: int, num_classes: int, in_channels: int, **kwargs) -> CifarResNet:
    return CifarResNet(depth, num_classes, in_channels, **kwargs)


@register_model(**_CIFAR)
def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", shortcut_padding: str = "after",
             activation: str = "relu", batch_norm: bool = True, norm: str = "batch",
             norm_groups: int = CIFAR_NORM_GROUPS, zero_init_residual: bool = False) -> CifarResNet:
    return _cifar(20, num_classes, in_channels, shortcut=shortcut, shortcut_padding=shortcut_padding,
                  activation=activation, batch_norm=batch_norm, norm=norm, norm_groups=norm_groups,
                  zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", shortcut_padding: str = "after",
             activation: str = "relu", batch_norm: bool = True, norm: str = "batch",
             norm_groups: int = CIFAR_NORM_GROUPS, zero_init_residual: bool = False) -> CifarResNet:
    return _cifar(32, num_classes, in_channels, shortcut=shortcut, shortcut_padding=shortcut_padding,
                  activation=activation, batch_norm=batch_norm, norm=norm, norm_groups=norm_groups,
                  zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet44(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", shortcut_padding: str = "after",
             activation: str = "relu", batch_norm: bool = True, norm: str = "batch",
             norm_groups: int = CIFAR_NORM_GROUPS, zero_init_residual: bool = False) -> CifarResNet:
    return _cifar(44, num_classes, in_channels, shortcut=shortcut, shortcut_padding=shortcut_padding,
                  activation=activation, batch_norm=batch_norm, norm=norm, norm_groups=norm_groups,
                  zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", shortcut_padding: str = "after",
             activation: str = "relu", batch_norm: bool = True, norm: str = "batch",
             norm_groups: int = CIFAR_NORM_GROUPS, zero_init_residual: bool = False) -> CifarResNet:
    return _cifar(56, num_classes, in_channels, shortcut=shortcut, shortcut_padding=shortcut_padding,
                  activation=activation, batch_norm=batch_norm, norm=norm, norm_groups=norm_groups,
                  zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet110(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", shortcut_padding: str = "after",
             activation: str = "relu", batch_norm: bool = True, norm: str = "batch",
             norm_groups: int = CIFAR_NORM_GROUPS, zero_init_residual: bool = False) -> CifarResNet:
    return _cifar(110, num_classes, in_channels, shortcut=shortcut, shortcut_padding=shortcut_padding,
                  activation=activation, batch_norm=batch_norm, norm=norm, norm_groups=norm_groups,
                  zero_init_residual=zero_init_residual)


@register_model(**_CIFAR)
def resnet1202(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", shortcut_padding: str = "after",
             activation: str = "relu", batch_norm: bool = True, norm: str = "batch",
             norm_groups: int = CIFAR_NORM_GROUPS, zero_init_residual: bool = False) -> CifarResNet:
    return _cifar(1202, num_classes, in_channels, shortcut=shortcut, shortcut_padding=shortcut_padding,
                  activation=activation, batch_norm=batch_norm, norm=norm, norm_groups=norm_groups,
                  zero_init_residual=zero_init_residual)


_PLAIN_CIFAR = {**_CIFAR, "family": "plain_cifar", "paper": "He et al. 2015, §4.2 (plain)"}


@register_model(**_PLAIN_CIFAR)
def plain20(num_classes: int = 10, in_channels: int = 3, activation: str = "relu",
            batch_norm: bool = True, norm: str = "batch", norm_groups: int = CIFAR_NORM_GROUPS) -> CifarResNet:
    return _cifar(20, num_classes, in_channels, residual=False, activation=activation, batch_norm=batch_norm,
                  norm=norm, norm_groups=norm_groups)


@register_model(**_PLAIN_CIFAR)
def plain32(num_classes: int = 10, in_channels: int = 3, activation: str = "relu",
            batch_norm: bool = True, norm: str = "batch", norm_groups: int = CIFAR_NORM_GROUPS) -> CifarResNet:
    return _cifar(32, num_classes, in_channels, residual=False, activation=activation, batch_norm=batch_norm,
                  norm=norm, norm_groups=norm_groups)


@register_model(**_PLAIN_CIFAR)
def plain44(num_classes: int = 10, in_channels: int = 3, activation: str = "relu",
            batch_norm: bool = True, norm: str = "batch", norm_groups: int = CIFAR_NORM_GROUPS) -> CifarResNet:
    return _cifar(44, num_classes, in_channels, residual=False, activation=activation, batch_norm=batch_norm,
                  norm=norm, norm_groups=norm_groups)


@register_model(**_PLAIN_CIFAR)
def plain56(num_classes: int = 10, in_channels: int = 3, activation: str = "relu",
            batch_norm: bool = True, norm: str = "batch", norm_groups: int = CIFAR_NORM_GROUPS) -> CifarResNet:
    return _cifar(56, num_classes, in_channels, residual=False, activation=activation, batch_norm=batch_norm,
                  norm=norm, norm_groups=norm_groups)


@register_model(**_PLAIN_CIFAR)
def plain110(num_classes: int = 10, in_channels: int = 3, activation: str = "relu",
            batch_norm: bool = True, norm: str = "batch", norm_groups: int = CIFAR_NORM_GROUPS) -> CifarResNet:
    return _cifar(110, num_classes, in_channels, residual=False, activation=activation, batch_norm=batch_norm,
                  norm=norm, norm_groups=norm_groups)
