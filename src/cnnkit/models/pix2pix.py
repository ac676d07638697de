"""pix2pix: Isola, Zhu, Zhou, Efros, "Image-to-image translation with conditional adversarial networks",
CVPR 2017, §3.2 and appendix 6.1 (the notes' last deck): a U-Net generator with dropout as its noise, and a
PatchGAN discriminator that classifies each N x N patch of an (input, output) pair as real or generated.

Ck: 4x4 convolution with k filters, stride 2, then batch norm and ReLU; CDk: the same with 50% dropout.
Encoder ReLUs are leaky (0.2), decoder ReLUs are not; the first encoder layer has no batch norm.

    256x256 (paper, depth 8)  encoder C64-C128-C256-C512-C512-C512-C512-C512
                              decoder CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128 (maps after concatenation)
    32x32 (``depth=5``, the   encoder C64-C128-C256-C512-C512: 32 -> 16 -> 8 -> 4 -> 2 -> 1
    default here)             decoder up-convolutions to 512, 256, 128, 64 maps (dropout on the first three),
                              each concatenated with the mirrored encoder maps (1024, 512, 256, 128 in all),
                              then a 4x4/2 transposed convolution to the output channels and tanh

The innermost encoder layer (1x1 maps) has no batch norm, as in the authors' code (with one image per batch it
would zero the code). ``base_channels`` scales every width (64 in the paper). Any input size works: the
generator pads to a multiple of 2**depth (reflect, or replicate when too small) and crops its output back, so
the output always has the input's height and width (28x28 Fashion-MNIST runs as 32x32).
``keep_luminance=True`` (colourisation, grey in, RGB out) gives the output the input's luminance, so the
generator only supplies colour, as colourisation networks predict Lab's ab channels from L.
``fill_hole=True`` (inpainting) makes the last input channel a hole mask (+1 in the hole, -1 on known pixels, in
the [-1, 1] scale of the inputs) and composites: the output is the input's own pixels outside the hole and the
generator's inside it, so inpainting never alters what it was given (Pathak et al. 2016 and Iizuka et al. 2017
feed and paste the same way); the discriminator sees the mask with the input, hence the seams too. Inside the
hole the generator adds a correction to what the input holds there (0, i.e. mid-grey, or a classical fill to
refine), and its last layer starts at zero, so an untrained inpainter returns its input's fill unchanged.

Noise is dropout only, applied at training *and* test time (§3.1: "we provide noise only in the form of
dropout ... at both training and test time"); ``test_dropout=False`` turns it off at test time. Unlike the
paper, evaluation uses batch norm's running statistics rather than the test batch's.

    PatchGAN discriminator (``n_layers=3``: the paper's 70x70, C64-C128-C256-C512)
    layer                         stride  grid (input H)         receptive field
    C64 (no batch norm)           2       H/2                    4
    C128                          2       H/4                    10
    C256                          2       H/8                    22
    C512                          1       H/8 - 1                46
    4x4 convolution to 1 logit    1       H/8 - 2                70

The discriminator reads the input and the (real or generated) output concatenated along the channels, and gives
a grid of patch logits of ``patch_grid_size(H) = floor(H / 2**n_layers) - 2`` per side: 30x30 for the paper's
256x256, 2x2 for 32x32 (each patch then sees the whole image). ``n_layers`` 1, 2, 3, 4, 5 give the paper's 16x16,
34x34, 70x70, 142x142 and 286x286 patches (``patch_receptive_field``); widths are C64 x min(2**i, 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from .dcgan import dcgan_init_
from .registry import register_model

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B in the luma Y


class NoiseDropout(nn.Dropout):
    """Dropout that stays on in evaluation mode when ``at_test`` (pix2pix's only noise source)."""

    def __init__(self, p: float = 0.5, at_test: bool = True):
        super().__init__(p)
        self.at_test = at_test

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, self.training or self.at_test)


def _down(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    """Encoder Ck: LeakyReLU(0.2) on the *input* (the previous layer's output), 4x4/2 conv, batch norm; the
    activation comes first so the un-activated maps go to the skip connection, as in the authors' code."""
    layers = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


def _up(in_channels: int, out_channels: int, dropout: float, test_dropout: bool) -> nn.Sequential:
    """Decoder Ck / CDk: ReLU, 4x4/2 transposed conv, batch norm, (dropout)."""
    layers = [nn.ReLU(), nn.ConvTranspose2d(in_channels, out_channels, 4, 2, 1, bias=False),
              nn.BatchNorm2d(out_channels)]
    if dropout:
        layers.append(NoiseDropout(dropout, test_dropout))
    return nn.Sequential(*layers)


class UNetGenerator(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_channels: int = 64, depth: int = 5,
                 dropout_layers: int = 3, dropout: float = 0.5, test_dropout: bool = True):
        super().__init__()
        if depth < 2:
            raise ShapeError(f"a pix2pix U-Net needs depth >= 2 (encoder layers), got {depth}")
        widths = [base_channels * min(2**i, 8) for i in range(depth)]  # C64-C128-C256-C512-C512...
        self.depth = depth
        self.down = nn.ModuleList()
        previous = in_channels
        for index, width in enumerate(widths):
            self.down.append(_down(previous, width, batch_norm=0 < index < depth - 1))
            previous = width
        self.up = nn.ModuleList()
        for index, width in enumerate(reversed(widths[:-1])):  # innermost first; skips double the input maps
            cin = previous if index == 0 else 2 * previous
            self.up.append(_up(cin, width, dropout if index < dropout_layers else 0.0, test_dropout))
            previous = width
        self.head = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * previous, out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), mode=mode)
        skips = []
        for index, layer in enumerate(self.down):
            x = layer(x if index == 0 else F.leaky_relu(x, 0.2))
            skips.append(x)
        skips.pop()  # the innermost code is not a skip
        for layer in self.up:
            x = layer(x)
            x = torch.cat([skips.pop(), x], 1)
        x = self.head(x)
        return x[..., pad_h // 2:pad_h // 2 + height, pad_w // 2:pad_w // 2 + width]


def patch_grid_size(size: int, n_layers: int = 3) -> int:
    """Patch logits per side for an input of ``size`` pixels: three (n_layers) 4x4/2 convolutions halve it,
    the two 4x4/1 convolutions (padding 1) take one each."""
    for _ in range(n_layers):
        size = (size + 2 - 4) // 2 + 1
    return size - 2


def patch_receptive_field(n_layers: int = 3) -> int:
    """Input pixels per side that one patch logit sees: 16, 34, 70, 142, 286 for n_layers 1-5."""
    field = 1
    for stride in [1, 1] + [2] * n_layers:  # from the output back to the input
        field = (field - 1) * stride + 4
    return field


class PatchDiscriminator(nn.Sequential):
    def __init__(self, in_channels: int = 6, base_channels: int = 64, n_layers: int = 3):
        super().__init__()
        widths = [base_channels * min(2**i, 8) for i in range(n_layers + 1)]  # C64-C128-C256-C512
        previous = in_channels
        for index, width in enumerate(widths):
            stride = 2 if index < n_layers else 1
            self.add_module(f"conv{index + 1}", nn.Conv2d(previous, width, 4, stride, 1, bias=index == 0))
            if index > 0:
                self.add_module(f"bn{index + 1}", nn.BatchNorm2d(width))
            self.add_module(f"lrelu{index + 1}", nn.LeakyReLU(0.2, inplace=True))
            previous = width
        self.add_module("patch_logits", nn.Conv2d(previous, 1, 4, 1, 1))
        self.n_layers = n_layers

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """(input, output) concatenated on channels -> (N, 1, G, G) patch logits, G = patch_grid_size(H)."""
        smallest = 3 * 2**self.n_layers  # the smallest size that leaves one patch
        if min(pair.shape[-2:]) < smallest:
            raise ShapeError(f"a PatchGAN with {self.n_layers} strided layers needs images of at least "
                             f"{smallest}x{smallest} pixels, got {pair.shape[-2]}x{pair.shape[-1]}; build it with "
                             f"fewer layers (n_layers) or use larger images")
        return super().forward(pair)


class Pix2Pix(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int = 3, base_channels: int = 64, depth: int = 5,
                 discriminator_channels: int = 64, n_layers: int = 3, dropout_layers: int = 3,
                 test_dropout: bool = True, keep_luminance: bool = False, fill_hole: bool = False):
        super().__init__()
        if keep_luminance and (in_channels, out_channels) != (1, 3):
            raise ShapeError(f"keep_luminance is for colourisation (1 channel in, 3 out), not {in_channels} -> "
                             f"{out_channels} channels")
        if fill_hole and in_channels != out_channels + 1:
            raise ShapeError(f"fill_hole (inpainting) reads the image and its hole mask, out_channels + 1 = "
                             f"{out_channels + 1} input channels, not {in_channels}; build it with "
                             f"in_channels={out_channels + 1}")
        if fill_hole and keep_luminance:
            raise ShapeError("fill_hole and keep_luminance exclude each other: one model inpaints or colourises")
        self.keep_luminance, self.fill_hole = keep_luminance, fill_hole
        self.generator = UNetGenerator(in_channels, out_channels, base_channels, depth, dropout_layers,
                                       test_dropout=test_dropout)
        self.discriminator = PatchDiscriminator(in_channels + out_channels, discriminator_channels, n_layers)
        self.in_channels, self.out_channels = in_channels, out_channels
        dcgan_init_(self)  # the paper (§6.2) initialises as DCGAN does: N(0, 0.02)
        if fill_hole:  # start as the identity on the input's fill (see the module docstring)
            nn.init.zeros_(self.generator.head[1].weight)
            nn.init.zeros_(self.generator.head[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The translation: input in [-1, 1] -> output in [-1, 1], same height and width."""
        out = self.generator(x)
        if self.keep_luminance:
            # Colourisation: the generator supplies the colour, the grey input the luminance. Luma is a weighted
            # mean of R, G, B (weights sum to 1), so adding (input - luma(output)) to every channel gives the
            # output exactly the input's luma and leaves its chroma alone, like predicting Lab's ab from L.
            luma = (out * out.new_tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
            out = out + (x - luma)
        if self.fill_hole:
            # torch.where, not mask * out + (1 - mask) * x: known pixels come back bit for bit, and only the
            # hole's pixels pass gradients to the generator.
            image = x[:, :-1]
            out = torch.where(x[:, -1:] > 0, (image + out).clamp(-1, 1), image)
        return out

    def discriminate(self, source: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat([source, output], 1))


@register_model(input_size=(3, 32, 32), num_classes=0, family="gan", paper="Isola et al. 2017", min_input_size=1,
                task="translation")
def pix2pix(num_classes: int = 0, in_channels: int = 3, out_channels: int = 3, base_channels: int = 64,
            depth: int = 5, discriminator_channels: int = 64, n_layers: int = 3, dropout_layers: int = 3,
            test_dropout: bool = True, keep_luminance: bool = False, fill_hole: bool = False) -> Pix2Pix:
    """U-Net generator (``depth`` 5: 32 -> 1; the paper's 256-px net is depth 8) + 70x70 PatchGAN
    (``n_layers`` 3); ``keep_luminance`` for grey -> RGB; ``fill_hole`` for inpainting (image + mask in, the
    output composited into the hole). ``num_classes`` is accepted so generic code can pass a dataset's class
    count, and ignored."""
    return Pix2Pix(in_channels, out_channels, base_channels, depth, discriminator_channels, n_layers, dropout_layers,
                   test_dropout, keep_luminance, fill_hole)
