"""Image-to-image translation with pix2pix (Isola et al., CVPR 2017; the notes' last deck) on data we have, offline:

    kind       data (default)          input -> target
    colorize   cifar10 (the JPEG copy)  grey (ITU-R BT.601 luma) -> RGB
    edges      fashion-mnist            binary Sobel edges of the item -> the item
    inpaint    cifar10                  the image with a mid-grey square (12x12 at 32 px) at a random place -> the image

    data = load_dataset("cifar10")
    model = create_translator("colorize", 3)        # pix2pix: 1 channel in, 3 out, keeping the luminance
    Trainer(model, data, TrainConfig(epochs=5, **PIX2PIX_TRAINING), task=Pix2PixTask("colorize")).fit()
    Pix2PixTask("colorize", adversarial_weight=0)   # the paper's ablation: an L1-only U-Net (same generator)

The generator minimises lambda * L1(G(x), y) + BCE(D(x, G(x)), real) with lambda = 100 (§3.1, eq. 4); the
PatchGAN discriminator D minimises BCE(D(x, y), real) + BCE(D(x, G(x)), fake), halved (§3.3). Inputs and
targets are scaled to [-1, 1]; reported L1 (mean absolute error), PSNR and SSIM are on [0, 1] pixels, over
all pixels and channels. Inputs are derived on the fly from the target images: inpainting squares are drawn
from the epoch's generator in training (exact resume) and from a fixed seed in evaluation, and evaluation
seeds the generator's test-time dropout, so every evaluation sees the same inputs and noise.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import load_dataset
from .data.formats import read_image
from .denoise import psnr, ssim
from .errors import CnnkitError, ImageError, ShapeError
from .gan import GANTask
from .models.pix2pix import LUMA
from .models.registry import create_model
from .train.recipes import PIX2PIX_TRAINING
from .train.tasks import Task

KINDS = ("colorize", "edges", "inpaint")
DEFAULT_DATA = {"colorize": "cifar10", "edges": "fashion-mnist", "inpaint": "cifar10"}
EVAL_SEED = 2017


def to_grey(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma; grey images pass through."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def sobel_edges(images: torch.Tensor, threshold: float | None = 0.25) -> torch.Tensor:
    """Edges of (N, C, H, W) images in [0, 1]: the Sobel gradient magnitude of their luma, divided by 4 (a
    sharp 0 -> 1 step gives 1), and with ``threshold`` binarised (1 where the magnitude exceeds it)."""
    grey = to_grey(images)
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=grey.dtype,
                            device=grey.device)
    kernels = torch.stack([kernel_x, kernel_x.T])[:, None]
    gradients = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = gradients.square().sum(1, keepdim=True).sqrt() / 4
    return magnitude.clamp(0, 1) if threshold is None else (magnitude > threshold).to(grey.dtype)


def mask_square(images: torch.Tensor, size: int, generator: torch.Generator | None = None,
                fill: float = 0.5) -> torch.Tensor:
    """A ``size`` x ``size`` square of ``fill`` (mid-grey) at a uniformly random place in each image."""
    n, _, height, width = images.shape
    if size >= min(height, width):
        raise ShapeError(f"an inpainting square of {size} pixels does not fit {height}x{width} images; use a smaller "
                         "mask_size")
    top = torch.randint(0, height - size + 1, (n,), generator=generator, device=images.device)
    left = torch.randint(0, width - size + 1, (n,), generator=generator, device=images.device)
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = ((rows >= top.view(n, 1, 1)) & (rows < top.view(n, 1, 1) + size)
              & (cols >= left.view(n, 1, 1)) & (cols < left.view(n, 1, 1) + size))
    return torch.where(inside[:, None], torch.full_like(images, fill), images)


def make_input(kind: str, targets: torch.Tensor, generator: torch.Generator | None = None, mask_size: int = 12,
               edge_threshold: float = 0.25) -> torch.Tensor:
    """The model's input for target images in [0, 1] (N, C, H, W): grey, Sobel edges or a masked square."""
    if kind == "colorize":
        if targets.shape[1] != 3:
            raise ShapeError(f"colorize turns grey into colour: it needs RGB targets, got {targets.shape[1]}-channel "
                             "images; use cifar10 (or an RGB image folder)")
        return to_grey(targets)
    if kind == "edges":
        return sobel_edges(targets, edge_threshold)
    if kind == "inpaint":
        return mask_square(targets, mask_size, generator)
    raise CnnkitError(f"unknown translation {kind!r}; expected one of {', '.join(KINDS)}")


def input_channels(kind: str, target_channels: int) -> int:
    return target_channels if kind == "inpaint" else 1


def create_translator(kind: str, target_channels: int, base_channels: int = 32, **kwargs) -> nn.Module:
    """A ``pix2pix`` model for a translation of images with ``target_channels`` channels: the input channels the
    kind feeds, colourisation keeping the input's luminance, ``base_channels`` wide (64 in the paper)."""
    return create_model("pix2pix", in_channels=input_channels(kind, target_channels), out_channels=target_channels,
                        base_channels=base_channels, discriminator_channels=base_channels,
                        keep_luminance=kind == "colorize", **kwargs)


class Pix2PixTask(Task):
    """pix2pix training for a model with ``generator``, ``discriminator`` and ``discriminate(x, y)``
    (``pix2pix``); ``adversarial_weight=0`` trains the generator on L1 alone (the discriminator is left
    untouched). Per-epoch metrics: ``l1``, ``psnr``, ``ssim`` of the output against the target; in training
    also ``g_adv`` (the generator's adversarial loss) and ``d_loss``. ``loss`` is the generator's objective in
    training (lambda L1 + adversarial) and its L1 term lambda L1 in evaluation (which has no discriminator)."""

    name = "pix2pix"
    runs_own_step = True  # train_step: a discriminator update, then a generator update
    higher_is_better = ("psnr", "ssim")

    def __init__(self, kind: str, l1_weight: float = 100.0, adversarial_weight: float = 1.0, mask_size: int = 12,
                 edge_threshold: float = 0.25):
        if kind not in KINDS:
            raise CnnkitError(f"unknown translation {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind, self.l1_weight, self.adversarial_weight = kind, float(l1_weight), float(adversarial_weight)
        self.mask_size, self.edge_threshold = mask_size, edge_threshold
        self._eval_generators: dict = {}

    def input_channels(self, data) -> int:
        return input_channels(self.kind, data.image_shape[0])

    def prepare(self, trainer, images, labels, train=False, generator=None):
        targets = images.float().div_(255)
        if generator is None:  # evaluation: the same squares every time
            key = str(targets.device)
            if key not in self._eval_generators:
                self._eval_generators[key] = torch.Generator(device=targets.device).manual_seed(EVAL_SEED)
            generator = self._eval_generators[key]
        inputs = make_input(self.kind, targets, generator, self.mask_size, self.edge_threshold)
        return inputs * 2 - 1, targets * 2 - 1

    @staticmethod
    def _check_channels(outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if outputs.shape[1] != targets.shape[1]:
            raise ShapeError(f"the generator makes {outputs.shape[1]}-channel images but the targets have "
                             f"{targets.shape[1]}; build pix2pix with out_channels={targets.shape[1]}")

    def train_step(self, trainer, inputs, targets, generator):
        model = trainer.model
        count = len(inputs)
        with trainer.autocast():
            outputs = model(inputs)
        outputs = outputs.float()
        self._check_channels(outputs, targets)
        extra = {}
        adversarial = torch.zeros((), device=inputs.device)
        if self.adversarial_weight:
            with trainer.autocast():
                real_logits = model.discriminate(inputs, targets).float()
                fake_logits = model.discriminate(inputs, outputs.detach()).float()
            d_loss = 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))
            GANTask._step(trainer, d_loss, model.discriminator)
            model.discriminator.requires_grad_(False)
        try:
            if self.adversarial_weight:
                with trainer.autocast():
                    logits = model.discriminate(inputs, outputs).float()
                adversarial = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
                extra = {"g_adv": adversarial.detach() * count, "d_loss": d_loss.detach() * count}
            loss = self.l1_weight * (outputs - targets).abs().mean() + self.adversarial_weight * adversarial
            GANTask._step(trainer, loss, model.generator)
        finally:
            model.discriminator.requires_grad_(True)
        trainer.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), {**self.metrics(outputs, targets), **extra}

    def loss(self, trainer, outputs, targets):
        self._check_channels(outputs, targets)
        return self.l1_weight * (outputs.float() - targets).abs().mean()

    def metrics(self, outputs, targets):
        estimate = outputs.detach().float().add(1).div(2).clamp(0, 1)
        reference = targets.add(1).div(2)
        return {"l1": (estimate - reference).abs().flatten(1).mean(1).sum(),
                "psnr": psnr(estimate, reference).sum(), "ssim": ssim(estimate, reference).sum()}

    def summarize(self, sums, count):
        return {key: value.item() / max(count, 1) for key, value in sums.items()}

    def evaluate(self, trainer, dataset, **options) -> dict:
        self._eval_generators.clear()
        with torch.random.fork_rng():  # test-time dropout from a fixed seed; training's streams continue
            torch.manual_seed(EVAL_SEED)
            return super().evaluate(trainer, dataset, **options)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "l1_weight": self.l1_weight,
                "adversarial_weight": self.adversarial_weight, "mask_size": self.mask_size,
                "edge_threshold": self.edge_threshold}


def load_translation_data(kind: str, data: str | None = None):
    """The dataset a translation trains on: ``data`` or the kind's default (see the module docstring)."""
    if kind not in KINDS:
        raise CnnkitError(f"unknown translation {kind!r}; expected one of {', '.join(KINDS)}")
    return load_dataset(data or DEFAULT_DATA[kind])


@torch.no_grad()
def translate_batch(model: nn.Module, inputs: torch.Tensor, seed: int = EVAL_SEED) -> torch.Tensor:
    """Generator outputs in [0, 1] for inputs in [0, 1] (N, C, H, W), dropout noise seeded by ``seed``."""
    model.eval()
    device = next(model.parameters()).device
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return model(inputs.to(device) * 2 - 1).add(1).div(2).clamp(0, 1)


def image_channels(path: str | Path) -> int:
    """Colour channels of an image file without converting it (alpha not counted; palette images are RGB)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return 3 if im.mode == "P" else len([band for band in im.getbands() if band != "A"])
    except FileNotFoundError:
        raise ImageError(f"{path}: no such image file.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path} is not a readable image ({exc}). Use a PNG, JPEG, BMP, GIF or TIFF file.") from None


def read_translation_input(path: str | Path, meta: dict, make: bool = False,
                           seed: int = EVAL_SEED) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's input (1, C, H, W) in [0, 1] for an image file, and, with ``make``, the derived input's
    source picture. Without ``make`` the image must already have the model's channel count."""
    task = meta["task"]
    expected = meta["model"]["in_channels"]
    if make:
        target = read_image(path, meta["image_shape"][0]).float().div(255)[None]
        generator = torch.Generator().manual_seed(seed)
        return make_input(task["kind"], target, generator, task.get("mask_size", 12),
                          task.get("edge_threshold", 0.25)), target
    found = image_channels(path)
    if found != expected:
        names = {1: "grey", 3: "RGB"}
        derived = {"colorize": "a grey version", "edges": "its Sobel edges", "inpaint": "a copy with a masked square"}
        raise ImageError(f"{path} has {found} channel(s) ({names.get(found, 'unsupported')}) but this {task['kind']} "
                         f"model reads {expected}-channel ({names.get(expected, '?')}) images. Convert it, or pass "
                         f"--make-input to feed the model {derived[task['kind']]} of the picture.")
    return read_image(path, expected).float().div(255)[None], None


__all__ = ["KINDS", "PIX2PIX_TRAINING", "Pix2PixTask", "create_translator", "image_channels", "input_channels",
           "load_translation_data",
           "make_input", "mask_square", "read_translation_input", "sobel_edges", "to_grey", "translate_batch"]
