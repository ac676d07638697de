"""Training a compressor through the one loop: the rate-distortion task.

    model = create_model("compress_factorized", channels=64, latent_channels=96)
    Trainer(model, load_dataset("cifar10"), TrainConfig(optimizer="adam", lr=1e-3, weight_decay=0),
            task=CompressionTask(lmbda=0.01)).fit()

The loss is Ballé et al.'s rate-distortion Lagrangian, lambda * D + R with D the mean squared error in 8-bit
units (255^2 MSE on [0, 1] pixels, as CompressAI scales it) and R the estimated bits per pixel. Larger lambda
buys quality with bits; the published lambdas for natural photographs run from about 0.0018 to 0.05.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..denoise import psnr
from ..errors import CnnkitError
from ..train.tasks import Task
from .model import CompressionOutput, pad_to_multiple


def bits_per_pixel(likelihoods: torch.Tensor, pixels: int) -> torch.Tensor:
    """Estimated bits per pixel of each image (N,): sum of -log2 P over its latent, over its pixel count."""
    return -torch.log2(likelihoods.float()).flatten(1).sum(1) / pixels


class CompressionTask(Task):
    """Inputs: images in [0, 1], replicate-padded to multiples of 16; targets: the unpadded images; metrics:
    the estimated bits per pixel (of the rounded latent in evaluation, which real files match within a few per
    cent) and PSNR of the reconstruction, clamped to [0, 1], in dB."""

    name = "compression"
    higher_is_better = ("psnr",)

    def __init__(self, lmbda: float = 0.01):
        if not lmbda > 0:
            raise CnnkitError(f"the rate-distortion weight lambda must be positive, got {lmbda}")
        self.lmbda = float(lmbda)

    def prepare(self, trainer, images, labels, train=False, generator=None):
        clean = images.float().div_(255)
        return pad_to_multiple(clean), clean

    @staticmethod
    def _crop(outputs: CompressionOutput, targets: torch.Tensor) -> torch.Tensor:
        return outputs.reconstruction[..., :targets.shape[-2], :targets.shape[-1]].float()

    def loss(self, trainer, outputs, targets):
        distortion = F.mse_loss(self._crop(outputs, targets), targets)
        rate = bits_per_pixel(outputs.likelihoods, targets.shape[-2] * targets.shape[-1]).mean()
        return self.lmbda * 255**2 * distortion + rate

    def metrics(self, outputs, targets):
        reconstruction = self._crop(outputs, targets).detach().clamp(0, 1)
        rate = bits_per_pixel(outputs.likelihoods.detach(), targets.shape[-2] * targets.shape[-1])
        return {"bpp": rate.sum(), "psnr": psnr(reconstruction, targets).sum()}

    def summarize(self, sums, count):
        return {key: sums[key].item() / max(count, 1) for key in ("bpp", "psnr")}

    def describe(self) -> dict:
        return {"name": self.name, "lmbda": self.lmbda}
