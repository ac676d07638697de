"""What the Draw and Train pages show of a network: class probabilities, first-layer filters and the feature
maps of each layer, as JSON with PNG data URLs. The arrays come from cnnkit.viz; this module only lays them out
for a browser."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointError
from ..predict import preprocess_from_meta
from ..viz import conv_weights, feature_maps, plots
from ..viz.filters import filter_images
from ..viz.hooks import executed_layers
from .images import colourise, grey_or_colour, png_data_url

MAX_MAP_LAYERS = 8
MAX_CHANNELS_SHOWN = 32
WEIGHTED = (nn.Conv2d, nn.Linear)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def filters_picture(model: nn.Module) -> dict:
    """The first convolution's kernels as one tiled image (grey for 1-channel inputs, colour for RGB)."""
    from ..viz.hooks import first_module_of_type

    layer = first_module_of_type(model, nn.Conv2d)
    weights = conv_weights(model, layer)
    images = filter_images(weights, max_filters=64, max_channels=16)
    columns = None if weights.shape[1] in (1, 3) else min(weights.shape[1], 16)
    grid = plots.tile(images, columns=columns)
    return {"layer": layer, "shape": list(weights.shape), "image": png_data_url(grey_or_colour(grid))}


def map_layers(model: nn.Module, batch: torch.Tensor) -> list[tuple[str, str]]:
    """(layer to record, weighted layer it belongs to) for each convolution, subsampling and hidden fully
    connected layer, at most MAX_MAP_LAYERS spread from first to last.

    Each weighted layer is shown after its activation, normalisation and pooling, i.e. the output of the last
    module before the next weighted one: that is what the next layer reads, and what the papers draw. The
    model's last module is left out; its output is the bar chart. Layers are taken in the order they run on
    ``batch`` (definition order misleads: GoogLeNet defines auxiliary heads that only run in training).
    """
    modules = dict(model.named_modules())
    leaves = [(name, modules[name]) for name in executed_layers(model, batch[:1])
              if not any(True for _ in modules[name].children())]
    last = len(leaves) - 1

    def is_weighted(module: nn.Module) -> bool:
        if isinstance(module, NORMS):
            return False  # part of the layer before it, not a layer of its own
        return isinstance(module, WEIGHTED) or any(True for _ in module.parameters(recurse=False))

    weighted = [i for i in range(last) if is_weighted(leaves[i][1])]
    picks = []
    for position, index in enumerate(weighted):
        end = (weighted[position + 1] if position + 1 < len(weighted) else last) - 1
        picks.append((leaves[end][0], leaves[index][0]))
    if len(picks) > MAX_MAP_LAYERS:
        step = (len(picks) - 1) / (MAX_MAP_LAYERS - 1)
        picks = [picks[round(k * step)] for k in range(MAX_MAP_LAYERS)]
    return picks


def maps_pictures(model: nn.Module, batch: torch.Tensor) -> list[dict]:
    pairs = map_layers(model, batch)
    outputs = feature_maps(model, batch, [recorded for recorded, _ in pairs])
    pictures = []
    for recorded, layer in pairs:
        first = outputs[recorded][0]
        if first.ndim == 3:
            grid = plots.tile(plots.scale_each(first[:MAX_CHANNELS_SHOWN].unsqueeze(1)))
        else:
            grid = plots.vector_as_square(plots.scale_each(first.flatten().unsqueeze(0)))
        pictures.append({"layer": layer, "recorded": recorded, "shape": list(outputs[recorded].shape[1:]),
                         "image": png_data_url(colourise(grid))})
    return pictures


@torch.no_grad()
def classify(model: nn.Module, meta: dict, batch_uint8: torch.Tensor) -> tuple[list[dict], torch.Tensor]:
    """Probabilities of every class, in class order, and the preprocessed batch the model read."""
    if not meta.get("classes"):
        raise CheckpointError(f"The checkpoint of {meta['model'].get('name')} has no class names: it is not a "
                              "classifier, so there is nothing to predict for a drawing.")
    batch = preprocess_from_meta(meta)(batch_uint8)
    logits = model(batch).float()
    probabilities = torch.softmax(logits, dim=1)[0].tolist()
    return [{"class": name, "p": p} for name, p in zip(meta["classes"], probabilities)], batch


def draw_response(model: nn.Module, meta: dict, batch_uint8: torch.Tensor) -> dict:
    probabilities, batch = classify(model, meta, batch_uint8)
    best = max(probabilities, key=lambda row: row["p"])
    seen = batch_uint8[0].permute(1, 2, 0).numpy()
    return {
        "prediction": best["class"], "confidence": best["p"], "probabilities": probabilities,
        "input": png_data_url(seen[..., 0] if seen.shape[-1] == 1 else seen),
        "maps": maps_pictures(model, batch),
    }
