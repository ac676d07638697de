"""One function per ``cnnkit viz SUBCOMMAND``: the CLI parses arguments, loads the checkpoint (and the data
where needed) and calls these; each writes its PNG(s) into ``out_dir`` and returns what it computed.

    cnnkit viz filters    CHECKPOINT [--layer L] [--before CHECKPOINT0]      -> filters(model, out_dir, ...)
    cnnkit viz maps       CHECKPOINT IMAGE... [--layer L ...]                -> maps(model, images, out_dir, ...)
    cnnkit viz maximize   CHECKPOINT --layer L --unit i [--unit j ...]       -> maximize(model, units, out_dir, ...)
    cnnkit viz saliency   CHECKPOINT IMAGE... [--class c]                    -> saliency(model, images, out_dir, ...)
    cnnkit viz gradcam    CHECKPOINT IMAGE... [--layer L] [--class c]        -> gradcam(model, images, out_dir, ...)
    cnnkit viz occlusion  CHECKPOINT IMAGE... [--window W] [--stride S]      -> occlusion(model, images, out_dir, ...)
    cnnkit viz integrated-gradients CHECKPOINT IMAGE... [--steps K]          -> integrated_gradients(...)
    cnnkit viz guided-backprop CHECKPOINT IMAGE... [--class c]               -> guided_backprop(...)
    cnnkit viz deconvnet  CHECKPOINT IMAGE... [--layer L [--channel c]]      -> deconvnet(model, images, out_dir, ...)
    cnnkit viz dream      CHECKPOINT IMAGE... [--layer L ...] [--octaves K]  -> dream(model, images, out_dir, ...)
    cnnkit viz embed      CHECKPOINT --data D                                -> embed(model, batches, out_dir, ...)
    cnnkit viz confusion  CHECKPOINT --data D                                -> confusion(model, batches, out_dir, ...)
    cnnkit viz curves     RUN_DIR                                            -> curves(run_dir, out_dir)
    cnnkit viz landscape  CHECKPOINT --data D [--start CHECKPOINT0]          -> landscape(model, batches, out_dir, ...)
    cnnkit viz gradients  RUN_DIR... [--epoch E] [--step S] [--relative]     -> gradients(run_dirs, out_dir, ...)

IMAGE arguments are files or an already preprocessed batch. ``mean``/``std``/``size`` override the model's
card (:func:`cnnkit.card.card_of`), which a run folder or pretrained weights fill; pass them for a network
built from scratch, whose card has no normalisation (``mean=None``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..card import card_of
from ..data.image_io import read_image, resize_longer_side
from ..errors import UnknownNameError
from ..train.gradients import read_gradient_records
from . import attribution, backprojection
from .confusion import confusion_matrix, plot_confusion
from .curves import plot_curves, read_metrics
from .deepdream import DreamResult, DreamSettings, deep_dream, default_dream_layer, plot_dreams
from .embed import penultimate_features, plot_embedding, tsne
from .filters import plot_filters
from .gradients import plot_gradient_depth
from .hooks import executed_layers, find_layer
from .images import InputSpec, input_spec, load_image
from .landscape import fixed_subset, loss_along_line, loss_surface
from .maps import feature_maps, plot_feature_maps
from .maximize import MaximizeSettings, maximize_activation
from .plots import scale_each

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
Images = Sequence[str | Path] | torch.Tensor
MAX_DEFAULT_MAP_LAYERS = 8


def _images(model: nn.Module, images: Images, mean, std, size) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's input batch and the same images in [0, 1] for display. ``images`` is either image files
    (read and converted by :func:`load_image`) or an already preprocessed (N, C, H, W) batch, e.g. made
    the way the checkpoint's training data was (``cnnkit.predict``'s conversion)."""
    if isinstance(images, torch.Tensor):
        spec = input_spec(model, size=tuple(images.shape[-2:]), channels=images.shape[1], mean=mean, std=std)
        display = spec.denormalize(images) if spec.mean is not None else scale_each(images)
        return images, display
    spec = input_spec(model, size=size, mean=mean, std=std)
    batch = torch.cat([load_image(path, spec) for path in images])
    return batch, spec.denormalize(batch)


def default_map_layers(model: nn.Module, images: torch.Tensor) -> list[str]:
    """The convolution layers that run on ``images``, at most eight spread evenly from first to last."""
    names = executed_layers(model, images[:1], nn.Conv2d)
    if len(names) <= MAX_DEFAULT_MAP_LAYERS:
        return names
    picks = np.linspace(0, len(names) - 1, MAX_DEFAULT_MAP_LAYERS).round().astype(int)
    return [names[index] for index in picks]


def default_gradcam_layer(model: nn.Module, images: torch.Tensor) -> str:
    """The last convolution to run whose output still has a spatial layout (more than 1x1): the
    highest-level features that can say *where* (Selvaraju et al. 2017). LeNet-5's C5 is a convolution with
    1x1 output, so its Grad-CAM would be a constant."""
    names = executed_layers(model, images[:1], nn.Conv2d)
    spatial = []
    if names:
        shapes = feature_maps(model, images[:1], names)
        spatial = [name for name in names if shapes[name].shape[-2] * shapes[name].shape[-1] > 1]
    if not spatial:
        raise UnknownNameError(f"{type(model).__name__} has no nn.Conv2d layer with spatial output to default to; "
                               "pass --layer with a layer that outputs (N, C, H, W) maps.")
    return spatial[-1]


def filters(model: nn.Module, out_dir: str | Path, layer: str | None = None,
            before: nn.Module | Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """``filters.png``: the kernels of ``layer`` (default the first convolution), next to ``before`` if given."""
    return plot_filters(model, layer, before, png=Path(out_dir) / "filters.png")


def maps(model: nn.Module, images: Images, out_dir: str | Path,
         layers: Sequence[str] | None = None, mean=None, std=None, size=None) -> dict[str, torch.Tensor]:
    """``maps.png`` (``maps_<k>.png`` for the k-th image when several): feature maps of ``layers``."""
    images, display = _images(model, images, mean, std, size)
    layers = list(layers) if layers else default_map_layers(model, images)
    for layer in layers:
        find_layer(model, layer)  # fail on a bad name before any work, with the list of valid ones
    result = feature_maps(model, images, layers)
    for index in range(len(images)):
        name = "maps.png" if len(images) == 1 else f"maps_{index}.png"
        plot_feature_maps({layer: output[index:index + 1] for layer, output in result.items()},
                                      Path(out_dir) / name, display[index])
    return result


def maximize(model: nn.Module, units: Sequence[int], out_dir: str | Path, layer: str | None = None,
             target: str = "channel", steps: int = 200, parameterization: str = "fourier", seed: int = 0,
             mean=None, std=None, size=None, class_names: Sequence[str] | None = None, progress: bool = False,
             **prior) -> torch.Tensor:
    """``maximize.png``: one optimised image per unit; ``prior`` overrides :class:`MaximizeSettings` fields
    (``l2_weight``, ``tv_weight``, ``jitter``, ``blur_every``, ...); ``class_names`` title logit panels.
    Returns the images in [0, 1]."""
    settings = MaximizeSettings(steps=steps, parameterization=parameterization, seed=seed, **prior)
    result = maximize_activation(model, input_spec(model, size=size, mean=mean, std=std), units, layer, target,
                                 settings=settings, png=Path(out_dir) / "maximize.png",
                                 unit_names=class_names if target == "logit" else None, progress=progress)
    return result.images


def saliency(model: nn.Module, images: Images, out_dir: str | Path, target: int | None = None,
             mean=None, std=None, size=None, class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``saliency.png``: vanilla gradients and SmoothGrad for ``target`` (default: the predicted class)."""
    images, display = _images(model, images, mean, std, size)
    return attribution.explain(model, images, target, display_images=display, png=Path(out_dir) / "saliency.png",
                               class_names=class_names)


def gradcam(model: nn.Module, images: Images, out_dir: str | Path, layer: str | None = None,
            target: int | None = None, mean=None, std=None, size=None,
            class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``gradcam.png``: Grad-CAM of ``layer`` (default the last convolution) for ``target``."""
    images, display = _images(model, images, mean, std, size)
    return attribution.explain(model, images, target, gradcam_layer=layer or default_gradcam_layer(model, images),
                               methods=(), display_images=display, png=Path(out_dir) / "gradcam.png",
                               class_names=class_names)


def default_occlusion_window(images: torch.Tensor) -> int:
    """An eighth of the shorter side (28 pixels on 224x224, 4 on 32x32): about an object part."""
    return max(min(images.shape[-2:]) // 8, 1)


def occlusion(model: nn.Module, images: Images, out_dir: str | Path, target: int | None = None,
              window: int | None = None, stride: int | None = None, mean=None, std=None, size=None,
              class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``occlusion.png``: how much the class score drops where a grey ``window`` patch (default
    :func:`default_occlusion_window`, stride half of it) hides the image. Returns the signed maps."""
    images, display = _images(model, images, mean, std, size)
    window = window or default_occlusion_window(images)
    stride = stride or max(window // 2, 1)
    target = attribution.explained_classes(model, images, target)
    drops = attribution.occlusion(model, images, target, window=window, stride=stride)
    attribution.plot_attribution(display, {f"occlusion {window}x{window}/{stride}": attribution.positive_part(drops)},
                                 Path(out_dir) / "occlusion.png", target, class_names)
    return {"occlusion": drops, "target": target}


def integrated_gradients(model: nn.Module, images: Images, out_dir: str | Path, target: int | None = None,
                         steps: int = 50, mean=None, std=None, size=None,
                         class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``integrated-gradients.png``: integrated gradients from the all-zero input (the dataset's mean colour
    on a normalised model), shown as |attribution| summed over colour channels."""
    images, display = _images(model, images, mean, std, size)
    target = attribution.explained_classes(model, images, target)
    result = attribution.integrated_gradients(model, images, target, steps=steps)
    heatmap = attribution.scale_to_percentile(result.abs().sum(dim=1))
    attribution.plot_attribution(display, {"integrated gradients": heatmap},
                                 Path(out_dir) / "integrated-gradients.png", target, class_names)
    return {"integrated_gradients": result, "target": target}


def guided_backprop(model: nn.Module, images: Images, out_dir: str | Path, target: int | None = None,
                    mean=None, std=None, size=None,
                    class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``guided-backprop.png``: guided backpropagation and the deconvnet projection of the class score."""
    images, display = _images(model, images, mean, std, size)
    target = attribution.explained_classes(model, images, target)
    result = {"guided_backprop": backprojection.guided_backprop(model, images, target),
              "deconvnet": backprojection.deconvnet(model, images, target)}
    attribution.plot_attribution(display, {name.replace("_", " "): backprojection.as_picture(values)
                                           for name, values in result.items()},
                                 Path(out_dir) / "guided-backprop.png", target, class_names)
    return {**result, "target": target}


def deconvnet(model: nn.Module, images: Images, out_dir: str | Path, layer: str | None = None,
              channel: int | None = None, target: int | None = None, mean=None, std=None, size=None,
              class_names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """``deconvnet.png``: with ``layer``, the top activation of ``channel`` (default: the layer's strongest
    channel on these images) projected to pixel space by the deconvnet and by guided backpropagation, beside
    the image patch it sees (Zeiler & Fergus 2014, figure 2); without, the projection of the class score."""
    images, display = _images(model, images, mean, std, size)
    if layer is None:
        target = attribution.explained_classes(model, images, target)
        result = backprojection.deconvnet(model, images, target)
        attribution.plot_attribution(display, {"deconvnet": backprojection.as_picture(result)},
                                     Path(out_dir) / "deconvnet.png", target, class_names)
        return {"deconvnet": result, "target": target}
    find_layer(model, layer)
    if channel is None:
        channel = backprojection.strongest_channel(model, images, layer)
    result = {rule: backprojection.unit_projection(model, images, layer, channel, rule)
              for rule in ("deconvnet", "guided")}
    backprojection.plot_unit_projections(display, {"deconvnet": result["deconvnet"],
                                                   "guided backprop": result["guided"]},
                                         Path(out_dir) / "deconvnet.png", f"{layer}:{channel}")
    return {"deconvnet": result["deconvnet"], "guided_backprop": result["guided"], "channel": torch.tensor(channel)}


def dream(model: nn.Module, images: Images, out_dir: str | Path, layers: Sequence[str] | None = None,
          steps: int = 20, octaves: int = 4, octave_scale: float = 1.4, jitter: int = 32, step_size: float = 0.006,
          seed: int = 0, mean=None, std=None, size: int | None = None,
          progress: bool = False) -> list[list[DreamResult]]:
    """``dream.png`` (``dream_<k>.png`` for the k-th image when several): each photo beside its DeepDream with each
    of ``layers`` (stage or module names; default a middle stage), titled with the rise of the layer's activation
    RMS. A photo keeps its aspect ratio, its longer side scaled to ``size`` pixels (default: the model's input
    size); a tensor is dreamt as given. Returns, per image, one :class:`DreamResult` per layer."""
    settings = DreamSettings(steps=steps, step_size=step_size, octaves=octaves, octave_scale=octave_scale,
                             jitter=jitter, seed=seed)
    layers = list(layers) if layers else [default_dream_layer(model)]
    batches = _dream_inputs(model, images, mean, std, size)
    everything = []
    for number, (batch, spec) in enumerate(batches):
        results = [deep_dream(model, batch, layer, spec, settings, progress=progress) for layer in layers]
        name = "dream.png" if len(batches) == 1 else f"dream_{number}.png"
        plot_dreams(spec.denormalize(batch), results, Path(out_dir) / name)
        everything.append(results)
    return everything


def _dream_inputs(model: nn.Module, images: Images, mean, std,
                  size: int | None) -> list[tuple[torch.Tensor, InputSpec]]:
    """(batch, spec) per photo, each at its own aspect ratio (a dream wants the whole photo, not the classifier's
    centre crop), or the one batch a tensor is."""
    if isinstance(images, torch.Tensor):
        spec = input_spec(model, size=tuple(images.shape[-2:]), channels=images.shape[1], mean=mean, std=std)
        return [(images, spec)]
    card = card_of(model)
    channels = card.in_channels or 3
    size = size or (max(card.input_size) if card.input_size else None)
    out = []
    for path in images:
        pixels = read_image(str(path), channels).float().div_(255)
        pixels = resize_longer_side(pixels, size) if size else pixels
        spec = input_spec(model, size=tuple(pixels.shape[-2:]), channels=channels, mean=mean, std=std)
        out.append((spec.normalize(pixels[None]), spec))
    return out


def embed(model: nn.Module, batches: Batches, out_dir: str | Path, class_names: Sequence[str] | None = None,
          max_examples: int = 2000, seed: int = 0, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``embed.png``: t-SNE of the penultimate features of the first ``max_examples`` test examples."""
    features, labels = penultimate_features(model, batches, max_examples=max_examples, progress=progress)
    coordinates = tsne(features, seed=seed, progress=progress)
    plot_embedding(coordinates, labels, Path(out_dir) / "embed.png", class_names)
    return coordinates, labels.numpy()


def confusion(model: nn.Module, batches: Batches, out_dir: str | Path,
              class_names: Sequence[str] | None = None) -> torch.Tensor:
    """``confusion.png``: the confusion matrix on ``batches`` with class names."""
    matrix = confusion_matrix(model, batches, len(class_names) if class_names else None)
    plot_confusion(matrix, Path(out_dir) / "confusion.png", class_names)
    return matrix


def curves(run_dir: str | Path, out_dir: str | Path) -> dict[str, np.ndarray]:
    """``curves.png``: loss, accuracy and learning rate per epoch from ``RUN_DIR/metrics.csv``."""
    metrics = read_metrics(run_dir)
    plot_curves(metrics, Path(out_dir) / "curves.png", title=Path(run_dir).name)
    return metrics


def gradients(run_dirs: Sequence[str | Path], out_dir: str | Path, epochs: Sequence[int] = (),
              steps: Sequence[int] = (), relative: bool = False, labels: Sequence[str] | None = None) -> dict:
    """``gradients.png``: each run's per-layer gradient norms against depth at the chosen epochs or steps
    (default: the first step and the last epoch), and its first-to-last layer ratio over training, from the
    ``gradients.json`` that ``--record-gradients N`` makes; returns {label: records}."""
    labels = list(labels) if labels else [Path(run_dir).name or str(run_dir) for run_dir in run_dirs]
    runs = {label: read_gradient_records(run_dir) for label, run_dir in zip(labels, run_dirs)}
    plot_gradient_depth(list(runs.items()), Path(out_dir) / "gradients.png", epochs, steps, relative)
    return runs


def landscape(model: nn.Module, batches: Batches, out_dir: str | Path,
              start: Mapping[str, torch.Tensor] | None = None, num_examples: int = 1000, resolution: int = 21,
              span: float = 1.0, seed: int = 0, points_per_pass: int = 1, progress: bool = False) -> dict[str, object]:
    """``landscape.png`` (contour + surface on two filter-normalised directions), ``landscape.json`` (grid and
    curvature statistics, for comparing two networks) and, with a ``start`` state dict (e.g. the
    initial checkpoint), ``interpolation.png``: the loss along the line from ``start`` to the model."""
    out_dir = Path(out_dir)
    subset = fixed_subset(batches, num_examples)
    surface = loss_surface(model, subset, resolution, span, seed, points_per_pass=points_per_pass,
                           png=out_dir / "landscape.png", progress=progress)
    summary: dict[str, object] = {
        "statistics": surface.statistics,
        "alphas": surface.alphas.tolist(),
        "losses": surface.losses.tolist(),
        "num_examples": sum(len(labels) for _, labels in subset),
        "seed": seed,
    }
    if start is not None:
        ts, losses = loss_along_line(model, start, model.state_dict(), subset,
                                     png=out_dir / "interpolation.png", progress=progress)
        summary["interpolation"] = {"t": ts.tolist(), "loss": losses.tolist()}
    (out_dir / "landscape.json").write_text(json.dumps(summary, indent=1))
    return summary
