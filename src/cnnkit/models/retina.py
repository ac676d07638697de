"""The retina-net / VVS-net of Lindsey, Ocko, Ganguli and Deny, "A Unified Theory of Early Visual Representations
from Retina to Cortex through Anatomically Constrained Deep CNNs", ICLR 2019 (section 2, Fig. 1; the layout of the
authors' code, github.com/ganguli-lab/RetinalResources, TrainModel.py).

A model of the visual system on 32x32 grey CIFAR-10: a two-layer "retina" whose output layer has only
``bottleneck`` channels (N_BN, the optic nerve), then a "ventral visual stream" of ``vvs_depth`` convolutions
(D_VVS) and a two-layer classifier. Every convolution is 9x9, stride 1, 'same' padding, ReLU; there is no
pooling, so every map stays 32x32. The paper's finding: with a tight bottleneck (N_BN = 1) the retina's output
units get centre-surround receptive fields and the first VVS layer oriented ones, as in the retina and V1; with
N_BN = 32 both layers are oriented. ``cnnkit.viz.receptive_fields`` and ``center_surround_index`` measure this,
``benchmarks/retina_bottleneck.py`` runs the paper's grid.

    layer         type                           maps / units     size    parameters
    retina.conv1  9x9 conv, same, ReLU           32               32x32   32 x 81 + 32          = 2,624
    retina.conv2  9x9 conv, same, ReLU           N_BN             32x32   N_BN x 32 x 81 + N_BN
    (optional Gaussian noise on the retina's output, ``retina_noise``, training only)
    vvs.conv1     9x9 conv, same, ReLU           32               32x32   32 x N_BN x 81 + 32
    vvs.conv2-D   9x9 conv, same, ReLU           32               32x32   82,976 each
    fc            dense, ReLU                    1024                     (32 or N_BN if D=0) x 1024 x 1024 + 1024
    out           dense (softmax in the loss)    10                       10,250

N_BN = 1, D_VVS = 2: 33,656,523 parameters, most in ``fc`` (the flattened 32x32x32 maps), ~126 M
multiply-accumulates per image; N_BN = 32, D_VVS = 4: ~461 M.

Choices. The paper (and its code) trains with RMSProp, lr 1e-4, batch 64, shifts of 10 % and horizontal flips,
20 epochs, no weight regularisation by default; the code's optional input noise, retinal-output noise and L1
penalties are off in the figures of section 3. Here: ``input_noise`` and ``retina_noise`` are offered (std of
Gaussian noise added in training, in the units of the normalised input / of the retina's output), default 0;
the L1 penalties are left out (the trainer's weight decay is L2). Weights start as in the authors' Keras code:
Glorot uniform, zero biases (``init="kaiming"``: He normal). That matters for the fields: Glorot counts the
fan-out, 32 x 81 for the first 9x9 layer, so its random weights are ~6x smaller than He's and the learned,
smooth part of a receptive field overtakes the white-noise part of the initialisation within a few hundred
steps, where with He's weights the fields of a short run still look like noise.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..errors import CnnkitError, ShapeError
from .registry import register_model

KERNEL_SIZE = 9
RETINA_WIDTH = 32  # channels of the retina's hidden layer and of every VVS layer
HIDDEN_UNITS = 1024


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, KERNEL_SIZE, padding=KERNEL_SIZE // 2)


class GaussianNoise(nn.Module):
    """Adds N(0, std^2) noise in training, passes through in eval mode (Keras's GaussianNoise)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = float(std)

    def forward(self, x):
        if self.training and self.std > 0:
            return x + self.std * torch.randn_like(x)
        return x

    def extra_repr(self) -> str:
        return f"std={self.std}"


class RetinaNet(nn.Module):
    def __init__(self, bottleneck: int = 1, vvs_depth: int = 2, num_classes: int = 10, in_channels: int = 1,
                 image_size: int = 32, input_noise: float = 0.0, retina_noise: float = 0.0, init: str = "glorot"):
        super().__init__()
        for name, value, minimum in (("bottleneck", bottleneck, 1), ("vvs_depth", vvs_depth, 0),
                                     ("num_classes", num_classes, 1), ("in_channels", in_channels, 1),
                                     ("image_size", image_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise CnnkitError(f"retina_net: {name} must be an integer of at least {minimum}, got {value!r} "
                                  "(the paper's grid: bottleneck in 1, 2, 4, 8, 16, 32; vvs_depth in 0, 1, 2, 3, 4).")
        if input_noise < 0 or retina_noise < 0:
            raise CnnkitError(f"retina_net: noise levels are standard deviations, got input_noise={input_noise}, "
                              f"retina_noise={retina_noise}; give values of at least 0.")
        self.bottleneck, self.vvs_depth, self.image_size = bottleneck, vvs_depth, image_size
        self.input_noise = GaussianNoise(input_noise)
        self.retina = nn.Sequential(OrderedDict([
            ("conv1", _conv(in_channels, RETINA_WIDTH)), ("relu1", nn.ReLU()),
            ("conv2", _conv(RETINA_WIDTH, bottleneck)), ("relu2", nn.ReLU()),
        ]))
        self.retina_noise = GaussianNoise(retina_noise)
        vvs = OrderedDict()
        channels = bottleneck
        for index in range(1, vvs_depth + 1):
            vvs[f"conv{index}"] = _conv(channels, RETINA_WIDTH)
            vvs[f"relu{index}"] = nn.ReLU()
            channels = RETINA_WIDTH
        self.vvs = nn.Sequential(vvs)  # empty when vvs_depth = 0: the classifier reads the retina directly
        self.fc = nn.Linear(channels * image_size * image_size, HIDDEN_UNITS)
        self.out = nn.Linear(HIDDEN_UNITS, num_classes)
        if init not in ("glorot", "kaiming"):
            raise CnnkitError(f"retina_net: init must be 'glorot' (Keras's default, the paper's) or 'kaiming', "
                              f"got {init!r}.")
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if init == "glorot":
                    nn.init.xavier_uniform_(module.weight)
                else:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x):
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ShapeError(f"retina_net reads {self.image_size}x{self.image_size} images (its dense layer is sized "
                             f"for them), got {x.shape[-2]}x{x.shape[-1]}; resize the images or build the model "
                             f"with image_size={x.shape[-1]}.")
        x = self.retina_noise(self.retina(self.input_noise(x)))
        x = self.vvs(x).flatten(1)
        return self.out(torch.relu(self.fc(x)))


@register_model(input_size=(1, 32, 32), num_classes=10, family="retina",
                paper="Lindsey et al. 2019 (ICLR), retina-net + VVS-net", min_input_size=32)
def retina_net(num_classes: int = 10, in_channels: int = 1, bottleneck: int = 1, vvs_depth: int = 2,
               image_size: int = 32, input_noise: float = 0.0, retina_noise: float = 0.0,
               init: str = "glorot") -> RetinaNet:
    """Two-layer retina with an N_BN-channel output (``bottleneck``), ``vvs_depth`` 9x9 VVS convolutions, then a
    1024-unit dense layer and the class scores; no pooling."""
    return RetinaNet(bottleneck, vvs_depth, num_classes, in_channels, image_size, input_noise, retina_noise, init)
