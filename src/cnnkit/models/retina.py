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

Two variants from section 3 of the paper (Fig. 2D-F). ``lgn_layers`` adds that many 9x9 convolutions of N_BN
channels (ReLU) between the retina and the VVS, named ``lgn.conv1``...: a second bottleneck standing for the
lateral geniculate nucleus, where the paper finds centre-surround fields at both the retina's output and the LGN
layer (N_BN x N_BN x 81 + N_BN parameters each). ``untied=True`` makes the retina's output layer locally
connected (``cnnkit.layers.conv.LocallyConnected2d``: every one of the 32x32 positions has its own 9x9 kernels, no
weight sharing: 1,024 x N_BN x 32 x 81 weights and N_BN x 32 x 32 biases), so each retinal unit can learn its
own field and cell types are not imposed by the convolution; the paper clusters the fields of such a network's
retinal units with t-SNE and finds two types, ON- and OFF-centre (Fig. 2E-F, N_BN = 4). The paper does not say
here whether the retina's hidden layer is untied too; it stays a convolution (the clustered fields are the
output layer's), which keeps ``retina_unit_fields`` exact and cheap.

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
from ..layers.conv import LocallyConnected2d
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


class RetinaBottleneckNet(nn.Module):
    def __init__(self, bottleneck: int = 1, vvs_depth: int = 2, num_classes: int = 10, in_channels: int = 1,
                 image_size: int = 32, input_noise: float = 0.0, retina_noise: float = 0.0, init: str = "glorot",
                 lgn_layers: int = 0, untied: bool = False):
        super().__init__()
        for name, value, minimum in (("bottleneck", bottleneck, 1), ("vvs_depth", vvs_depth, 0),
                                     ("lgn_layers", lgn_layers, 0),
                                     ("num_classes", num_classes, 1), ("in_channels", in_channels, 1),
                                     ("image_size", image_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise CnnkitError(f"retina_net: {name} must be an integer of at least {minimum}, got {value!r} "
                                  "(the paper's grid: bottleneck in 1, 2, 4, 8, 16, 32; vvs_depth in 0, 1, 2, 3, 4; "
                                  "lgn_layers 0 or 1).")
        if not isinstance(untied, bool):
            raise CnnkitError(f"retina_net: untied is True (a locally connected retinal output layer) or False, "
                              f"got {untied!r}.")
        if input_noise < 0 or retina_noise < 0:
            raise CnnkitError(f"retina_net: noise levels are standard deviations, got input_noise={input_noise}, "
                              f"retina_noise={retina_noise}; give values of at least 0.")
        self.bottleneck, self.vvs_depth, self.image_size = bottleneck, vvs_depth, image_size
        self.lgn_layers, self.untied = lgn_layers, untied
        self.input_noise = GaussianNoise(input_noise)
        output_layer = (LocallyConnected2d(RETINA_WIDTH, bottleneck, KERNEL_SIZE, image_size, padding=KERNEL_SIZE // 2)
                        if untied else _conv(RETINA_WIDTH, bottleneck))
        self.retina = nn.Sequential(OrderedDict([
            ("conv1", _conv(in_channels, RETINA_WIDTH)), ("relu1", nn.ReLU()),
            ("conv2", output_layer), ("relu2", nn.ReLU()),
        ]))
        self.retina_noise = GaussianNoise(retina_noise)
        lgn = OrderedDict()
        for index in range(1, lgn_layers + 1):
            lgn[f"conv{index}"] = _conv(bottleneck, bottleneck)
            lgn[f"relu{index}"] = nn.ReLU()
        self.lgn = nn.Sequential(lgn)  # empty by default: the VVS reads the retina directly, as in Fig. 1
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
            if isinstance(module, LocallyConnected2d):
                # Keras's Glorot for LocallyConnected2D counts the positions in both fans (its kernel is
                # (positions, k*k*in, out)), so the untied weights start sqrt(positions) = 32x smaller than a
                # convolution's; kept (with Kaiming, the conv's He scale per position).
                positions, fan_in, fan_out = module.weight.shape
                if init == "glorot":
                    bound = (6 / (positions * (fan_in + fan_out))) ** 0.5
                    nn.init.uniform_(module.weight, -bound, bound)
                else:
                    nn.init.normal_(module.weight, 0.0, (2 / fan_in) ** 0.5)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
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
        x = self.vvs(self.lgn(x)).flatten(1)
        return self.out(torch.relu(self.fc(x)))

    def retina_unit_fields(self, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Receptive fields of retinal output units (before their ReLU) at ``positions`` ((P, 2) rows and columns
        of the 32x32 map), every channel: (P, N_BN, 17, 17), the input gradient averaged over the preprocessed
        (N, 1, H, W) ``images``, centred on the unit (pixels beyond the image's border are zero).

        ``cnnkit.viz.receptive_fields`` gives one unit per channel, which is all a convolution has; the untied
        layer has a different field at every position, and thousands of backward passes would be slow. The
        gradient has a closed form instead: d out[k, r, c] / d x = sum over hidden channels h and kernel offsets
        of W[r, c][k, h, offset] * relu'(hidden[h] at r, c + offset) * (conv1's kernel h, placed there); averaged
        over images, relu' becomes the fraction of images where hidden unit h is active, and the sum is a
        transposed convolution of (W * that fraction) with conv1's kernels."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (self.retina.conv1.in_channels, self.image_size,
                                                            self.image_size):
            raise ShapeError(f"retina_unit_fields reads preprocessed (N, {self.retina.conv1.in_channels}, "
                             f"{self.image_size}, {self.image_size}) images, got shape {tuple(images.shape)}.")
        positions = torch.as_tensor(positions, dtype=torch.long).reshape(-1, 2)
        if positions.numel() and (positions.min() < 0 or positions.max() >= self.image_size):
            raise CnnkitError(f"retina_unit_fields: positions are (row, column) pairs in 0..{self.image_size - 1}, "
                              f"got values from {int(positions.min())} to {int(positions.max())}.")
        conv1, output_layer, half = self.retina.conv1, self.retina.conv2, KERNEL_SIZE // 2
        with torch.no_grad():
            active = (conv1(images.float()) > 0).float().mean(0)  # (hidden, H, W): how often relu' is 1
            active = nn.functional.pad(active, (half,) * 4)  # hidden units beyond the border do not exist
            rows, columns = positions[:, 0], positions[:, 1]
            offsets = torch.arange(KERNEL_SIZE)
            window = active[:, (rows[:, None] + offsets)[:, :, None], (columns[:, None] + offsets)[:, None, :]]
            window = window.permute(1, 0, 2, 3)  # (P, hidden, k, k): the unit's 9x9 window of hidden units
            if isinstance(output_layer, LocallyConnected2d):
                weights = output_layer.kernels()[rows, columns]  # (P, N_BN, hidden, k, k)
            else:
                weights = output_layer.weight.expand(len(positions), *output_layer.weight.shape)
            paths = (weights * window[:, None]).flatten(0, 1)  # (P * N_BN, hidden, k, k)
            fields = nn.functional.conv_transpose2d(paths, conv1.weight)  # (P * N_BN, in_channels, 17, 17)
        return fields.sum(1).view(len(positions), self.bottleneck, *fields.shape[-2:])


@register_model(input_size=(1, 32, 32), num_classes=10, family="retina",
                paper="Lindsey et al. 2019 (ICLR), retina-net + VVS-net", min_input_size=32)
def retina_net(num_classes: int = 10, in_channels: int = 1, bottleneck: int = 1, vvs_depth: int = 2,
               image_size: int = 32, input_noise: float = 0.0, retina_noise: float = 0.0,
               init: str = "glorot", lgn_layers: int = 0, untied: bool = False) -> RetinaBottleneckNet:
    """Two-layer retina with an N_BN-channel output (``bottleneck``; locally connected with ``untied``), optional
    ``lgn_layers`` N_BN-channel LGN convolutions, ``vvs_depth`` 9x9 VVS convolutions, then a 1024-unit dense
    layer and the class scores; no pooling."""
    return RetinaBottleneckNet(bottleneck, vvs_depth, num_classes, in_channels, image_size, input_noise,
                               retina_noise, init, lgn_layers, untied)
