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
from .model import DOWNSAMPLING, CompressionOutput, pad_to_multiple


def bits_per_pixel(likelihoods: torch.Tensor, pixels: int, hyper_likelihoods: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """Estimated bits per pixel of each image (N,): sum of -log2 P over its latent (and a hyperprior's side
    information), over its pixel count."""
    bits = -torch.log2(likelihoods.float()).flatten(1).sum(1)
    if hyper_likelihoods is not None:
        bits = bits - torch.log2(hyper_likelihoods.float()).flatten(1).sum(1)
    return bits / pixels


def random_crops(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random ``size`` x ``size`` crop of each image of a batch (N, C, H, W), mirrored left-right with
    probability 1/2, gathered in one indexing operation on the batch (no per-image Python loop)."""
    n, c, height, width = images.shape
    if size > min(height, width):
        raise CnnkitError(f"a {size}x{size} crop does not fit {width}x{height} training images; choose a crop of at "
                          f"most {min(height, width)}")
    device = images.device
    top = torch.randint(0, height - size + 1, (n,), generator=generator, device=device)
    left = torch.randint(0, width - size + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    steps = torch.arange(size, device=device)
    rows = top[:, None] + steps
    cols = left[:, None] + torch.where(flip[:, None], steps.flip(0), steps)
    batch, channel = torch.arange(n, device=device), torch.arange(c, device=device)
    return images[batch[:, None, None, None], channel[None, :, None, None], rows[:, None, :, None],
                  cols[:, None, None, :]]


def downsampling_of(model) -> int:
    """The multiple a compressor pads images to, through a DDP or torch.compile wrapper."""
    for attribute in ("module", "_orig_mod"):
        model = getattr(model, attribute, model)
    return getattr(model, "downsampling", DOWNSAMPLING)


class CompressionTask(Task):
    """Inputs: images in [0, 1], replicate-padded to multiples of the model's downsampling (16, or 64 with a
    hyperprior); targets: the unpadded images; metrics: the estimated bits per pixel (of the rounded latent in
    evaluation, which real files match within a few per cent) and PSNR of the reconstruction, clamped to [0, 1],
    in dB. With ``crop``, every training batch is a random crop x crop window of each image, mirrored at random
    (natural photographs larger than the crop: many different views per epoch); evaluation sees whole images."""

    name = "compression"
    higher_is_better = ("psnr",)

    def __init__(self, lmbda: float = 0.01, crop: int | None = None):
        if not lmbda > 0:
            raise CnnkitError(f"the rate-distortion weight lambda must be positive, got {lmbda}")
        if crop is not None and crop < 1:
            raise CnnkitError(f"the training crop must be a positive number of pixels, got {crop}")
        self.lmbda, self.crop = float(lmbda), crop

    def prepare(self, trainer, images, labels, train=False, generator=None):
        if train and self.crop:
            images = random_crops(images, self.crop, generator)
        clean = images.float().div_(255)
        return pad_to_multiple(clean, downsampling_of(trainer.model)), clean

    @staticmethod
    def _crop(outputs: CompressionOutput, targets: torch.Tensor) -> torch.Tensor:
        return outputs.reconstruction[..., :targets.shape[-2], :targets.shape[-1]].float()

    def loss(self, trainer, outputs, targets):
        distortion = F.mse_loss(self._crop(outputs, targets), targets)
        rate = bits_per_pixel(outputs.likelihoods, targets.shape[-2] * targets.shape[-1],
                              outputs.hyper_likelihoods).mean()
        return self.lmbda * 255**2 * distortion + rate

    def metrics(self, outputs, targets):
        reconstruction = self._crop(outputs, targets).detach().clamp(0, 1)
        hyper = None if outputs.hyper_likelihoods is None else outputs.hyper_likelihoods.detach()
        rate = bits_per_pixel(outputs.likelihoods.detach(), targets.shape[-2] * targets.shape[-1], hyper)
        return {"bpp": rate.sum(), "psnr": psnr(reconstruction, targets).sum()}

    def summarize(self, sums, count):
        return {key: sums[key].item() / max(count, 1) for key in ("bpp", "psnr")}

    def describe(self) -> dict:
        return {"name": self.name, "lmbda": self.lmbda, **({"crop": self.crop} if self.crop else {})}
