"""The factorized entropy model of the latent (Ballé, Minnen, Singh, Hwang, Johnston, "Variational image
compression with a scale hyperprior", ICLR 2018, appendix 6.1; the "factorized prior" of its sec. 4, which
replaces the piecewise-linear densities of Ballé et al. 2017).

Every latent channel c has its own density p_c, shared by all positions. Its cumulative is a small monotone
network of the value, c(x) = sigmoid(f_K(...f_1(x))), f_k(x) = g_k(H_k x + b_k), g_k(x) = x + a_k * tanh(x),
with H_k = softplus(.) >= 0 and a_k = tanh(.) > -1 so every f_k increases with x. A quantised latent y (an
integer) then has probability P(y) = c(y + 1/2) - c(y - 1/2): the density convolved with the unit box, which is
exactly the density of y + U(-1/2, 1/2), the training-time stand-in for rounding (Ballé et al. 2017, sec. 2).

The rate R = sum -log2 P(y) is what training minimises; :meth:`FactorizedEntropyModel.coding_tables` quantises
the same P to integer frequencies for the entropy coder, so a file costs R bits plus a little.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .gdn import lower_bound
PRECISION = 16  # the coding tables' integer frequencies sum to 2**PRECISION

LIKELIHOOD_BOUND = 1e-9  # keeps -log2 P finite for values the density has not learnt yet
TABLE_RANGE = 1024  # coding tables cover latent values in [-1024, 1024]; anything else is escaped
TAIL_MASS = 1e-7  # probability left to the escape symbol on either side of a channel's table


@dataclasses.dataclass(frozen=True)
class CodingTables:
    """Integer frequency tables for the entropy coder, one per latent channel. Symbol k of channel c is the value
    ``offsets[c] + k``; its last symbol is the escape, for values outside the table."""

    offsets: list[int]
    cdfs: list[list[int]]  # cumulative frequencies, cdf[0] = 0 ... cdf[-1] = 2**PRECISION
    fingerprint: int  # CRC-32 of all tables: a file records it, so decoding with another model is refused


def _cumulative_logits(x: torch.Tensor, layers) -> torch.Tensor:
    """logit c(x) for x of shape (C, 1, n), with ``layers`` a list of (matrix, bias, factor or None)."""
    for matrix, bias, factor in layers:
        x = torch.matmul(F.softplus(matrix), x) + bias
        if factor is not None:
            x = x + torch.tanh(factor) * torch.tanh(x)
    return x


def _tail_side(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """-1 above the median, +1 below: flipping the logits there turns 1 - tiny - (1 - tinier) into tinier - tiny."""
    return torch.where(lower + upper > 0, -1.0, 1.0).to(lower.dtype)


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies summing to 2**precision, each at least 1 (every symbol stays codable), as close to
    ``pmf`` as flooring and handing the remainder to the largest fractional parts gets."""
    total, count = 1 << precision, len(pmf)
    if count > total:
        raise ValueError(f"{count} symbols do not fit {precision}-bit frequencies")
    scaled = pmf / pmf.sum() * (total - count)
    freqs = np.floor(scaled).astype(np.int64) + 1
    remainder = int(total - freqs.sum())
    freqs[np.argsort(-(scaled - np.floor(scaled)), kind="stable")[:remainder]] += 1
    return freqs


class FactorizedEntropyModel(nn.Module):
    """p(y) of a latent (N, C, H, W) as a product of one learnt density per channel.

    ``filters`` are the hidden widths of each channel's cumulative network ((3, 3, 3) in Ballé 2018);
    ``init_scale`` the initial spread of the densities (10: broad, the latent starts small and grows)."""

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0):
        super().__init__()
        self.channels, self.filters = channels, tuple(filters)
        widths = (1, *self.filters, 1)
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices, self.biases, self.factors = nn.ParameterList(), nn.ParameterList(), nn.ParameterList()
        for k in range(len(widths) - 1):
            # softplus(init) = 1 / (scale * fan_out): the composed map starts as a gentle slope 1 / init_scale.
            init = math.log(math.expm1(1 / scale / widths[k + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[k + 1], widths[k]), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, widths[k + 1], 1) - 0.5))
            if k < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[k + 1], 1)))

    def _layers(self, dtype=None, device=None):
        factors = list(self.factors) + [None]
        return [tuple(None if p is None else p.to(dtype=dtype, device=device) for p in layer)
                for layer in zip(self.matrices, self.biases, factors)]

    def likelihood(self, values: torch.Tensor) -> torch.Tensor:
        """P(value) = c(value + 1/2) - c(value - 1/2) per element of (N, C, H, W) ``values``, bounded below."""
        n, c, h, w = values.shape
        x = values.transpose(0, 1).reshape(c, 1, -1)
        layers = self._layers()
        lower = _cumulative_logits(x - 0.5, layers)
        upper = _cumulative_logits(x + 0.5, layers)
        # Difference of sigmoids on the side where both are small, so a far tail does not cancel to zero.
        sign = _tail_side(lower, upper).detach()
        likelihood = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs()
        likelihood = lower_bound(likelihood, LIKELIHOOD_BOUND)
        return likelihood.reshape(c, n, h, w).transpose(0, 1)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantised latent, its likelihoods): uniform noise in training (a differentiable stand-in for
        rounding), rounding in evaluation. Computed in fp32 even under autocast."""
        device = latent.device.type
        with torch.autocast(device, enabled=False) if device in ("cpu", "cuda") else contextlib.nullcontext():
            latent = latent.float()
            if self.training:
                quantised = latent + torch.rand_like(latent) - 0.5
            else:
                quantised = torch.round(latent)
            return quantised, self.likelihood(quantised)

    @torch.no_grad()
    def coding_tables(self, table_range: int = TABLE_RANGE, tail_mass: float = TAIL_MASS) -> CodingTables:
        """The densities quantised to integer frequencies for the entropy coder. Computed in float64 on the CPU so
        that the encoder and the decoder, which each build them from the same weights, get the same integers."""
        layers = self._layers(torch.float64, "cpu")
        edges = torch.arange(-table_range, table_range + 2, dtype=torch.float64) - 0.5  # v - 1/2 for every v
        logits = _cumulative_logits(edges.expand(self.channels, 1, -1), layers)[:, 0]
        lower, upper = logits[:, :-1], logits[:, 1:]  # logit c(v - 1/2), logit c(v + 1/2)
        sign = _tail_side(lower, upper)
        pmf = (torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower)).abs().numpy()
        # Keep the values with more than tail_mass / 2 of probability beyond them on either side.
        keep = ((torch.sigmoid(upper) > tail_mass / 2) & (torch.sigmoid(-lower) > tail_mass / 2)).numpy()
        offsets, cdfs = [], []
        digest = zlib.crc32(np.array([PRECISION, table_range], dtype="<i8").tobytes())
        for channel in range(self.channels):
            inside = np.flatnonzero(keep[channel])
            first, last = (inside[0], inside[-1]) if len(inside) else (pmf[channel].argmax(),) * 2
            probabilities = pmf[channel, first:last + 1]
            escape = max(1.0 - probabilities.sum(), 0.0)
            freqs = quantize_pmf(np.append(probabilities, escape))
            cdf = np.concatenate([[0], np.cumsum(freqs)]).astype("<i8")
            offsets.append(int(first) - table_range)
            cdfs.append(cdf.tolist())
            digest = zlib.crc32(np.array([offsets[-1]], dtype="<i8").tobytes() + cdf.tobytes(), digest)
        return CodingTables(offsets, cdfs, digest)
