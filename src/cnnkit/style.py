"""Neural style transfer and texture synthesis with the features of a frozen ImageNet network.

Gatys, Ecker, Bethge, "A neural algorithm of artistic style" (arXiv:1508.06576, 2015; CVPR 2016) -- the notes,
seeds 000, "Neural style": an image x is optimised so that its feature maps F^l match the content image's P^l
at the content layers and its Gram matrices G^l = F^l F^l^T match the style image's A^l at the style layers:

    L_content(p, x, l) = 1/2 sum_ij (F^l_ij - P^l_ij)^2
    L_style(a, x)      = sum_l w_l E_l,   E_l = 1 / (4 N_l^2 M_l^2) sum_ij (G^l_ij - A^l_ij)^2

with N_l maps of M_l positions at layer l. Texture synthesis (Gatys et al. 2015) is the same optimisation with
the style loss alone, started from noise; the feed-forward texture networks of Ulyanov et al. (ICML 2016; the
notes, seeds 004, "Applications: texture synthesis") train a generator once on that loss so that new textures
of any size are a single forward pass.

Descriptor networks: VGG-19/VGG-16 from a torchvision-layout ImageNet checkpoint the user supplies (the classic
choice), or the ImageNet EfficientNet-Lite0 that ships with cnnkit (works offline). Networks other than VGG are
known to stylise poorly (Wang et al., "Rethinking and improving the robustness of image style transfer", CVPR
2021): their activations are peaky -- a few huge values dominate each Gram matrix, so the optimiser matches
those few values and ignores the rest of the texture. Activation smoothing squashes every feature map through a
bounded function before the losses (``smoothing="softmax"``: Wang et al.'s per-channel softmax over positions;
``"tanh"``: a saturating tanh scaled by each layer's spread), which restores the rest of the statistics.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data.image_io import load_image, resize_longer_side, save_image  # noqa: F401 (moved to data/; kept importable)
from .errors import CnnkitError, UnknownNameError, did_you_mean
from .models.efficientnet import LITE_MEAN, LITE_STD
from .models.registry import create_model
from .models.vgg import VGG_CONFIGS, _make_features
from .progress import progress_bar
from .weights import read_state_dict

# ----------------------------------------------------------------------------------------------------------
# Colour (luminance-only transfer)
# ----------------------------------------------------------------------------------------------------------


# YIQ (NTSC): Y is the luminance, I and Q the colour; used for luminance-only transfer.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", _RGB_TO_YIQ.to(image), image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_YIQ).to(image), image)


def luminance_only(content: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey (luminance) versions of both images, the style's luminance shifted and scaled to the content's mean
    and spread (Gatys et al. 2016, "Preserving color in neural artistic style transfer", §2.2)."""
    content_y, style_y = rgb_to_yiq(content)[0], rgb_to_yiq(style)[0]
    style_y = (style_y - style_y.mean()) / style_y.std().clamp_min(1e-6) * content_y.std() + content_y.mean()
    return content_y.expand(3, -1, -1), style_y.clamp(0, 1).expand(3, -1, -1)


def recolour(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylised luminance with the content's colour channels (I, Q)."""
    content_yiq = rgb_to_yiq(F.interpolate(content[None], size=stylised.shape[-2:], mode="bilinear",
                                           align_corners=False)[0])
    luminance = rgb_to_yiq(stylised)[0:1]
    return yiq_to_rgb(torch.cat([luminance, content_yiq[1:]])).clamp(0, 1)


# ----------------------------------------------------------------------------------------------------------
# The losses of the notes
# ----------------------------------------------------------------------------------------------------------


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """G = F F^T for feature maps (N, C, H, W) read as F of shape (C, M = H W): (N, C, C), unnormalised."""
    flat = features.flatten(2)
    return flat @ flat.transpose(1, 2)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1/2 sum (F - P)^2."""
    return 0.5 * (features - target).pow(2).sum()


def style_layer_loss(gram: torch.Tensor, target_gram: torch.Tensor, num_maps: int, map_size: int) -> torch.Tensor:
    """E_l = 1 / (4 N_l^2 M_l^2) sum (G - A)^2."""
    return (gram - target_gram).pow(2).sum() / (4 * num_maps**2 * map_size**2)


def style_loss(features: dict[str, torch.Tensor], target_grams: dict[str, torch.Tensor],
               layer_weights: dict[str, float]) -> torch.Tensor:
    """sum_l w_l E_l over the style layers."""
    total = 0.0
    for name, weight in layer_weights.items():
        f = features[name]
        total = total + weight * style_layer_loss(gram_matrix(f), target_grams[name], f.shape[1],
                                                  f.shape[2] * f.shape[3])
    return total


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of neighbouring pixels: penalises the high-frequency noise the losses above
    leave in an optimised image (Mahendran & Vedaldi 2015)."""
    return ((image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()
            + (image[..., :, 1:] - image[..., :, :-1]).pow(2).mean())


SMOOTHINGS = ("none", "softmax", "tanh")


def smooth_activations(features: torch.Tensor, kind: str, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Activation smoothing for non-VGG descriptors.

    ``softmax``: Wang et al. 2021 (SWAG): each channel's map becomes a softmax over its positions, of the
    activations divided by ``scale`` (a temperature), times the number of positions so an even map is all ones.
    ``tanh``: ``scale * tanh(F / scale)``, linear for ordinary values and saturating for the rare huge ones.
    ``scale`` is set per layer from the style image's activations (:func:`smoothing_scales`). On
    EfficientNet-Lite0 the tanh form is the default: with the softmax, matched Gram matrices are dominated by
    the maps' mean of one, and the images stay close to the photo (under-stylised) at any weight we tried."""
    if kind == "none":
        return features
    if kind == "softmax":
        n, c, h, w = features.shape
        return (features.flatten(2) / scale).softmax(-1).view(n, c, h, w) * (h * w)
    if kind == "tanh":
        return scale * torch.tanh(features / scale)
    raise UnknownNameError(f"unknown smoothing {kind!r}; expected one of {', '.join(SMOOTHINGS)}")


def smoothing_scales(features: dict[str, torch.Tensor], kind: str, fraction: float = 0.3) -> dict[str, float]:
    """One scale per layer: ``fraction`` of the standard deviation of the style image's activations there.
    Peaks sit many standard deviations out (about 6.5 on EfficientNet-Lite0's blocks); at 0.3 sigma tanh keeps
    only each activation's sign and rough size, so no single peak can dominate a Gram matrix. Measured on
    tubingen + starry night: fraction 1 changed little against no smoothing, 0.3 removed most of the
    rainbow-coloured speckle of synthesised textures (docs/images/style_*)."""
    if kind == "none":
        return {name: 1.0 for name in features}
    return {name: fraction * float(f.detach().float().std().clamp_min(1e-6)) for name, f in features.items()}


# ----------------------------------------------------------------------------------------------------------
# Descriptor networks
# ----------------------------------------------------------------------------------------------------------


class Descriptor(nn.Module):
    """A frozen ImageNet network that returns named feature maps of an image in [0, 1] (normalising it the way
    the network was trained). Only the layers up to the deepest one asked for are run."""

    name = "descriptor"
    defaults: dict = {}

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    @property
    def layer_names(self) -> list[str]:
        return [name for name, _ in self.stages()]

    def stages(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def check_layers(self, names) -> None:
        valid = self.layer_names
        for name in names:
            if name not in valid:
                raise UnknownNameError(f"the {self.name} descriptor has no layer {name!r}."
                                       f"{did_you_mean(name, valid)} Names depend on the descriptor: VGG's are "
                                       "conv1_1, relu1_1, ..., pool5; EfficientNet-Lite0's stem, blocks.0-15, head.")

    def forward(self, image: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        wanted = set(layers)
        self.check_layers(wanted)
        x = (image - self.mean) / self.std
        out = {}
        for name, module in self.stages():
            x = module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return out

    def freeze(self) -> Descriptor:
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self


class EfficientNetDescriptor(Descriptor):
    """EfficientNet-Lite0 (ImageNet). Layers: ``stem`` (32 maps, 1/2 size), ``blocks.0`` ... ``blocks.15``
    (MBConv outputs: 16, 24x2, 40x2, 80x3, 112x3, 192x4, 320 maps at 1/2 ... 1/32 size) and ``head``."""

    name = "efficientnet_lite0"
    defaults = {"content_layers": ["blocks.4"], "style_layers": ["stem", "blocks.2", "blocks.4", "blocks.7",
                                                                 "blocks.10"],
                "smoothing": "tanh", "content_weight": 1.0, "style_weight": 10.0}

    def __init__(self, network: nn.Module | None = None):
        super().__init__(LITE_MEAN, LITE_STD)
        self.network = network if network is not None else create_model("efficientnet_lite0", pretrained="imagenet")
        self.freeze()

    def stages(self):
        net = self.network
        stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        head = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
        return [("stem", stem)] + [(f"blocks.{i}", b) for i, b in enumerate(net._blocks)] + [("head", head)]


class VGGDescriptor(Descriptor):
    """VGG-19 or VGG-16 ``features`` with torchvision's layout, layers named as in the paper and Gatys et al.:
    ``conv1_1``, ``relu1_1``, ..., ``pool1``, ... ``relu5_4``. Max-pooling is replaced by average pooling, which
    Gatys et al. found gives smoother gradients and slightly better images (``avg_pool=False`` keeps it). Only
    the convolutional part is built: the 120M-parameter classifier plays no part in style transfer."""

    defaults = {"content_layers": ["relu4_2"], "style_layers": ["relu1_1", "relu2_1", "relu3_1", "relu4_1",
                                                                "relu5_1"],
                "smoothing": "none", "content_weight": 1.0, "style_weight": 10.0}

    def __init__(self, depth: int = 19, weights: str | Path | None = None, avg_pool: bool = True,
                 features: nn.Sequential | None = None):
        super().__init__((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        if depth not in (16, 19):
            raise CnnkitError(f"VGG descriptors are VGG-16 or VGG-19, not VGG-{depth}.")
        self.name = f"vgg{depth}"
        if features is None:
            if weights is None:
                raise CnnkitError(f"the {self.name} descriptor needs ImageNet weights, which cnnkit cannot download: "
                                  f"pass --weights FILE with torchvision's checkpoint (e.g. vgg19-dcbb9e9d.pth), or "
                                  "use --descriptor efficientnet_lite0 (offline).")
            features = _make_features(VGG_CONFIGS["E" if depth == 19 else "D"], 3, batch_norm=False)
            load_vgg_features(features, weights, self.name)
        self.features = features
        self._names = []
        block, index = 1, 1
        for module in self.features:
            if isinstance(module, nn.Conv2d):
                self._names.append(f"conv{block}_{index}")
            elif isinstance(module, nn.ReLU):
                module.inplace = False  # the conv output is returned as a feature too
                self._names.append(f"relu{block}_{index}")
                index += 1
            elif isinstance(module, nn.MaxPool2d):
                self._names.append(f"pool{block}")
                block, index = block + 1, 1
            else:
                self._names.append(f"layer{len(self._names)}")
        self.avg_pool = avg_pool
        self.freeze()

    def stages(self):
        modules = [nn.AvgPool2d(2, 2) if self.avg_pool and isinstance(m, nn.MaxPool2d) else m for m in self.features]
        return list(zip(self._names, modules))


def load_vgg_features(features: nn.Sequential, weights: str | Path, name: str = "vgg19") -> None:
    """Load the convolution weights of a torchvision-layout VGG checkpoint (``features.N.weight/bias``; the
    classifier, if present, is skipped, so a ``features``-only file works too)."""
    path = Path(weights)
    if not path.is_file():
        raise CnnkitError(f"--weights {path}: no such file; expected torchvision's VGG checkpoint "
                          "(vgg19-dcbb9e9d.pth or vgg16-397923af.pth) or a .safetensors copy.")
    state = read_state_dict(path)
    found = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    expected = features.state_dict()
    wrong = [k for k in expected if k not in found or found[k].shape != expected[k].shape]
    if wrong:
        raise CnnkitError(f"{path} does not hold {name} features in torchvision's layout (missing or mis-shaped: "
                          f"{', '.join(wrong[:6])}{' ...' if len(wrong) > 6 else ''}); check that --descriptor "
                          "vgg16/vgg19 matches the file.")
    features.load_state_dict({k: found[k] for k in expected})


DESCRIPTORS = ("efficientnet_lite0", "vgg19", "vgg16")


def build_descriptor(name: str = "efficientnet_lite0", weights: str | Path | None = None) -> Descriptor:
    if name == "efficientnet_lite0":
        if weights is not None:
            return EfficientNetDescriptor(create_model("efficientnet_lite0", pretrained=str(weights)))
        return EfficientNetDescriptor()
    if name in ("vgg19", "vgg16"):
        return VGGDescriptor(int(name[3:]), weights)
    raise UnknownNameError(f"unknown descriptor {name!r}.{did_you_mean(name, DESCRIPTORS)}")


# ----------------------------------------------------------------------------------------------------------
# Optimisation-based stylisation and texture synthesis
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StyleConfig:
    """Options of :func:`stylize` and :func:`synthesize_texture`; ``None`` means the descriptor's default."""

    size: int = 384  # longer side of the output, pixels
    iterations: int = 150  # loss evaluations over all scales (L-BFGS line searches may add a few)
    scales: tuple[float, ...] = (0.5, 1.0)  # coarse to fine: fractions of ``size``
    optimizer: str = "lbfgs"  # lbfgs | adam
    lr: float = 1.0  # L-BFGS step; for Adam a pixel step (0.02 is typical)
    init: str = "content"  # content | noise
    content_layers: list[str] | None = None
    style_layers: list[str] | None = None
    layer_weights: list[float] | None = None  # w_l per style layer (default: relative, see StyleObjective)
    content_weight: float | None = None  # alpha
    style_weight: float | None = None  # beta
    tv_weight: float = 1.0
    smoothing: str | None = None  # none | softmax | tanh
    smoothing_scale: float = 0.3  # tanh scale / softmax temperature, as a fraction of each layer's std
    preserve_color: bool = False
    seed: int = 0

    def resolved(self, descriptor: Descriptor) -> StyleConfig:
        config = dataclasses.replace(self)
        for key, value in descriptor.defaults.items():
            if getattr(config, key) is None:
                setattr(config, key, value)
        descriptor.check_layers(list(config.content_layers) + list(config.style_layers))
        if config.layer_weights is not None and len(config.layer_weights) != len(config.style_layers):
            raise CnnkitError(f"{len(config.layer_weights)} style layer weights for {len(config.style_layers)} "
                              "style layers; give one weight per layer.")
        if config.optimizer not in ("lbfgs", "adam"):
            raise CnnkitError(f"optimizer {config.optimizer!r}: expected 'lbfgs' or 'adam'.")
        if config.init not in ("content", "noise"):
            raise CnnkitError(f"init {config.init!r}: expected 'content' or 'noise'.")
        if config.smoothing not in SMOOTHINGS:
            raise UnknownNameError(f"smoothing {config.smoothing!r}: expected one of {', '.join(SMOOTHINGS)}.")
        if not config.scales or any(not 0 < s <= 1 for s in config.scales):
            raise CnnkitError(f"scales {config.scales}: expected fractions in (0, 1], coarse to fine, e.g. 0.5,1.")
        return config


class StyleObjective:
    """alpha * content + beta * style + tv_weight * tv for one output size.

    Layer weights: given explicitly, the style term is the notes' sum_l w_l E_l as is. By default each layer
    is weighted by the inverse of its target's own size, w_l = 4 N_l^2 M_l^2 / (L sum A_l^2), so every w_l E_l
    is a relative error (0 when the Grams match, 1 for an all-zero image) and the content term likewise is
    1/2 sum (F - P)^2 / (1/2 sum P^2). Raw E_l differ by orders of magnitude between layers, descriptors and
    smoothings (a softmax map has values near 1, a VGG ReLU map values in the hundreds), so without this
    one alpha/beta pair could not serve them all, nor survive a change of resolution."""

    def __init__(self, descriptor: Descriptor, config: StyleConfig, content: torch.Tensor | None,
                 styles: list[tuple[torch.Tensor, float]]):
        self.descriptor, self.config = descriptor, config
        self.content_layers = list(config.content_layers) if content is not None else []
        with torch.no_grad():
            first_style = descriptor(styles[0][0][None], config.style_layers + self.content_layers)
            self.scales = smoothing_scales(first_style, config.smoothing, config.smoothing_scale)
            # Per style image: its Gram matrices per position (A / M_style, so that a style image of another
            # size or shape than the output still gives the right target, A' = M_output A / M_style) and
            # the layer weights.
            self.targets = []
            for image, weight in styles:
                feats = self.features(image[None], config.style_layers)
                grams = {k: gram_matrix(v) / _positions(v) for k, v in feats.items()}
                if config.layer_weights is not None:
                    layer_weights = {k: weight * w for k, w in zip(config.style_layers, config.layer_weights)}
                else:  # w_l = 4 N^2 M^2 / (L sum A'^2); the M_output^2 cancels
                    layer_weights = {k: weight * 4 * g.shape[-1] ** 2 / (len(grams) * g.pow(2).sum().item() + 1e-30)
                                     for k, g in grams.items()}
                self.targets.append((grams, layer_weights))
            self.content_targets = self.features(content[None], self.content_layers) if content is not None else {}
            self.content_norms = {k: (0.5 * v.pow(2).sum()).clamp_min(1e-12).item() * len(self.content_targets)
                                  for k, v in self.content_targets.items()}

    def features(self, image: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        raw = self.descriptor(image, layers)
        return {k: smooth_activations(v, self.config.smoothing, self.scales.get(k, 1.0)) for k, v in raw.items()}

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        config = self.config
        feats = self.features(image, list(config.style_layers) + self.content_layers)
        content = sum((content_loss(feats[k], self.content_targets[k]) / self.content_norms[k]
                       for k in self.content_layers), torch.zeros(()))
        style = torch.zeros(())
        for grams, layer_weights in self.targets:
            scaled = {k: g * _positions(feats[k]) for k, g in grams.items()}
            style = style + style_loss(feats, scaled, layer_weights)
        tv = total_variation(image)
        total = config.content_weight * content + config.style_weight * style + config.tv_weight * tv
        return total, {"content": content.item(), "style": style.item(), "tv": tv.item()}


def _positions(features: torch.Tensor) -> int:
    return features.shape[-1] * features.shape[-2]


def _scale_sizes(config: StyleConfig) -> list[int]:
    return [max(16, round(config.size * s)) for s in config.scales]


def _iterations_per_scale(config: StyleConfig) -> list[int]:
    """Coarse scales are cheap (a quarter of the pixels at half size), so each scale gets iterations in
    proportion to its size's inverse: most of the work is done where an iteration costs least."""
    inverse = [1 / s for s in config.scales]
    counts = [max(1, round(config.iterations * v / sum(inverse))) for v in inverse]
    counts[-1] = max(1, config.iterations - sum(counts[:-1]))
    return counts


def _optimise(image: torch.Tensor, objective: StyleObjective, iterations: int, config: StyleConfig,
              history: list[dict], scale_size: int, progress, snapshot) -> torch.Tensor:
    image = image.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    evaluations = 0

    def closure():
        nonlocal evaluations
        with torch.no_grad():
            image.clamp_(0, 1)
        optimizer.zero_grad(set_to_none=True)
        total, parts = objective(image[None])
        total.backward()
        evaluations += 1
        history.append({"iteration": len(history) + 1, "size": scale_size, "loss": total.item(), **parts,
                        "seconds": round(time.perf_counter() - start, 3)})
        if progress is not None:
            progress.update(1)
            progress.set_postfix(size=scale_size, loss=f"{total.item():.4g}")
        if snapshot is not None:
            snapshot(len(history), image)
        return total

    if config.optimizer == "lbfgs":
        # max_eval bounds the work: every loss evaluation (line-search steps included) costs one pass.
        # A strong-Wolfe line search: fixed unit steps overshoot on these losses and can make the loss grow.
        optimizer = torch.optim.LBFGS([image], lr=config.lr, max_iter=iterations, max_eval=iterations,
                                      history_size=50, tolerance_grad=0, tolerance_change=0,
                                      line_search_fn="strong_wolfe")
        optimizer.step(closure)
    else:
        optimizer = torch.optim.Adam([image], lr=config.lr)
        for _ in range(iterations):
            optimizer.step(closure)
    with torch.no_grad():
        return image.detach().clamp_(0, 1)


def _run(content: torch.Tensor | None, styles: list[tuple[torch.Tensor, float]], config: StyleConfig,
         descriptor: Descriptor, progress: bool, snapshot_dir: str | Path | None, snapshot_every: int,
         output_shape: tuple[int, int] | None = None) -> tuple[torch.Tensor, list[dict]]:
    config = config.resolved(descriptor)
    generator = torch.Generator().manual_seed(config.seed)
    original_content = content
    if config.preserve_color and content is not None:
        grey = [luminance_only(content, s) for s, _ in styles]
        content = grey[0][0]
        styles = [(g[1], w) for g, (_, w) in zip(grey, styles)]
    bar = None
    if progress:
        bar = progress_bar(config.iterations, "stylize" if content is not None else "texture")

    def snapshot(step, image):
        if snapshot_dir and snapshot_every and step % snapshot_every == 0:
            shown = recolour(image.detach().clamp(0, 1), original_content) if config.preserve_color else image
            save_image(shown, Path(snapshot_dir) / f"step{step:05d}.png")

    history: list[dict] = []
    image = None
    for size, iterations in zip(_scale_sizes(config), _iterations_per_scale(config)):
        if content is not None:
            scaled_content = resize_longer_side(content, size)
            height, width = scaled_content.shape[-2:]
        else:
            aspect = (output_shape[0] / output_shape[1]) if output_shape else 1.0
            height, width = (size, max(1, round(size / aspect))) if aspect >= 1 else (round(size * aspect), size)
            scaled_content = None
        scaled_styles = [(resize_longer_side(s, size), w) for s, w in styles]
        objective = StyleObjective(descriptor, config, scaled_content, scaled_styles)
        if image is None:
            if config.init == "content" and scaled_content is not None:
                image = scaled_content.clone()
            else:  # mid-grey plus noise: uniform noise at full contrast makes L-BFGS waste its first steps
                image = (0.5 + 0.1 * torch.randn(3, height, width, generator=generator)).clamp(0, 1)
        else:
            image = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]
        image = _optimise(image, objective, iterations, config, history, size, bar, snapshot)
    if bar is not None:
        bar.close()
    if output_shape is not None and tuple(image.shape[-2:]) != tuple(output_shape):
        image = F.interpolate(image[None], size=output_shape, mode="bilinear", align_corners=False)[0]
    if config.preserve_color and original_content is not None:
        image = recolour(image, original_content)
    return image.clamp(0, 1), history


def stylize(content: torch.Tensor, styles: list[torch.Tensor] | torch.Tensor, config: StyleConfig | None = None,
            descriptor: Descriptor | None = None, style_weights: list[float] | None = None, progress: bool = False,
            snapshot_dir: str | Path | None = None, snapshot_every: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """Gatys style transfer. ``content`` and ``styles``: (3, H, W) images in [0, 1]; several styles are mixed
    with ``style_weights`` (default equal). Returns the image (3, h, w) with longer side ``config.size`` and
    the loss history (one row per loss evaluation: loss, content, style, tv, size, seconds)."""
    styles = [styles] if isinstance(styles, torch.Tensor) else list(styles)
    weights = _style_weights(style_weights, len(styles))
    return _run(content, list(zip(styles, weights)), config or StyleConfig(), descriptor or build_descriptor(),
                progress, snapshot_dir, snapshot_every)


def synthesize_texture(style: torch.Tensor, height: int, width: int, config: StyleConfig | None = None,
                       descriptor: Descriptor | None = None, progress: bool = False,
                       snapshot_dir: str | Path | None = None,
                       snapshot_every: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """Texture synthesis (Gatys et al. 2015): a (3, height, width) image optimised from noise to match the style
    image's Gram matrices, with the style loss alone."""
    config = dataclasses.replace(config or StyleConfig(), init="noise", content_weight=0.0,
                                 size=max(height, width), preserve_color=False)
    return _run(None, [(style, 1.0)], config, descriptor or build_descriptor(), progress, snapshot_dir,
                snapshot_every, output_shape=(height, width))


def _style_weights(weights, count: int) -> list[float]:
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise CnnkitError(f"style weights {list(weights)} do not fit {count} style image(s): give one non-negative "
                          "weight per style image, not all zero.")
    total = sum(weights)
    return [w / total for w in weights]


__all__ = [
    "DESCRIPTORS", "Descriptor", "EfficientNetDescriptor", "StyleConfig", "StyleObjective", "VGGDescriptor",
    "build_descriptor", "content_loss", "gram_matrix", "load_image", "save_image", "smooth_activations",
    "style_layer_loss", "style_loss", "stylize", "synthesize_texture", "total_variation",
]
