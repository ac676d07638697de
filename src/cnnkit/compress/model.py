"""End-to-end learned image compression with a factorized prior: Ballé, Laparra, Simoncelli, "End-to-end
optimized image compression", ICLR 2017 (analysis/synthesis transforms with GDN, uniform-noise quantisation,
rate-distortion loss), in the layout of the factorized-prior model of Ballé et al., "Variational image
compression with a scale hyperprior", ICLR 2018, Fig. 4 (left half) and appendix 6.1:

    analysis g_a                          synthesis g_s
    conv 5x5 / 2,  N    GDN               conv-transpose 5x5 / 2,  N    IGDN
    conv 5x5 / 2,  N    GDN               conv-transpose 5x5 / 2,  N    IGDN
    conv 5x5 / 2,  N    GDN               conv-transpose 5x5 / 2,  N    IGDN
    conv 5x5 / 2,  M    (the latent y)    conv-transpose 5x5 / 2,  C    (the image, unbounded)

    y = g_a(x);  y~ = y + U(-1/2, 1/2) in training, round(y) at test;  x^ = g_s(y~)
    loss = lambda * 255^2 * MSE(x, x^) + bits per pixel,  bits = sum -log2 P(y~)  (factorized entropy model)

The paper uses N = 128, M = 192 for its lower rates; a 16x smaller image of M channels is what is coded.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ShapeError
from ..models.registry import register_model
from .entropy import FactorizedEntropyModel
from .gdn import GDN, IGDN

DOWNSAMPLING = 16  # four stride-2 stages


class CompressionOutput(NamedTuple):
    reconstruction: torch.Tensor  # x^, (N, C, H, W), pixels in [0, 1] units (not clamped)
    likelihoods: torch.Tensor  # P(y~) per latent element, (N, M, H/16, W/16)
    hyper_likelihoods: torch.Tensor | None = None  # P(z~) of a hyperprior's side information, (N, N', H/64, W/64)

    def float(self) -> CompressionOutput:
        """fp32 copies (the generic evaluation casts autocast outputs this way)."""
        hyper = None if self.hyper_likelihoods is None else self.hyper_likelihoods.float()
        return CompressionOutput(self.reconstruction.float(), self.likelihoods.float(), hyper)


def pad_to_multiple(x: torch.Tensor, multiple: int = DOWNSAMPLING) -> torch.Tensor:
    """Replicate the last row and column up to multiples of ``multiple`` (the model's ``downsampling``: 16, or 64
    with a hyperprior); the decoder crops them off again."""
    height, width = x.shape[-2:]
    return F.pad(x, (0, (-width) % multiple, 0, (-height) % multiple), mode="replicate")


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 5, stride=2, padding=2)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class AnalysisTransform(nn.Sequential):
    def __init__(self, in_channels: int, channels: int, latent_channels: int):
        super().__init__(_conv(in_channels, channels), GDN(channels), _conv(channels, channels), GDN(channels),
                         _conv(channels, channels), GDN(channels), _conv(channels, latent_channels))


class SynthesisTransform(nn.Sequential):
    def __init__(self, in_channels: int, channels: int, latent_channels: int):
        super().__init__(_deconv(latent_channels, channels), IGDN(channels), _deconv(channels, channels),
                         IGDN(channels), _deconv(channels, channels), IGDN(channels), _deconv(channels, in_channels))


class FactorizedPriorCompressor(nn.Module):
    kind = "factorized"  # the .cnk files' model field (bitstream.MODEL_KINDS)
    downsampling = DOWNSAMPLING  # images are padded to multiples of this

    def __init__(self, in_channels: int = 3, channels: int = 128, latent_channels: int = 192):
        super().__init__()
        self.in_channels, self.latent_channels = in_channels, latent_channels
        self.analysis = AnalysisTransform(in_channels, channels, latent_channels)
        self.synthesis = SynthesisTransform(in_channels, channels, latent_channels)
        self.entropy_model = FactorizedEntropyModel(latent_channels)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"this compressor reads (N, {self.in_channels}, H, W) images, got {tuple(x.shape)}")
        if x.shape[-2] % self.downsampling or x.shape[-1] % self.downsampling:
            raise ShapeError(f"the transforms halve the size {self.downsampling.bit_length() - 1} times, so images "
                             f"need sizes divisible by {self.downsampling}, got {x.shape[-2]}x{x.shape[-1]}; pad "
                             "them (compress_image does)")

    def forward(self, x: torch.Tensor) -> CompressionOutput:
        self._check(x)
        quantised, likelihoods = self.entropy_model(self.analysis(x))
        return CompressionOutput(self.synthesis(quantised), likelihoods)

    @torch.no_grad()
    def quantized_latent(self, x: torch.Tensor) -> torch.Tensor:
        """round(g_a(x)): the integers a file stores."""
        self._check(x)
        return torch.round(self.analysis(x).float())


# Registered here, in the tools layer, rather than in cnnkit.models (which stays below compress): `import cnnkit`
# imports cnnkit.compress, so the name is known wherever a run folder is loaded.
@register_model(input_size=(3, 256, 256), num_classes=0, family="compression",
                paper="Ballé et al. 2017; factorized prior of Ballé et al. 2018", min_input_size=DOWNSAMPLING,
                task="compression")
def compress_factorized(num_classes: int = 0, in_channels: int = 3, channels: int = 128,
                        latent_channels: int = 192) -> FactorizedPriorCompressor:
    """GDN transforms + factorized entropy model. ``channels`` is N, ``latent_channels`` M; ``num_classes`` is
    accepted so generic code can pass a dataset's class count, and ignored."""
    return FactorizedPriorCompressor(in_channels, channels, latent_channels)
