"""DnCNN: Zhang, Zuo, Chen, Meng, Zhang, "Beyond a Gaussian denoiser: residual learning of deep CNN for image
denoising", IEEE TIP 2017, §III-A and Fig. 1.

    layer        type                         maps   kernel  note
    1            conv + ReLU                  64     3x3     bias, no batch norm
    2 .. D-1     conv + batch norm + ReLU     64     3x3     no bias (batch norm's shift replaces it)
    D            conv                         c      3x3     no bias: the predicted noise (residual) v = R(y)
    output       y - R(y)                                     the clean estimate (residual learning)

All convolutions are zero-padded ("same"), so the output has the input's size and any size is accepted. The
paper's DnCNN-S (known noise level) has depth D = 17 and 64 maps: 556,096 parameters on grey images
(1*9*64 + 64 + 15 * (64*9*64 + 2*64) + 64*9*1), the ~0.56 M of the paper and of its authors' PyTorch code
(cszn/DnCNN ``main_train.py``). The network is trained so that R(y) ~ y - x; as ``forward`` returns y - R(y),
the mean squared error of the output against the clean image is the paper's residual loss
1/2N sum ||R(y_i) - (y_i - x_i)||^2 up to the factor 1/2.

``depth`` and ``width`` shrink it for a CPU (depth 10, width 32: 74,848 parameters); ``batch_norm=False``
drops the normalisation (the paper's Fig. 2 ablation).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .registry import register_model
from .stages import Stage, own_children


class DnCNN(nn.Module):
    """The noise predictor ``self.body`` (conv+ReLU, (depth-2) x conv+BN+ReLU, conv); ``forward`` returns
    ``x - self.predict_noise(x)``."""

    size_multiple = 1  # fully convolutional, no down-sampling: any image size, no padding to a multiple

    def __init__(self, in_channels: int = 1, depth: int = 17, width: int = 64, batch_norm: bool = True):
        super().__init__()
        if depth < 2:
            raise ConfigError(f"DnCNN needs depth >= 2 (a first and a last convolution), got depth={depth}")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(width, width, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                # The authors' code: momentum 0.9 in their convention (0.1 in PyTorch's), eps 1e-4.
                layers.append(nn.BatchNorm2d(width, eps=1e-4, momentum=0.1))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(width, in_channels, 3, padding=1, bias=False))
        self.body = nn.Sequential(*layers)
        self.depth, self.width = depth, width
        self._initialise()

    def _initialise(self) -> None:
        # The authors' PyTorch code: orthogonal convolution weights, zero biases, BN scale 1 / shift 0. One change:
        # the last convolution starts 100x smaller, so the untrained network is nearly the identity (it returns
        # the noisy input). With the authors' scale its first "noise" estimates have a standard deviation near 1,
        # and a CPU budget of a few hundred steps is spent unlearning them (measured: training loss 0.21 at
        # sigma 25, against the 0.0096 of returning the input).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.orthogonal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.body[-1].weight.mul_(0.01)

    def predict_noise(self, x: torch.Tensor) -> torch.Tensor:
        """R(y): the network's estimate of the noise in ``x``."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.predict_noise(x)

    def feature_stages(self) -> list[Stage]:
        return own_children(self, "body")  # one stage, no classifier: nothing for a new head to renew


@register_model(input_size=(1, 40, 40), num_classes=0, family="dncnn", paper="Zhang et al. 2017 (TIP), Fig. 1",
                min_input_size=1, task="reconstruction")
def dncnn(num_classes: int = 0, in_channels: int = 1, depth: int = 17, width: int = 64,
          batch_norm: bool = True) -> DnCNN:
    """DnCNN residual denoiser (depth 17, width 64: the paper's DnCNN-S). ``num_classes`` is accepted so generic
    code can pass a dataset's class count, and ignored (the output has the input's channels)."""
    return DnCNN(in_channels, depth, width, batch_norm)
