"""What the Draw and Train pages show of a network: class probabilities, first-layer filters and the feature
maps of each layer, as JSON with PNG data URLs. The arrays come from cnnkit.viz; this module only lays them out
for a browser."""

from __future__ import annotations

import torch
from torch import nn

from ..predict import preprocess_from_meta
from ..viz import conv_weights, plots
from ..viz.filters import filter_images
from ..viz.hooks import evaluation_mode, executed_layers, first_module_of_type, record_outputs
from .checkpoints import LoadedCheckpoint, drawing_problem
from .errors import NotDrawableError
from .images import colourise, grey_or_colour, png_data_url

MAX_MAP_LAYERS = 8
MAX_CHANNELS_SHOWN = 32
WEIGHTED = (nn.Conv2d, nn.Linear)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def filters_picture(model: nn.Module) -> dict:
    """The first convolution's kernels as one tiled image (grey for 1-channel inputs, colour for RGB)."""
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


def maps_pictures(pairs: list[tuple[str, str]], outputs: dict[str, torch.Tensor]) -> list[dict]:
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


def refuse_undrawable(loaded: LoadedCheckpoint) -> None:
    problem = drawing_problem(loaded.meta)
    if problem:
        raise NotDrawableError(f"Checkpoint {loaded.name!r} cannot be used on the Draw page: {problem}.")


def draw_responses(loaded: LoadedCheckpoint, batch_uint8: torch.Tensor) -> list[dict]:
    """For each drawing of the (N, C, H, W) uint8 batch: probabilities of every class (in class order), the
    input as the network saw it, and the feature maps.

    One forward pass over the whole batch records both the logits and the maps (serve/batching.py gathers
    the drawings that arrive together). Only that pass holds the checkpoint's lock (the recording hooks
    attach to the shared model); preparing the input and drawing the maps as PNGs run outside it."""
    meta, model = loaded.meta, loaded.model
    refuse_undrawable(loaded)
    batch = preprocess_from_meta(meta)(batch_uint8)
    with loaded.lock:
        if loaded.map_layers is None:
            loaded.map_layers = map_layers(model, batch)
        pairs = loaded.map_layers
        with torch.no_grad(), evaluation_mode(model), record_outputs(model, [r for r, _ in pairs]) as recorded:
            logits = model(batch)
            outputs = {name: recorded[name].detach() for name, _ in pairs}
    classes = meta["classes"]
    if logits.ndim != 2 or logits.shape[1] != len(classes):
        raise NotDrawableError(f"Checkpoint {loaded.name!r} names {len(classes)} classes but its network outputs "
                               f"{tuple(logits.shape[1:])} values per image; the pair does not belong together.")
    answers = []
    for row, chances in enumerate(torch.softmax(logits.float(), 1).tolist()):
        probabilities = [{"class": name, "p": p} for name, p in zip(classes, chances)]
        best = max(probabilities, key=lambda entry: entry["p"])
        seen = batch_uint8[row].permute(1, 2, 0).numpy()
        answers.append({
            "prediction": best["class"], "confidence": best["p"], "probabilities": probabilities,
            "input": png_data_url(seen[..., 0] if seen.shape[-1] == 1 else seen),
            "maps": maps_pictures(pairs, {name: output[row:row + 1] for name, output in outputs.items()}),
        })
    return answers
