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

from .data.augment import gaussian_blur, random_dihedral, random_patches
from .errors import CnnkitError
from .train.tasks import Task

NOISE_KINDS = ("gaussian", "salt-and-pepper")
EVAL_NOISE_SEED = 1234  # the same corruption of the test set every epoch and run, so figures compare


def add_noise(clean: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None,
              clip: bool = True) -> torch.Tensor:
    """Corrupt images in [0, 1]. ``gaussian``: add N(0, level^2), clipped to [0, 1] unless ``clip=False`` (the
    denoising literature's protocol, DnCNN and BM3D alike: additive white Gaussian noise, values outside [0, 1]
    kept, so the noise stays zero-mean and of known sigma); ``salt-and-pepper``: set a fraction ``level`` of the
    pixels to 0 or 1 (half each)."""
    if kind == "gaussian":
        noise = torch.randn(clean.shape, generator=generator, device=clean.device, dtype=clean.dtype)
        noisy = clean + level * noise
        return noisy.clamp_(0, 1) if clip else noisy
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

    def __init__(self, noise: str = "gaussian", level: float = 0.3, loss: str = "bce", clip: bool = True,
                 patch_size: int | None = None, patches_per_image: int = 1, augment: bool = False):
        if loss not in ("bce", "mse"):
            raise CnnkitError(f"unknown denoising loss {loss!r}; expected 'bce' (sigmoid outputs) or 'mse'")
        if noise not in NOISE_KINDS:
            raise CnnkitError(f"unknown noise {noise!r}; expected one of {', '.join(NOISE_KINDS)}")
        if not 0 < level <= (1 if noise == "salt-and-pepper" else 10):
            raise CnnkitError(f"noise level {level} is out of range: a standard deviation in (0, 10] for gaussian "
                              "noise (pixels are in [0, 1]), a fraction in (0, 1] for salt-and-pepper")
        if patch_size is not None and patch_size < 1 or patches_per_image < 1:
            raise CnnkitError(f"patch_size ({patch_size}) and patches_per_image ({patches_per_image}) must be "
                              "positive")
        self.noise, self.level, self.loss_name, self.clip = noise, level, loss, clip
        self.patch_size, self.patches_per_image, self.augment = patch_size, patches_per_image, augment
        self._eval_generators: dict = {}
        self._outputs_per_image = 1

    def prepare(self, trainer, images, labels, train=False, generator=None):
        """Training with ``patch_size``: ``patches_per_image`` random square patches of each image, turned and
        mirrored at random with ``augment`` (DnCNN's 40x40 patches of Train400, in 8 symmetries); evaluation
        reads the images whole."""
        self._outputs_per_image = 1
        if train and self.patch_size is not None:
            images = random_patches(images, self.patch_size, self.patches_per_image, generator)
            self._outputs_per_image = self.patches_per_image
        if train and self.augment:
            images = random_dihedral(images, generator)
        clean = images.float().div_(255)
        if generator is None:  # evaluation: a fixed noise sequence, restarted at each evaluation pass
            generator = self._eval_generator(clean.device)
        return add_noise(clean, self.noise, self.level, generator, clip=self.clip), clean

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
        # The loop counts images, not patches: with several patches per image, a patch weighs 1/patches so the
        # sums over an epoch, divided by its image count, are the means over its patches.
        weight = 1.0 / self._outputs_per_image
        return {"psnr": psnr(outputs, targets).sum() * weight, "ssim": ssim(outputs, targets).sum() * weight}

    def summarize(self, sums, count):
        return {key: sums[key].item() / max(count, 1) for key in ("psnr", "ssim")}

    def describe(self) -> dict:
        described = {"name": self.name, "noise": self.noise, "level": self.level, "loss": self.loss_name}
        if not self.clip:
            described["clip"] = False
        if self.patch_size is not None:
            described.update(patch_size=self.patch_size, patches_per_image=self.patches_per_image)
        if self.augment:
            described["augment"] = "dihedral"
        return described


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
    """Denoise one uint8 (C,H,W) image of any size: padded by reflection to the model's size multiple (4 for the
    autoencoder, which halves the size twice; 1 for a fully convolutional DnCNN), run, cropped back. Returns
    floats in [0, 1]."""
    model.eval()
    return _padded_forward(model, image.float().div(255)[None])[0].clamp(0, 1)


def _padded_forward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model on a (1,C,H,W) batch padded by reflection to its size multiple, cropped back to H x W."""
    h, w = x.shape[-2:]
    multiple = getattr(model, "size_multiple", 4)
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    mode = "reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
    return model(F.pad(x, (0, pad_w, 0, pad_h), mode=mode))[..., :h, :w]


# Full test images of any size (BSD68, Set12): the denoising literature's protocol ---------------------------
# Zhang et al. 2017 (and the authors' test code): additive white Gaussian noise of sigma/255 on each whole image,
# not clipped; the estimate is saved as an 8-bit image (clipped, rounded) before PSNR and SSIM against the clean
# 8-bit image, each image scored alone and the scores averaged over the set.


def noisy_test_images(images: list[torch.Tensor], level: float, seed: int = EVAL_NOISE_SEED) -> list[torch.Tensor]:
    """Float (C,H,W) copies of uint8 ``images`` with unclipped Gaussian noise of std ``level`` (in [0, 1] units),
    drawn in order from one generator seeded ``seed``: every method compared sees the same noisy images."""
    generator = torch.Generator().manual_seed(seed)
    return [add_noise(image.float() / 255, "gaussian", level, generator, clip=False) for image in images]


def to_8bit_levels(image: torch.Tensor) -> torch.Tensor:
    """What saving ``image`` (floats, nominally [0, 1]) as an 8-bit file keeps: clipped, rounded to 1/255."""
    return image.clamp(0, 1).mul(255).round().div(255)


def score_estimates(estimates: list[torch.Tensor], images: list[torch.Tensor]) -> dict:
    """Per-image and mean PSNR and SSIM of float (C,H,W) ``estimates`` against uint8 ``images``, the estimates
    first reduced to 8 bits."""
    psnrs, ssims = [], []
    for estimate, image in zip(estimates, images, strict=True):
        clean = image.float()[None] / 255
        quantised = to_8bit_levels(estimate.float()[None])
        psnrs.append(psnr(quantised, clean).item())
        ssims.append(ssim(quantised, clean).item())
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims), "per_image_psnr": psnrs,
            "per_image_ssim": ssims}


@torch.no_grad()
def denoise_full_images(model: torch.nn.Module, noisy: list[torch.Tensor]) -> list[torch.Tensor]:
    """The model's output for each noisy float (C,H,W) image, whole (no tiling: DnCNN's receptive field then sees
    the image as the authors' test code does); padded by reflection to the autoencoder's multiple of 4 (BSD68's
    481x321) and cropped back, as denoise_image does."""
    model.eval()
    device = next(model.parameters()).device
    return [_padded_forward(model, image[None].to(device))[0].cpu() for image in noisy]


def gaussian_filter_images(noisy: list[torch.Tensor], sigma: float) -> list[torch.Tensor]:
    """The classical baseline of a low-pass filter: each image blurred by a Gaussian of std ``sigma`` pixels."""
    return [gaussian_blur(image[None], sigma)[0] for image in noisy]


def tune_gaussian_filter(images: list[torch.Tensor], level: float, sigmas=(0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0),
                         seed: int = EVAL_NOISE_SEED) -> float:
    """The blur (from ``sigmas``) with the best mean PSNR on ``images`` (training images, never the test set)
    at noise ``level``."""
    noisy = noisy_test_images(images, level, seed)
    return max(sigmas, key=lambda sigma: score_estimates(gaussian_filter_images(noisy, sigma), images)["psnr"])


__all__ = ["NOISE_KINDS", "DenoisingTask", "add_noise", "denoise_full_images", "denoise_image", "denoising_report",
           "gaussian_filter_images", "noisy_test_images", "psnr", "score_estimates", "ssim", "to_8bit_levels",
           "tune_gaussian_filter"]
