"""Image-to-image translation with pix2pix (Isola et al., CVPR 2017; the notes' last deck) on data we have, offline:

    kind       data (default)          input -> target
    colorize   cifar10 (the JPEG copy)  grey (ITU-R BT.601 luma) -> RGB
    edges      fashion-mnist            binary Sobel edges of the item -> the item
    inpaint    cifar10                  the image with a mid-grey square (12x12 at 32 px) at a random place, and
                                        that hole's mask as a 4th channel -> the image, composited into the hole

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


def square_masks(count: int, height: int, width: int, size: int, generator: torch.Generator | None = None,
                 device=None) -> torch.Tensor:
    """(count, 1, height, width) bool hole masks: a ``size`` x ``size`` square (True) at a uniformly random place."""
    if size >= min(height, width):
        raise ShapeError(f"an inpainting square of {size} pixels does not fit {height}x{width} images; use a smaller "
                         "mask_size")
    top = torch.randint(0, height - size + 1, (count,), generator=generator, device=device)
    left = torch.randint(0, width - size + 1, (count,), generator=generator, device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    inside = ((rows >= top.view(count, 1, 1)) & (rows < top.view(count, 1, 1) + size)
              & (cols >= left.view(count, 1, 1)) & (cols < left.view(count, 1, 1) + size))
    return inside[:, None]


def check_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask`` as an (N, 1, H, W) bool tensor (True = hole) for (N, C, H, W) ``images``; (H, W), (N, H, W) and
    (N, 1, H, W) masks of 0/1 (or bool) values are accepted, anything else is refused with the shapes named."""
    if images.dim() != 4:
        raise ShapeError(f"inpainting reads a batch of images (N, C, H, W), got a tensor of shape "
                         f"{tuple(images.shape)}; add the batch dimension with images[None]")
    n, _, height, width = images.shape
    if mask.dim() == 2:
        mask = mask[None, None].expand(n, 1, height, width) if mask.shape == (height, width) else mask
    elif mask.dim() == 3:
        mask = mask[:, None]
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != n or tuple(mask.shape[-2:]) != (height, width):
        raise ShapeError(f"a hole mask of shape {tuple(mask.shape)} does not fit images of shape "
                         f"{tuple(images.shape)}: expected ({height}, {width}), ({n}, {height}, {width}) or "
                         f"({n}, 1, {height}, {width}), one channel, True/1 in the hole")
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise ShapeError("a hole mask holds 0 (known pixel) and 1 (hole) only; threshold a soft or 0-255 mask "
                             "first, e.g. mask > 0.5")
        mask = mask > 0
    return mask.to(images.device)


PREFILLS = ("grey", "telea", "navier-stokes", "biharmonic")


def mask_images(images: torch.Tensor, mask: torch.Tensor, prefill: str = "grey") -> torch.Tensor:
    """The inpainting generator's input for images in [0, 1]: the image with its hole filled, and the mask (1 in
    the hole) as one more channel. ``prefill`` "grey" sets the hole to mid-grey, a neutral value that says
    nothing of what was there; a classical fill's name (:func:`classical_fill`) puts that fill there for the
    generator to correct."""
    mask = check_mask(images, mask)
    if prefill == "grey":
        masked = torch.where(mask, torch.full_like(images, 0.5), images)
    elif prefill in PREFILLS:
        masked = classical_fill(images, mask, prefill)
    else:
        raise CnnkitError(f"unknown hole prefill {prefill!r}; expected one of {', '.join(PREFILLS)}")
    return torch.cat([masked, mask.to(images.dtype)], 1)


def composite(generated: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``generated`` inside the hole, ``images`` (bit for bit) everywhere else."""
    return torch.where(check_mask(images, mask), generated, images)


def hole_psnr(estimate: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image (N,) over the hole's pixels only (all channels): known pixels, identical in any
    composited answer, would otherwise dilute the difference between fills."""
    mask = check_mask(reference, mask)
    weights = mask.expand_as(reference).float()
    mse = ((estimate.float() - reference.float()).pow(2) * weights).flatten(1).sum(1) / weights.flatten(1).sum(1)
    return 10 * torch.log10(peak**2 / mse.clamp_min(peak**2 * 1e-10))


def hole_boxes(mask: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each (N, 1, H, W) mask's hole, bottom and right exclusive."""
    boxes = []
    for index, single in enumerate(mask[:, 0]):
        rows, cols = single.any(1).nonzero().flatten(), single.any(0).nonzero().flatten()
        if not len(rows):
            raise ShapeError(f"mask {index} has no hole (no pixel set); every image needs one to be scored inside it")
        boxes.append((int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
    return boxes


def hole_ssim(estimate: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SSIM per image (N,) on the bounding box of its hole (the hole itself for a square), with
    :func:`cnnkit.denoise.ssim` (Wang et al.'s 11x11 Gaussian window, shrunk to the box if smaller, valid
    windows only): every window lies inside the box, so known pixels outside it do not count."""
    mask = check_mask(reference, mask)
    boxes = [(slice(i, i + 1), slice(None), slice(top, bottom), slice(left, right))
             for i, (top, bottom, left, right) in enumerate(hole_boxes(mask))]
    return torch.stack([ssim(estimate[box], reference[box])[0] for box in boxes])


CLASSICAL_FILLS = ("telea", "navier-stokes", "biharmonic")


def classical_fill(images: torch.Tensor, mask: torch.Tensor, method: str = "telea", radius: int = 3) -> torch.Tensor:
    """A classical inpainting of (N, C, H, W) images in [0, 1], composited: OpenCV's ``cv2.inpaint`` with Telea's
    fast marching method (2004) or the Navier-Stokes method (Bertalmio et al. 2001), ``radius`` pixels around
    each point, on 8-bit images as OpenCV requires; or scikit-image's biharmonic fill (Damelin and Hoang 2018)
    on floats. Both come with ``pip install cnnkit[baselines]`` (OpenCV) and scikit-image."""
    import numpy as np

    if method not in CLASSICAL_FILLS:
        raise CnnkitError(f"unknown classical fill {method!r}; expected one of {', '.join(CLASSICAL_FILLS)}")
    mask = check_mask(images, mask)
    pictures = images.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    holes = mask[:, 0].cpu().numpy()
    filled = []
    if method == "biharmonic":
        try:
            from skimage.restoration import inpaint_biharmonic
        except ImportError:
            raise CnnkitError("the biharmonic fill needs scikit-image: pip install scikit-image") from None
        for picture, hole in zip(pictures, holes):
            filled.append(inpaint_biharmonic(picture, hole, channel_axis=-1).astype(np.float32))
    else:
        try:
            import cv2
        except ImportError:
            raise CnnkitError(f"the {method} fill needs OpenCV: pip install 'cnnkit[baselines]' "
                              "(opencv-python-headless)") from None
        flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
        for picture, hole in zip(pictures, holes):
            eight_bit = np.ascontiguousarray((picture * 255).round().astype(np.uint8))
            out = cv2.inpaint(eight_bit, hole.astype(np.uint8) * 255, radius, flag)
            filled.append(out.reshape(picture.shape).astype(np.float32) / 255)
    result = torch.from_numpy(np.stack(filled)).permute(0, 3, 1, 2).to(images.device, images.dtype)
    return composite(result, images, mask)  # 8-bit rounding must not touch the known pixels


def make_input(kind: str, targets: torch.Tensor, generator: torch.Generator | None = None, mask_size: int = 12,
               edge_threshold: float = 0.25, prefill: str = "grey") -> torch.Tensor:
    """The model's input for target images in [0, 1] (N, C, H, W): grey, Sobel edges, or the image with a
    mid-grey square hole plus the hole's mask as a last channel (:func:`mask_images`)."""
    if kind == "colorize":
        if targets.shape[1] != 3:
            raise ShapeError(f"colorize turns grey into colour: it needs RGB targets, got {targets.shape[1]}-channel "
                             "images; use cifar10 (or an RGB image folder)")
        return to_grey(targets)
    if kind == "edges":
        return sobel_edges(targets, edge_threshold)
    if kind == "inpaint":
        n, _, height, width = targets.shape
        return mask_images(targets, square_masks(n, height, width, mask_size, generator, targets.device), prefill)
    raise CnnkitError(f"unknown translation {kind!r}; expected one of {', '.join(KINDS)}")


def input_channels(kind: str, target_channels: int) -> int:
    return target_channels + 1 if kind == "inpaint" else 1  # inpainting: the image and its hole mask


def create_translator(kind: str, target_channels: int, base_channels: int = 32, **kwargs) -> nn.Module:
    """A ``pix2pix`` model for a translation of images with ``target_channels`` channels: the input channels the
    kind feeds, colourisation keeping the input's luminance, inpainting composited into the hole,
    ``base_channels`` wide (64 in the paper)."""
    return create_model("pix2pix", in_channels=input_channels(kind, target_channels), out_channels=target_channels,
                        base_channels=base_channels, discriminator_channels=base_channels,
                        keep_luminance=kind == "colorize", fill_hole=kind == "inpaint", **kwargs)


class Pix2PixTask(Task):
    """pix2pix training for a model with ``generator``, ``discriminator`` and ``discriminate(x, y)``
    (``pix2pix``); ``adversarial_weight=0`` trains the generator on L1 alone (the discriminator is left
    untouched). Per-epoch metrics: ``l1``, ``psnr``, ``ssim`` of the output against the target; in training
    also ``g_adv`` (the generator's adversarial loss) and ``d_loss``. ``loss`` is the generator's objective in
    training (lambda L1 + adversarial) and its L1 term lambda L1 in evaluation (which has no discriminator).

    Inpainting also reports ``hole_l1``, ``hole_psnr`` and ``hole_ssim`` (:func:`hole_psnr`, :func:`hole_ssim`),
    and its L1 term is the mean over the hole's pixels: the composited output equals the target elsewhere, so a
    mean over the whole image would shrink lambda by the hole's share of the image. ``prefill``: what the hole
    holds in the input (see :func:`mask_images`)."""

    name = "pix2pix"
    runs_own_step = True  # train_step: a discriminator update, then a generator update
    higher_is_better = ("psnr", "ssim")

    def __init__(self, kind: str, l1_weight: float = 100.0, adversarial_weight: float = 1.0, mask_size: int = 12,
                 edge_threshold: float = 0.25, prefill: str = "grey"):
        if kind not in KINDS:
            raise CnnkitError(f"unknown translation {kind!r}; expected one of {', '.join(KINDS)}")
        if prefill not in PREFILLS:
            raise CnnkitError(f"unknown hole prefill {prefill!r}; expected one of {', '.join(PREFILLS)}")
        self.kind, self.l1_weight, self.adversarial_weight = kind, float(l1_weight), float(adversarial_weight)
        self.mask_size, self.edge_threshold, self.prefill = mask_size, edge_threshold, prefill
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
        inputs = make_input(self.kind, targets, generator, self.mask_size, self.edge_threshold, self.prefill)
        if self.kind == "inpaint":
            # The targets carry the hole mask as a last channel: loss() and metrics() see only outputs and
            # targets, and need the hole. _split takes it off again.
            return inputs * 2 - 1, torch.cat([targets, inputs[:, -1:]], 1) * 2 - 1
        return inputs * 2 - 1, targets * 2 - 1

    def _split(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(targets, hole mask or None) from what prepare() returned."""
        if self.kind != "inpaint":
            return targets, None
        return targets[:, :-1], targets[:, -1:] > 0

    def _l1(self, outputs: torch.Tensor, targets: torch.Tensor, hole: torch.Tensor | None) -> torch.Tensor:
        error = (outputs - targets).abs()
        if hole is None:
            return error.mean()
        return (error * hole).sum() / (hole.sum() * error.shape[1]).clamp_min(1)

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
        targets, hole = self._split(targets)
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
            loss = self.l1_weight * self._l1(outputs, targets, hole) + self.adversarial_weight * adversarial
            GANTask._step(trainer, loss, model.generator)
        finally:
            model.discriminator.requires_grad_(True)
        trainer.optimizer.zero_grad(set_to_none=True)
        return loss.detach(), {**self._metrics(outputs, targets, hole), **extra}

    def loss(self, trainer, outputs, targets):
        targets, hole = self._split(targets)
        self._check_channels(outputs, targets)
        return self.l1_weight * self._l1(outputs.float(), targets, hole)

    def metrics(self, outputs, targets):
        return self._metrics(outputs, *self._split(targets))

    @staticmethod
    def _metrics(outputs, targets, hole):
        estimate = outputs.detach().float().add(1).div(2).clamp(0, 1)
        reference = targets.add(1).div(2)
        scores = {"l1": (estimate - reference).abs().flatten(1).mean(1).sum(),
                  "psnr": psnr(estimate, reference).sum(), "ssim": ssim(estimate, reference).sum()}
        if hole is not None:
            share = hole.flatten(1).sum(1) * estimate.shape[1]
            scores.update(hole_l1=((estimate - reference).abs() * hole).flatten(1).sum(1).div(share).sum(),
                          hole_psnr=hole_psnr(estimate, reference, hole).sum(),
                          hole_ssim=hole_ssim(estimate, reference, hole).sum())
        return scores

    def summarize(self, sums, count):
        return {key: value.item() / max(count, 1) for key, value in sums.items()}

    def evaluate(self, trainer, dataset, **options) -> dict:
        self._eval_generators.clear()
        with torch.random.fork_rng():  # test-time dropout from a fixed seed; training's streams continue
            torch.manual_seed(EVAL_SEED)
            return super().evaluate(trainer, dataset, **options)

    def describe(self) -> dict:
        described = {"name": self.name, "kind": self.kind, "l1_weight": self.l1_weight,
                     "adversarial_weight": self.adversarial_weight, "mask_size": self.mask_size,
                     "edge_threshold": self.edge_threshold}
        return {**described, "prefill": self.prefill} if self.kind == "inpaint" else described


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
    inputs = inputs.to(device)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        outputs = model(inputs * 2 - 1).add(1).div(2).clamp(0, 1)
    if getattr(model, "fill_hole", False):
        # The model composited in [-1, 1]; the round trip x * 2 - 1 -> (y + 1) / 2 is not exact in floating
        # point, so the known pixels are put back as given.
        outputs = composite(outputs, inputs[:, :-1], inputs[:, -1:] > 0)
    return outputs


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


def read_hole_mask(path: str | Path, height: int, width: int) -> torch.Tensor:
    """A (1, 1, H, W) bool hole mask from an image file: white (grey level > 127) is the hole."""
    hole = read_image(path, 1)
    if tuple(hole.shape[-2:]) != (height, width):
        raise ImageError(f"the mask {path} is {hole.shape[-1]}x{hole.shape[-2]} but its image is {width}x{height} "
                         "(width x height); draw the mask at the image's size (white = the hole to fill)")
    hole = hole[None] > 127
    if not hole.any():
        raise ImageError(f"the mask {path} has no white pixel, so there is no hole to fill; paint the hole white")
    return hole


def read_translation_input(path: str | Path, meta: dict, make: bool = False, seed: int = EVAL_SEED,
                           mask: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's input (1, C, H, W) in [0, 1] for an image file, and, with ``make``, the derived input's
    source picture. Without ``make`` the image must already have the model's channel count; an inpainting
    model takes the picture and ``mask`` (white = the hole) instead."""
    task = meta["task"]
    expected = meta["model"]["in_channels"]
    if task["kind"] == "inpaint":
        if not meta["model"].get("kwargs", {}).get("fill_hole"):
            raise ImageError("this inpaint model predates the mask channel (it cannot tell the hole from grey "
                             "paint); retrain it with 'cnnkit translate --train --task inpaint'")
        image = read_image(path, expected - 1).float().div(255)[None]
        if make:
            generator = torch.Generator().manual_seed(seed)
            hole = square_masks(1, *image.shape[-2:], task.get("mask_size", 12), generator)
            return mask_images(image, hole, task.get("prefill", "grey")), image
        if mask is None:
            raise ImageError(f"an inpaint model needs to know where the hole in {path} is: pass --mask MASK.png "
                             "(the image's size, white = the hole), or --make-input for a random square")
        return mask_images(image, read_hole_mask(mask, *image.shape[-2:]), task.get("prefill", "grey")), None
    if make:
        target = read_image(path, meta["image_shape"][0]).float().div(255)[None]
        generator = torch.Generator().manual_seed(seed)
        return make_input(task["kind"], target, generator, task.get("mask_size", 12),
                          task.get("edge_threshold", 0.25)), target
    found = image_channels(path)
    if found != expected:
        names = {1: "grey", 3: "RGB"}
        derived = {"colorize": "a grey version", "edges": "its Sobel edges"}
        raise ImageError(f"{path} has {found} channel(s) ({names.get(found, 'unsupported')}) but this {task['kind']} "
                         f"model reads {expected}-channel ({names.get(expected, '?')}) images. Convert it, or pass "
                         f"--make-input to feed the model {derived[task['kind']]} of the picture.")
    return read_image(path, expected).float().div(255)[None], None


__all__ = ["CLASSICAL_FILLS", "KINDS", "PIX2PIX_TRAINING", "PREFILLS", "Pix2PixTask", "check_mask", "classical_fill",
           "composite", "create_translator", "hole_psnr", "hole_ssim", "image_channels", "input_channels",
           "load_translation_data", "make_input", "mask_images", "read_hole_mask", "read_translation_input",
           "sobel_edges", "square_masks", "to_grey", "translate_batch"]
