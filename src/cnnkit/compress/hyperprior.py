"""The scale hyperprior: Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a scale
hyperprior", ICLR 2018, Fig. 4 (right half) and appendix 6.1. The factorized-prior codec's transforms, plus side
information z that tells the decoder how spread out each latent element is:

    y = g_a(x)                     (the factorized model's analysis, M channels at 1/16 of the image)
    z = h_a(|y|)                   conv 3x3 / 1, N  ReLU   conv 5x5 / 2, N  ReLU   conv 5x5 / 2, N
    z~ coded with the factorized density (FactorizedEntropyModel over N channels, at 1/64 of the image)
    sigma = h_s(z~)                deconv 5x5 / 2, N  ReLU   deconv 5x5 / 2, N  ReLU   conv 3x3 / 1, M  ReLU
    y~ coded with a zero-mean Gaussian of scale sigma per element, convolved with the unit box:
        P(y~) = Phi((1/2 - |y~|) / sigma) - Phi((-1/2 - |y~|) / sigma)
    x^ = g_s(y~)
    loss = lambda 255^2 MSE + (bits of y~ + bits of z~) / pixels

For coding, sigma is rounded to one of SCALE_LEVELS log-spaced scales (as tensorflow-compression and CompressAI
do), so the coder's frequency tables are a fixed set computed once from the scale table, not from floats that
could differ in their last bit between the encoder and the decoder.
"""

from __future__ import annotations

import contextlib
import functools
import math
import zlib

import numpy as np
import torch
from torch import nn

from ..models.registry import register_model
from .entropy import LIKELIHOOD_BOUND, PRECISION, CodingTables, FactorizedEntropyModel, quantize_pmf
from .gdn import lower_bound
from .model import AnalysisTransform, CompressionOutput, FactorizedPriorCompressor, SynthesisTransform

HYPER_DOWNSAMPLING = 64  # the latent's 16, and h_a's two stride-2 stages
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64  # tensorflow-compression's defaults
GAUSSIAN_TAIL = 1e-9  # probability mass left to the escape symbol outside a scale's table


def scale_table() -> np.ndarray:
    """The scales a coded sigma is rounded to: SCALE_LEVELS values, log-spaced from SCALE_MIN to SCALE_MAX."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-x / math.sqrt(2))


class GaussianConditional(nn.Module):
    """P(y~ | sigma): a zero-mean Gaussian per element, convolved with the unit box (the density of y + U(-1/2,
    1/2) in training, of round(y) when coding). sigma is bounded below by SCALE_MIN, where a Gaussian already puts
    all but 1e-5 of its mass on one integer."""

    def likelihood(self, values: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        scales = lower_bound(scales, SCALE_MIN)
        values = values.abs()  # symmetric: evaluate on the side where both cumulatives are small
        likelihood = _normal_cdf((0.5 - values) / scales) - _normal_cdf((-0.5 - values) / scales)
        return lower_bound(likelihood, LIKELIHOOD_BOUND)

    def forward(self, latent: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        quantised = latent + torch.rand_like(latent) - 0.5 if self.training else torch.round(latent)
        return quantised, self.likelihood(quantised, scales)

    @staticmethod
    def scale_indexes(scales: torch.Tensor) -> torch.Tensor:
        """The index in scale_table() of each sigma: the smallest table scale at least as large (a slightly wider
        table costs a little rate; a narrower one could cost a lot on an outlier)."""
        table = torch.as_tensor(scale_table(), dtype=torch.float64)
        return torch.searchsorted(table, scales.double().clamp(SCALE_MIN, SCALE_MAX).contiguous()).clamp_max(
            SCALE_LEVELS - 1)

    @staticmethod
    def coding_tables(tail_mass: float = GAUSSIAN_TAIL) -> CodingTables:
        """The coding tables of y (the same for every model: see :func:`gaussian_tables`)."""
        return gaussian_tables(tail_mass)


@functools.lru_cache(maxsize=4)
def gaussian_tables(tail_mass: float = GAUSSIAN_TAIL) -> CodingTables:
    """One integer frequency table per table scale, from the box-convolved Gaussian in float64 (numpy and
    math.erfc only, so every machine gets the same integers). Table k covers [-R_k, R_k] with
    R_k = ceil(sigma_k x the Gaussian quantile of tail_mass / 2), plus the escape symbol."""
    from statistics import NormalDist

    quantile = -NormalDist().inv_cdf(tail_mass / 2)
    offsets, cdfs, digest = [], [], zlib.crc32(np.array([PRECISION, SCALE_LEVELS], dtype="<i8").tobytes())
    cdf_of = np.vectorize(lambda t: 0.5 * math.erfc(-t / math.sqrt(2)))
    for scale in scale_table():
        radius = int(math.ceil(scale * quantile))
        values = np.abs(np.arange(-radius, radius + 1, dtype=np.float64))
        pmf = cdf_of((0.5 - values) / scale) - cdf_of((-0.5 - values) / scale)
        escape = max(1.0 - pmf.sum(), 0.0)
        freqs = quantize_pmf(np.append(pmf, escape))
        cdf = np.concatenate([[0], np.cumsum(freqs)]).astype("<i8")
        offsets.append(-radius)
        cdfs.append(cdf.tolist())
        digest = zlib.crc32(np.array([-radius], dtype="<i8").tobytes() + cdf.tobytes(), digest)
    return CodingTables(offsets, cdfs, digest)


class HyperAnalysis(nn.Sequential):
    def __init__(self, channels: int, latent_channels: int):
        super().__init__(nn.Conv2d(latent_channels, channels, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 5, stride=2, padding=2), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 5, stride=2, padding=2))


class HyperSynthesis(nn.Sequential):
    def __init__(self, channels: int, latent_channels: int):
        super().__init__(nn.ConvTranspose2d(channels, channels, 5, stride=2, padding=2, output_padding=1),
                         nn.ReLU(inplace=True),
                         nn.ConvTranspose2d(channels, channels, 5, stride=2, padding=2, output_padding=1),
                         nn.ReLU(inplace=True), nn.Conv2d(channels, latent_channels, 3, padding=1),
                         nn.ReLU(inplace=True))  # scales are non-negative (the paper's last ReLU)


class ScaleHyperpriorCompressor(FactorizedPriorCompressor):
    """Ballé et al. 2018's scale hyperprior. ``entropy_model`` is the factorized density of z (N channels);
    ``conditional`` the Gaussian of y given the scales h_s(z~)."""

    kind = "hyperprior"
    downsampling = HYPER_DOWNSAMPLING

    def __init__(self, in_channels: int = 3, channels: int = 128, latent_channels: int = 192):
        nn.Module.__init__(self)
        self.in_channels, self.latent_channels, self.hyper_channels = in_channels, latent_channels, channels
        self.analysis = AnalysisTransform(in_channels, channels, latent_channels)
        self.synthesis = SynthesisTransform(in_channels, channels, latent_channels)
        self.hyper_analysis = HyperAnalysis(channels, latent_channels)
        self.hyper_synthesis = HyperSynthesis(channels, latent_channels)
        self.entropy_model = FactorizedEntropyModel(channels)
        self.conditional = GaussianConditional()

    def forward(self, x: torch.Tensor) -> CompressionOutput:
        self._check(x)
        y = self.analysis(x)
        z_hat, z_likelihoods = self.entropy_model(self.hyper_analysis(y.abs()))
        device = y.device.type
        # The scales and the Gaussian's cumulative in fp32 even under autocast: the tails are tiny differences.
        with torch.autocast(device, enabled=False) if device in ("cpu", "cuda") else contextlib.nullcontext():
            scales = self.hyper_synthesis(z_hat.float())
            y_hat, y_likelihoods = self.conditional(y.float(), scales)
        return CompressionOutput(self.synthesis(y_hat), y_likelihoods, z_likelihoods)

    @torch.no_grad()
    def quantized_latents(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(round(g_a(x)), round(h_a(|g_a(x)|))): the integers a file stores."""
        self._check(x)
        y = self.analysis(x).float()
        return torch.round(y), torch.round(self.hyper_analysis(y.abs()))

    @torch.no_grad()
    def scale_indexes(self, z: torch.Tensor, float64: bool = True) -> torch.Tensor:
        """Each latent element's coding table (on the CPU), from the decoded side information z (N, N', h, w).

        The encoder and the decoder must pick the same table for every element: one different pick derails the
        decoding of y from there on. So the scales are computed in float64 on the CPU, whatever the model's device
        and dtype. The table is log-spaced, 12 % apart, so a relative error e in the scales moves about 8e of them
        into another table: with TF32 convolutions on a GPU (e ~ 1e-3) hundreds of a Kodak image's, with float32
        sums in another order (another thread count or memory layout, e ~ 1e-7) now and then one.
        ``float64=False`` is format version 3's computation, in float32 on the model's device, kept to read
        version 3 files as the machine that wrote them did."""
        if not float64:
            return self.conditional.scale_indexes(self.hyper_synthesis(z.float())).cpu()
        weights = {name: p.detach().to("cpu", torch.float64) for name, p in self.hyper_synthesis.named_parameters()}
        scales = torch.func.functional_call(self.hyper_synthesis, weights, (z.detach().to("cpu", torch.float64),))
        return self.conditional.scale_indexes(scales)


@register_model(input_size=(3, 256, 256), num_classes=0, family="compression",
                paper="Ballé et al. 2018 (scale hyperprior)", min_input_size=HYPER_DOWNSAMPLING, task="compression")
def compress_hyperprior(num_classes: int = 0, in_channels: int = 3, channels: int = 128,
                        latent_channels: int = 192) -> ScaleHyperpriorCompressor:
    """GDN transforms, a factorized density for the side information z and a Gaussian with predicted scales for
    the latent y. ``channels`` is N (also z's channels), ``latent_channels`` M; ``num_classes`` is ignored."""
    return ScaleHyperpriorCompressor(in_channels, channels, latent_channels)
