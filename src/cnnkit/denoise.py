"""Image denoising with convolutional autoencoders (the notes, seeds 004: "Applications: image de-noising",
"Remembering convolutional auto-encoders" and the bottleneck-size example of Lindsey et al., ICLR 2019).

A denoising autoencoder (Vincent et al. 2008) is trained to map a corrupted image back to the clean one; the
bottleneck (``conv_autoencoder(bottleneck_channels=...)``) limits what it can copy, so it must learn what
digits and garments look like rather than the noise. Training goes through the one loop:

    data = load_dataset("mnist")
    model = create_model("conv_autoencoder", bottleneck_channels=16)
    config = TrainConfig(epochs=3, optimizer="adam", lr=3e-3, weight_decay=0)
    Trainer(model, data, config, task=DenoisingTask("gaussian", 0.3)).fit()

Pixels stay in [0, 1] (no mean/std normalisation) because the autoencoder ends in a sigmoid and PSNR/SSIM are
defined on the image itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import CnnkitError
from .train.tasks import Task

NOISE_KINDS = ("gaussian", "salt-and-pepper")
EVAL_NOISE_SEED = 1234  # the same corruption of the test set every epoch and run, so figures compare


def add_noise(clean: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt images in [0, 1]. ``gaussian``: add N(0, level^2) and clip to [0, 1]; ``salt-and-pepper``: set a
    fraction ``level`` of the pixels to 0 or 1 (half each)."""
    if kind == "gaussian":
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        return (clean + level * noise).clamp_(0, 1)
    if kind == "salt-and-pepper":
        draw = torch.rand(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        noisy = clean.clone()
        noisy[draw < level / 2] = 0.0
        noisy[(draw >= level / 2) & (draw < level)] = 1.0
        return noisy
    raise CnnkitError(f"unknown noise {kind!r}; expected one of {', '.join(NOISE_KINDS)}")


def psnr(estimate: torch.Tensor, reference: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (N,), 10 log10(peak^2 / MSE); a perfect estimate is capped
    at 100 dB instead of infinity so means stay finite."""
    mse = (estimate.float() - reference.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp_min(peak**2 * 1e-10))


def _gaussian_window(size: int, sigma: float, channels: int, device) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(estimate: torch.Tensor, reference: torch.Tensor, peak: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (N,) (Wang et al. 2004): local means, variances and covariance under an
    11x11 Gaussian window (sigma 1.5), C1 = (0.01 L)^2, C2 = (0.03 L)^2, averaged over the valid windows."""
    x, y = estimate.float(), reference.float()
    channels = x.shape[1]
    w = _gaussian_window(min(window, x.shape[-1], x.shape[-2]), sigma, channels, x.device)

    def blur(t):
        return F.conv2d(t, w, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return index.flatten(1).mean(1)


class DenoisingTask(Task):
    """Inputs: the clean images with fresh noise (seeded by the epoch's generator, so resume stays exact);
    targets: the clean images; metrics: PSNR and SSIM of the output.

    The default loss is per-pixel binary cross-entropy: with the autoencoder's sigmoid output, mean squared
    error lets an early step saturate the sigmoid at 0 (MNIST is mostly black, so "all black" is a deep local
    minimum, PSNR ~10 dB) where its gradient vanishes; cross-entropy's gradient does not. ``loss="mse"`` is
    the alternative for models with a linear output."""

    name = "denoising"
    higher_is_better = ("psnr", "ssim")

    def __init__(self, noise: str = "gaussian", level: float = 0.3, loss: str = "bce"):
        if loss not in ("bce", "mse"):
            raise CnnkitError(f"unknown denoising loss {loss!r}; expected 'bce' (sigmoid outputs) or 'mse'")
        if noise not in NOISE_KINDS:
            raise CnnkitError(f"unknown noise {noise!r}; expected one of {', '.join(NOISE_KINDS)}")
        if not 0 < level <= (1 if noise == "salt-and-pepper" else 10):
            raise CnnkitError(f"noise level {level} is out of range: a standard deviation in (0, 10] for gaussian "
                              "noise (pixels are in [0, 1]), a fraction in (0, 1] for salt-and-pepper")
        self.noise, self.level, self.loss_name = noise, level, loss
        self._eval_generators: dict = {}

    def prepare(self, trainer, images, labels, train=False, generator=None):
        clean = images.float().div_(255)
        if generator is None:  # evaluation: a fixed noise sequence, restarted at each evaluation pass
            generator = self._eval_generator(clean.device)
        return add_noise(clean, self.noise, self.level, generator), clean

    def _eval_generator(self, device) -> torch.Generator:
        key = str(device)
        if key not in self._eval_generators:
            self._eval_generators[key] = torch.Generator(device=device).manual_seed(EVAL_NOISE_SEED)
        return self._eval_generators[key]

    def evaluate(self, trainer, dataset, **options) -> dict:
        self._eval_generators.clear()  # every evaluation sees the same corrupted test set
        return super().evaluate(trainer, dataset, **options)

    def loss(self, trainer, outputs, targets):
        if self.loss_name == "bce":
            return F.binary_cross_entropy(outputs.float(), targets)
        return F.mse_loss(outputs.float(), targets)

    def metrics(self, outputs, targets):
        outputs = outputs.detach().float().clamp(0, 1)
        return {"psnr": psnr(outputs, targets).sum(), "ssim": ssim(outputs, targets).sum()}

    def summarize(self, sums, count):
        return {key: sums[key].item() / max(count, 1) for key in ("psnr", "ssim")}

    def describe(self) -> dict:
        return {"name": self.name, "noise": self.noise, "level": self.level, "loss": self.loss_name}


@torch.no_grad()
def denoising_report(model: torch.nn.Module, images: torch.Tensor, noise: str, level: float,
                     batch_size: int = 1000, seed: int = EVAL_NOISE_SEED) -> dict:
    """PSNR and SSIM (means over ``images``, uint8 (N,C,H,W)) of the noisy input and of the model's output."""
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    sums = {"noisy_psnr": 0.0, "noisy_ssim": 0.0, "denoised_psnr": 0.0, "denoised_ssim": 0.0}
    for start in range(0, len(images), batch_size):
        clean = images[start:start + batch_size].to(device).float().div_(255)
        noisy = add_noise(clean, noise, level, generator)
        denoised = model(noisy).clamp(0, 1)
        for name, estimate in (("noisy", noisy), ("denoised", denoised)):
            sums[f"{name}_psnr"] += psnr(estimate, clean).sum().item()
            sums[f"{name}_ssim"] += ssim(estimate, clean).sum().item()
    report = {k: v / len(images) for k, v in sums.items()}
    report["psnr_gain_db"] = report["denoised_psnr"] - report["noisy_psnr"]
    return report


@torch.no_grad()
def denoise_image(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Denoise one uint8 (C,H,W) image of any size: padded by reflection to the autoencoder's multiple of 4,
    run, cropped back. Returns floats in [0, 1]."""
    model.eval()
    x = image.float().div(255)[None]
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % 4, (-w) % 4
    mode = "reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
    x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return model(x)[0, :, :h, :w].clamp(0, 1)


__all__ = ["NOISE_KINDS", "DenoisingTask", "add_noise", "denoise_image", "denoising_report", "psnr", "ssim"]
