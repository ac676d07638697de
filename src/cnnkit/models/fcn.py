"""Fully convolutional networks: Long, Shelhamer, Darrell, "Fully convolutional networks for semantic
segmentation", CVPR 2015, §4.1-4.2 and Fig. 3.

A classifier's convolutional body, read as a backbone of feature stages (``features_only``), scores every
location of its last map with a 1x1 convolution; learned upsampling (a transposed convolution initialised to
bilinear interpolation, §3.3) brings the coarse scores back to the input's size. The skip connections add the
scores of finer stages, each from its own zero-initialised 1x1 convolution, so that fine detail refines the
coarse, semantic prediction (§4.2, the "deep jet"):

    net      scored stages (paper's VGG-16)       upsampling: 2x steps (learned), then to the input
    fcn32s   conv7 (/32)                          32x (fixed bilinear, §4.2)
    fcn16s   conv7 + pool4 (/16)                  2x, add pool4's scores; 16x
    fcn8s    conv7 + pool4 + pool3 (/8)           2x, add pool4's; 2x, add pool3's; 8x

On another backbone the scored stages are its last stage and, per skip, the deepest stage at a finer stride (the
backbone's ``feature_info`` says which): ResNet-18's layer4 (/32), layer3 (/16), layer2 (/8), or a CIFAR
ResNet's layer3 (/4), layer2 (/2), layer1 (/1) -- the names keep the paper's count of skips, the strides are the
backbone's. Any input size works: the paper pads conv1 by 100 pixels and crops each upsampled map to its skip
(the "crop" layer); here the input is padded at the bottom and right to a multiple of the coarsest stride, so
every map is exactly input/stride and the upsampled maps line up with their skips pixel for pixel (both use
``F.interpolate(align_corners=False)``'s convention: map pixel i covers input pixels [s i, s (i + 1))); the
prediction is cropped back to the input. The paper's backbone (VGG-16 with fc6/fc7 as convolutions) is
``backbone="vgg16"`` without the convolutionalised fc6/fc7; the default is the zoo's ResNet-18.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..layers import BilinearUpsample
from .features import FeatureExtractor
from .registry import create_model, get_model_entry, register_model
from .stages import CLASSIFIER, Stage, model_stages

SKIPS = {"fcn32s": 0, "fcn16s": 1, "fcn8s": 2}


def _skip_stages(reductions: list[int], skips: int, backbone: str) -> list[int]:
    """Indices of the scored stages, coarsest first: the last stage, then per skip the deepest stage whose stride
    is finer than the one above it."""
    chosen = [len(reductions) - 1]
    for _ in range(skips):
        finer = [i for i in range(chosen[-1]) if reductions[i] < reductions[chosen[-1]]]
        if not finer:
            raise ConfigError(f"{backbone} has stages at strides {sorted(set(reductions))} only, too few for "
                              f"{skips} skip connection(s); use fewer skips (fcn16s, fcn32s) or a deeper backbone.")
        chosen.append(finer[-1])
    return chosen


def _fit(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``x`` cut (or, for a backbone that floors an odd size away, edge-padded) to height x width from its top
    left, where its pixel grid starts."""
    x = x[..., :height, :width]
    short_h, short_w = height - x.shape[-2], width - x.shape[-1]
    return F.pad(x, (0, short_w, 0, short_h), mode="replicate") if short_h or short_w else x


def _drop_classifier(body: nn.Module) -> None:
    """Replace the backbone's classifier (which the FCN never runs: its stages stop below it) by identities, so
    its weights -- most of VGG's -- are neither stored nor handed to the optimiser."""
    for stage in model_stages(body):
        if stage.name == CLASSIFIER:
            for prefix in stage.prefixes:
                parent, _, child = prefix.rstrip(".").rpartition(".")
                setattr(body.get_submodule(parent) if parent else body, child, nn.Identity())


class FCN(nn.Module):
    def __init__(self, num_classes: int = 21, in_channels: int = 3, backbone: str = "resnet18", skips: int = 2,
                 pretrained_backbone: str | None = None, learn_final_upsample: bool = False):
        super().__init__()
        entry = get_model_entry(backbone)
        if entry.task != "classification":
            raise ConfigError(f"backbone={backbone!r} is a {entry.task} model; an FCN's backbone is a classifier's "
                              "body (e.g. resnet18, resnet20, vgg16).")
        body = create_model(backbone, in_channels=in_channels, pretrained=pretrained_backbone)
        probe_size = (in_channels, *entry.input_size[1:])
        every = FeatureExtractor(body, probe_size, name=backbone)
        scored = _skip_stages(every.feature_info.reduction(), skips, backbone)  # coarsest first
        self.backbone = FeatureExtractor(body, probe_size, [every.out_indices[i] for i in scored], name=backbone)
        _drop_classifier(body)
        channels = self.backbone.feature_info.channels()[::-1]  # coarsest first, as ``scored``
        strides = self.backbone.feature_info.reduction()[::-1]
        self.stride = strides[0]
        # The scoring layers start at zero (§4.1: random initialisation gave neither better results nor faster
        # convergence; for the skips, the net starts with the coarser net's predictions, §4.2).
        self.score = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels)
        for layer in self.score:
            nn.init.zeros_(layer.weight), nn.init.zeros_(layer.bias)
        self.upsample = nn.ModuleList(BilinearUpsample(num_classes, coarse // fine)
                                      for coarse, fine in zip(strides, strides[1:]))
        self.upsample.append(BilinearUpsample(num_classes, strides[-1], learnable=learn_final_upsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = F.pad(x, (0, -width % self.stride, 0, -height % self.stride))  # zeros: the normalised mean image
        maps = self.backbone(x)[::-1]  # coarsest first
        scores = self.score[0](maps[0])
        for score, upsample, skip in zip(self.score[1:], self.upsample, maps[1:]):
            skip_scores = score(skip)
            scores = _fit(upsample(scores), *skip_scores.shape[-2:]) + skip_scores
        return _fit(self.upsample[-1](scores), height, width)

    def feature_stages(self) -> list[Stage]:
        # The backbone is one stage (freeze it to train the head alone); the classifier is every layer whose
        # shape depends on the number of classes: the scoring convolutions and the upsampling.
        return [Stage("backbone", ("backbone.",), None, "backbone"),
                Stage(CLASSIFIER, ("score.", "upsample."), None, f"upsample.{len(self.upsample) - 1}")]


def _fcn(variant: str, num_classes: int, in_channels: int, **kwargs) -> FCN:
    return FCN(num_classes, in_channels, skips=SKIPS[variant], **kwargs)


_REGISTRATION = dict(input_size=(3, 224, 224), num_classes=21, family="fcn", paper="Long et al. 2015",
                     task="segmentation")


@register_model(**_REGISTRATION)
def fcn32s(num_classes: int = 21, in_channels: int = 3, **kwargs) -> FCN:
    """FCN-32s: the last stage's scores upsampled to the input in one fixed bilinear step."""
    return _fcn("fcn32s", num_classes, in_channels, **kwargs)


@register_model(**_REGISTRATION)
def fcn16s(num_classes: int = 21, in_channels: int = 3, **kwargs) -> FCN:
    """FCN-16s: plus a skip from the stage one stride finer (pool4 in the paper)."""
    return _fcn("fcn16s", num_classes, in_channels, **kwargs)


@register_model(**_REGISTRATION)
def fcn8s(num_classes: int = 21, in_channels: int = 3, **kwargs) -> FCN:
    """FCN-8s: plus skips from the two stages one and two strides finer (pool4 and pool3 in the paper)."""
    return _fcn("fcn8s", num_classes, in_channels, **kwargs)
