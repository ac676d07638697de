"""Batched augmentation on tensors: one call transforms a whole (N, C, H, W) batch on the CPU or the GPU.

Per-sample Python work in the hot loop is what makes the usual Dataset + transforms pipeline slow; here
each operation is a handful of tensor ops over the batch, with randomness from an explicit generator so
that a resumed run draws exactly the same augmentations.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None,
                mode: str = "constant") -> torch.Tensor:
    """Pad by ``padding`` on each side, then crop back to the original size at a random offset per image
    (i.e. a random translation by up to ``padding`` pixels). ``mode``: 'constant' (zeros) or 'reflect'.

    One ``gather`` along the flattened pixels of each padded image: the offset of an image is a single number
    added to one shared (h*w) index. A 4-D advanced-indexing crop did the same work 3.7x slower and was the hot
    spot of a Fashion-MNIST epoch (measured: 1024x3x32x32, p=4: 37 ms against 10 ms)."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=mode)
    padded_w = w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    window = (torch.arange(h, device=x.device)[:, None] * padded_w + torch.arange(w, device=x.device)).view(1, h * w)
    index = (window + (dy * padded_w + dx)[:, None])[:, None, :].expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def evaluation_views(x: torch.Tensor, flip: bool = False, shift: int = 0, mode: str = "constant"):
    """The views of a batch that test-time augmentation averages over: the batch itself, its mirror image if
    ``flip``, and with ``shift`` each of them moved by that many pixels up, down, left and right (padded as the
    training crop pads: 'constant' zeros or 'reflect'). Yields them one at a time to keep one view in memory."""
    if shift < 0:
        raise ValueError(f"shift is a number of pixels to move the views by, 0 or more, not {shift}")
    offsets = [(0, 0)] + ([(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if shift else [])
    h, w = x.shape[-2:]
    for image in [x, x.flip(3)] if flip else [x]:
        padded = F.pad(image, (shift,) * 4, mode=mode) if shift else image  # unshifted: the image itself
        for dy, dx in offsets:
            yield padded[..., shift + dy:shift + dy + h, shift + dx:shift + dx + w]


def resized_crop_boxes(count: int, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                       generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``count`` random boxes (top, left, box height, box width) in whole pixels, each inside a height x width
    image: area a uniform fraction in ``scale`` of the image's, aspect ratio (w/h) log-uniform in ``ratio``
    (Szegedy et al. 2015's "Inception" crop, torchvision's RandomResizedCrop). A box that would not fit is
    clipped to the image instead of redrawn, so the draw is one batch of tensor ops."""
    uniform = lambda low, high: low + (high - low) * torch.rand(count, generator=generator, device=device)  # noqa: E731
    area = height * width * uniform(*scale)
    aspect = torch.exp(uniform(math.log(ratio[0]), math.log(ratio[1])))
    box_w = torch.sqrt(area * aspect).round().clamp(1, width).long()
    box_h = torch.sqrt(area / aspect).round().clamp(1, height).long()
    top = (torch.rand(count, generator=generator, device=device) * (height - box_h + 1)).long()
    left = (torch.rand(count, generator=generator, device=device) * (width - box_w + 1)).long()
    return torch.stack([top, left, box_h, box_w], 1)


def crop_boxes_resized(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Each image's box (top, left, height, width) resampled bilinearly to ``size``: one ``grid_sample`` for the
    whole batch. A box as large as ``size`` gives its pixels exactly (AlexNet's plain 224-of-256 crop)."""
    n, out_h, out_w = len(x), *size
    top, left, box_h, box_w = (boxes[:, i, None].to(x.dtype) for i in range(4))
    height, width = x.shape[-2:]
    # Output pixel j samples input position left + (j + 0.5) * box_w / out_w - 0.5, written in grid_sample's
    # [-1, 1] coordinates (align_corners=False: -1 and 1 are the outer edges of the border pixels).
    columns = torch.arange(out_w, device=x.device, dtype=x.dtype) + 0.5
    rows = torch.arange(out_h, device=x.device, dtype=x.dtype) + 0.5
    xs = (2 * (left + columns * box_w / out_w)) / width - 1
    ys = (2 * (top + rows * box_h / out_h)) / height - 1
    grid = torch.stack([xs[:, None, :].expand(n, out_h, out_w), ys[:, :, None].expand(n, out_h, out_w)], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(x: torch.Tensor, size: tuple[int, int], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """A random box per image (see :func:`resized_crop_boxes`) resized to ``size``: scale augmentation.
    ``scale=(s, s)``, ``ratio=(1, 1)`` with s = (224/256)^2 is AlexNet's random 224 crop of a 256 image
    (Krizhevsky et al. 2012, section 4.1); the default is the Inception/ResNet crop (8%-100% of the area)."""
    if not x.is_floating_point():
        raise TypeError("random_resized_crop resamples: give it a float batch (images / 255), not uint8")
    device = generator.device if generator is not None else x.device
    boxes = resized_crop_boxes(len(x), *x.shape[-2:], scale, ratio, generator, device).to(x.device)
    return crop_boxes_resized(x, boxes, size)


def ten_crop(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """AlexNet's test views (Krizhevsky et al. 2012, section 4.1): ``size`` x ``size`` crops at the four corners
    (top-left, top-right, bottom-left, bottom-right) and the centre, then the same five of the mirror image."""
    h, w = x.shape[-2:]
    if not 0 < size <= min(h, w):
        raise ValueError(f"ten-crop size {size} does not fit {h}x{w} images; give a size of 1 to {min(h, w)} px")
    top, left = (h - size) // 2, (w - size) // 2
    corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size), (top, left)]
    crops = [x[..., y:y + size, x0:x0 + size] for y, x0 in corners]
    return crops + [crop.flip(-1) for crop in crops]


def average_probabilities(logits: list[torch.Tensor]) -> torch.Tensor:
    """The views' softmax averaged (AlexNet averages the predictions of its ten patches), returned as the log of
    that mean: logits whose softmax is the average, so the loss and top-k read them as any other logits."""
    probabilities = torch.stack([F.softmax(view.float(), dim=1) for view in logits]).mean(0)
    return probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()


@dataclasses.dataclass
class PrincipalComponents:
    """The principal components of a training set's pixel colours (pixel values in [0, 1]): eigenvalues of
    the channels' covariance in decreasing order, and the unit eigenvectors as the columns of ``eigenvectors``."""
    eigenvalues: torch.Tensor  # (C,)
    eigenvectors: torch.Tensor  # (C, C), column i belongs to eigenvalue i


def colour_principal_components(images: torch.Tensor, chunk: int = 2048) -> PrincipalComponents:
    """PCA of the RGB values of every pixel of ``images`` (uint8 or [0, 1] floats, N x C x H x W), as AlexNet's
    lighting augmentation needs. The sums are gathered in float64 a chunk of images at a time, so a whole
    training set in memory costs no float copy of it."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    outer = torch.zeros(channels, channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        pixels = images[start:start + chunk].to(torch.float64).transpose(0, 1).reshape(channels, -1).cpu()
        pixels = pixels / 255 if not images.is_floating_point() else pixels
        total += pixels.sum(1)
        outer += pixels @ pixels.T
    count = images.numel() // channels
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
    return PrincipalComponents(eigenvalues.flip(0).clamp_min(0).float(), eigenvectors.flip(1).float())


def lighting_offsets(alpha: torch.Tensor, components: PrincipalComponents) -> torch.Tensor:
    """Each image's colour shift sum_i alpha_i lambda_i p_i (AlexNet's eq. in section 4.1): (N, C) from the
    (N, C) coefficients ``alpha``."""
    values = components.eigenvalues.to(alpha.device, alpha.dtype)
    return (alpha * values) @ components.eigenvectors.to(alpha.device, alpha.dtype).T


def pca_lighting(x: torch.Tensor, components: PrincipalComponents, std: float = 0.1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """AlexNet's "fancy PCA" colour augmentation: to every pixel of an image add sum_i alpha_i lambda_i p_i,
    with alpha_i ~ N(0, std) drawn once per image. Changes the intensity and colour of the illumination along
    the directions in which the training set's colours vary, leaving the object's identity alone. ``x`` is a
    float batch in [0, 1] (before normalising)."""
    device = generator.device if generator is not None else x.device
    alpha = torch.randn(len(x), x.shape[1], generator=generator, device=device).to(x.device, x.dtype) * std
    return x + lighting_offsets(alpha, components)[:, :, None, None]


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel, reflecting at the borders (activation maximisation's
    regulariser, the Gaussian-filter baseline of denoising)."""
    radius = max(1, math.ceil(2 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def random_patches(images: torch.Tensor, size: int, per_image: int = 1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``per_image`` random ``size`` x ``size`` crops of each image of ``images`` (N, C, H, W), as one
    (N * per_image, C, size, size) batch, the crops of image i at rows i*per_image .. (i+1)*per_image - 1.
    The same one-gather crop as ``random_crop``: an offset per crop added to one shared window of indices."""
    n, c, h, w = images.shape
    if size > min(h, w):
        raise ValueError(f"cannot cut {size}x{size} patches from {h}x{w} images; choose a patch size <= {min(h, w)}")
    count = n * per_image
    dy = torch.randint(0, h - size + 1, (count,), device=images.device, generator=generator)
    dx = torch.randint(0, w - size + 1, (count,), device=images.device, generator=generator)
    window = (torch.arange(size, device=images.device)[:, None] * w
              + torch.arange(size, device=images.device)).view(1, size * size)
    index = (window + (dy * w + dx)[:, None])[:, None, :].expand(count, c, size * size)
    source = images.flatten(2).repeat_interleave(per_image, dim=0) if per_image > 1 else images.flatten(2)
    return source.gather(2, index).view(count, c, size, size)


def random_dihedral(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each square image in one of the 8 symmetries of the square (rot90 by 0-3 quarter turns, then an optional
    mirror), drawn uniformly: DnCNN's training augmentation. One batched op per symmetry, not per image."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"the symmetries of the square need square images, got {x.shape[-2]}x{x.shape[-1]}")
    mode = torch.randint(0, 8, (x.shape[0],), device=x.device, generator=generator)
    out = torch.empty_like(x)
    for k in range(8):
        chosen = (mode == k).nonzero().flatten()
        if len(chosen):
            turned = torch.rot90(x[chosen], k % 4, dims=(-2, -1))
            out[chosen] = turned.flip(-1) if k >= 4 else turned
    return out


def cutout(x: torch.Tensor, size: int, generator: torch.Generator | None = None, value: float = 0.0) -> torch.Tensor:
    """Erase one ``size`` x ``size`` square per image at a random centre (DeVries & Taylor 2017); the square
    may overlap the border, as in the paper, so the erased area varies."""
    if size <= 0:
        return x
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), device=x.device, generator=generator)[:, None, None]
    cx = torch.randint(0, w, (n,), device=x.device, generator=generator)[:, None, None]
    ys = torch.arange(h, device=x.device)[None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, :]
    half = size // 2
    inside = (ys >= cy - half) & (ys < cy - half + size) & (xs >= cx - half) & (xs < cx - half + size)
    return x.masked_fill(inside[:, None], value)


@dataclasses.dataclass
class MixedLabels:
    """The labels of a mixed batch: image i is ``weight`` of an image of class ``first[i]`` and
    ``1 - weight`` of one of class ``second[i]``; the loss and the training accuracy are weighted the same way."""
    first: torch.Tensor
    second: torch.Tensor
    weight: float

    def __len__(self) -> int:
        return len(self.first)


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    # torch's Beta sampler takes no generator; numpy's, seeded from the batch's generator, keeps a resumed run
    # drawing the same mixing weights.
    import numpy as np

    device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=device).item())
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def mix_batch(x: torch.Tensor, labels: torch.Tensor, mixup: float = 0.0, cutmix: float = 0.0,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, MixedLabels | torch.Tensor]:
    """Mixup (Zhang et al. 2018: the whole batch blended with a shuffled copy of itself, weight ~ Beta(a, a)) or
    CutMix (Yun et al. 2019: a box of the shuffled copy pasted in, its area ~ 1 - Beta(a, a)); the labels are
    mixed in the proportion of pixels. With both alphas set, each batch uses one of the two with equal odds
    (timm's switch). Returns the batch unchanged when both are 0."""
    if mixup <= 0 and cutmix <= 0:
        return x, labels
    device = generator.device if generator is not None else x.device
    use_cutmix = cutmix > 0 and (mixup <= 0 or bool(torch.rand((), generator=generator, device=device) < 0.5))
    weight = _beta(cutmix if use_cutmix else mixup, generator)
    order = torch.randperm(len(x), generator=generator, device=device).to(x.device)
    if not use_cutmix:
        return weight * x + (1 - weight) * x[order], MixedLabels(labels, labels[order], weight)
    h, w = x.shape[-2:]
    cut_h, cut_w = round(h * (1 - weight) ** 0.5), round(w * (1 - weight) ** 0.5)
    cy, cx = (int(torch.randint(0, n, (), generator=generator, device=device)) for n in (h, w))
    top, bottom = max(cy - cut_h // 2, 0), min(cy - cut_h // 2 + cut_h, h)
    left, right = max(cx - cut_w // 2, 0), min(cx - cut_w // 2 + cut_w, w)
    mixed = x.clone()
    mixed[..., top:bottom, left:right] = x[order, :, top:bottom, left:right]  # only the box is gathered
    # The box may be clipped by the border: the labels follow the pixels actually pasted.
    weight = 1 - (bottom - top) * (right - left) / (h * w)
    return mixed, MixedLabels(labels, labels[order], weight)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


@dataclasses.dataclass
class AugmentConfig:
    crop: int = 0  # random-crop padding in pixels (0: off)
    crop_mode: str = "constant"
    flip: bool = False
    cutout: int = 0  # square size (0: off)
    # Scale augmentation: a random box of this fraction of the image's area, resized to the model's input
    # ([0.08, 1]: Inception/ResNet; [0.765625, 0.765625] with crop_ratio [1, 1]: AlexNet's 224 crops of 256).
    resized_crop: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # the boxes' aspect ratios (width / height)
    lighting: float = 0.0  # std of AlexNet's PCA colour coefficients alpha (0.1 in the paper; 0: off)

    @classmethod
    def from_dict(cls, values: dict | None) -> AugmentConfig:
        values = dict(values or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {sorted(unknown)}; valid: {', '.join(names)}")
        for key in ("resized_crop", "crop_ratio"):
            if values.get(key) is not None:
                values[key] = _range_of(key, values[key])
        low, high = values.get("resized_crop") or (0.5, 0.5)
        if not 0 < low <= high <= 1:
            raise ValueError(f"resized_crop is the range of a crop's share of the image's area, within (0, 1], "
                             f"e.g. [0.08, 1.0]; got {values['resized_crop']}")
        if values.get("crop_ratio", (1, 1))[0] <= 0:
            raise ValueError(f"crop_ratio is a range of width/height ratios above 0, e.g. [0.75, 1.333]; "
                             f"got {values['crop_ratio']}")
        if not isinstance(values.get("lighting", 0.0), (int, float)) or values.get("lighting", 0.0) < 0:
            raise ValueError(f"lighting is the std of the PCA colour coefficients, 0 or more (AlexNet: 0.1); "
                             f"got {values['lighting']!r}")
        return cls(**values)


def _range_of(key: str, value) -> tuple[float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or value[0] > value[1]):
        raise ValueError(f"{key} is a range [low, high] of two numbers, low <= high; got {value!r}")
    return float(value[0]), float(value[1])


class Preprocess:
    """uint8 batch -> float batch the model reads: to [0, 1], fit to the model's input size, augment (when
    training), normalise, and optionally channels_last. Runs wherever the batch is."""

    def __init__(self, mean, std, input_size: tuple[int, int] | None = None, augment: AugmentConfig | None = None,
                 channels_last: bool = False, dtype: torch.dtype = torch.float32, resize: str = "auto"):
        if resize not in ("auto", "interpolate"):
            raise ValueError(f"resize must be 'auto' or 'interpolate', not {resize!r}")
        self.mean, self.std = tuple(mean), tuple(std)
        self.input_size = tuple(input_size) if input_size else None
        self.resize = resize
        self.augment = augment or AugmentConfig()
        self.channels_last, self.dtype = channels_last, dtype
        self.lighting_components: PrincipalComponents | None = None  # set from the training set (lighting)
        # mean and std as tensors on each device the batches come on: made from the tuples on every batch, they
        # were two host-to-device copies per step, each of which makes the CPU wait for the GPU
        self._statistics: dict = {}

    def fit_size(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """With ``resize="auto"``, smaller images are zero-padded to the model's input (LeNet-5 reads MNIST's
        28x28 digits centred in 32x32, as in the paper); other sizes are resized bilinearly. ``"interpolate"``
        always resizes: a pretrained backbone must see CIFAR's 32x32 images enlarged to its 224, not framed.
        ``size`` replaces the input size for this call (test-time views at other scales)."""
        target = tuple(size) if size else self.input_size
        if target is None or tuple(x.shape[-2:]) == target:
            return x
        (h, w), (th, tw) = x.shape[-2:], target
        if self.resize == "auto" and h <= th and w <= tw and (th - h) % 2 == 0 and (tw - w) % 2 == 0:
            return F.pad(x, ((tw - w) // 2, (tw - w) // 2, (th - h) // 2, (th - h) // 2))
        return F.interpolate(x, size=target, mode="bilinear", align_corners=False, antialias=h > th)

    def __call__(self, images: torch.Tensor, train: bool = False, generator: torch.Generator | None = None,
                 size: tuple[int, int] | None = None):
        a = self.augment
        target = tuple(size) if size else self.input_size
        resized = target is not None and tuple(images.shape[-2:]) != target
        # Geometric augmentations on the uint8 batch when nothing is resized first: a quarter of the bytes to
        # move, and the same result (zero padding in [0, 1] is zero in uint8).
        early = (train and not resized and not images.is_floating_point() and a.crop_mode == "constant"
                 and not a.resized_crop)
        x = images
        if early:
            x = self._geometric(x, generator)
        x = x.to(self.dtype)
        if x is images:  # already float: the in-place division below must not touch the caller's tensor
            x = x.clone()
        x = x.div_(255)
        if train and a.resized_crop:  # the random box is resized straight to the input: one resampling
            x = random_resized_crop(x, target or tuple(x.shape[-2:]), a.resized_crop, a.crop_ratio, generator)
        else:
            x = self.fit_size(x, target)
        if train and not early:
            x = self._geometric(x, generator)
        if train and a.lighting:
            if self.lighting_components is None:
                raise ValueError("lighting augmentation needs the training set's colour principal components: "
                                 "set Preprocess.lighting_components = colour_principal_components(train images)")
            x = pca_lighting(x, self.lighting_components, a.lighting, generator)
        x = self.normalize(x)
        if train and a.cutout:
            x = cutout(x, a.cutout, generator)  # after normalising, so erased pixels are the mean
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel, with the statistics' tensors made once per device and dtype (keyed by
        their values too: a tool may set ``mean``/``std`` after construction)."""
        key = (x.device, x.dtype, tuple(self.mean), tuple(self.std))
        statistics = self._statistics.get(key)
        if statistics is None:
            statistics = self._statistics[key] = tuple(torch.as_tensor(values, dtype=x.dtype, device=x.device)
                                                        .view(1, -1, 1, 1) for values in key[2:])
        mean, std = statistics
        return (x - mean) / std

    def _geometric(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.augment.crop:
            x = random_crop(x, self.augment.crop, generator, self.augment.crop_mode)
        if self.augment.flip:
            x = random_flip(x, generator)
        return x

    def state(self) -> dict:
        """What a checkpoint records so predict/eval convert images exactly as training did."""
        return {"mean": list(self.mean), "std": list(self.std),
                "input_size": list(self.input_size) if self.input_size else None, "resize": self.resize}
