"""Generalized divisive normalization (Ballé, Laparra, Simoncelli, "Density modeling of images using a
generalized normalization transformation", ICLR 2016, eq. 5; used as the nonlinearity of "End-to-end optimized
image compression", ICLR 2017, sec. 2):

    GDN:   y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    IGDN:  x_i = y_i * sqrt(beta_i + sum_j gamma_ij y_j^2)      (the 2017 paper's one-step approximate inverse)

beta must stay positive and gamma non-negative. Following Ballé 2017 (and tensorflow-compression), each is
stored as sqrt(value + pedestal) and read back through a lower bound whose gradient still pushes a parameter
that fell below it upwards; a plain clamp would freeze it there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PEDESTAL = 2.0**-36  # (2^-18)^2: keeps the square root's gradient finite at zero


class _LowerBound(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, bound: float):
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # Pass the gradient where x is above the bound, or where descending would raise x back above it.
        return grad * ((x >= ctx.bound) | (grad < 0)).to(grad.dtype), None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """max(x, bound), with a gradient that can lift x back over the bound."""
    return _LowerBound.apply(x, bound)


def _to_stored(value: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(value + PEDESTAL)


def _from_stored(stored: torch.Tensor, minimum: float) -> torch.Tensor:
    return lower_bound(stored, (minimum + PEDESTAL) ** 0.5) ** 2 - PEDESTAL


class GDN(nn.Module):
    """GDN over the channels of (N, C, H, W) maps; ``inverse=True`` is IGDN. Initialised as in Ballé 2017:
    beta = 1, gamma = 0.1 I, so a fresh layer is close to the identity for small inputs."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.channels, self.inverse, self.beta_min = channels, inverse, beta_min
        self.beta_stored = nn.Parameter(_to_stored(torch.ones(channels)))
        self.gamma_stored = nn.Parameter(_to_stored(gamma_init * torch.eye(channels)))

    @property
    def beta(self) -> torch.Tensor:
        return _from_stored(self.beta_stored, self.beta_min)

    @property
    def gamma(self) -> torch.Tensor:
        return _from_stored(self.gamma_stored, 0.0)

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        """beta_i + sum_j gamma_ij x_j^2 at every position: a 1x1 convolution of the squares."""
        return F.conv2d(x * x, self.gamma[:, :, None, None], self.beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sqrt(self.norm(x)) if self.inverse else x * torch.rsqrt(self.norm(x))

    @torch.no_grad()
    def invert(self, y: torch.Tensor, iterations: int = 30) -> torch.Tensor:
        """The exact inverse of this layer by fixed-point iteration (Ballé et al. 2016, sec. 3), started from the
        one-step approximation: for GDN, x <- y sqrt(norm(x)); for IGDN, x <- y / sqrt(norm(x)). It converges
        for the moderate activations these layers see; the compression model itself never needs it."""
        x = y  # the first step is the one-step approximation
        for _ in range(iterations):
            x = y * (torch.rsqrt(self.norm(x)) if self.inverse else torch.sqrt(self.norm(x)))
        return x

    def extra_repr(self) -> str:
        return f"{self.channels}, inverse={self.inverse}"


class IGDN(GDN):
    """Inverse GDN, the synthesis transform's nonlinearity (Ballé et al. 2017)."""

    def __init__(self, channels: int, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__(channels, inverse=True, beta_min=beta_min, gamma_init=gamma_init)
