"""The Explain page: any zoo classifier (random weights, or pretrained where cnnkit has them) or a run folder of
the checkpoints folder, one convolution at a time: its feature maps, and one unit of them explained (unit.py).

    GET  /api/explain/sources                 the networks to explain: runs, then zoo models (pretrained first)
    GET  /api/explain/layers?source=S         the network's input and its convolutions (kernel, stride, padding,
                                              input and output size, receptive field)
    POST /api/explain/maps                    multipart: source, layer, channel, and the input (example=NAME, an
                                              image, with drawing=1 for a canvas drawing) -> the feature maps
    POST /api/explain/unit                    the same plus row and column -> the unit explained

A source is ``run:NAME`` (a run folder, by name only), ``zoo:MODEL`` (the architecture with its own seeded
random initialisation) or ``zoo:MODEL@TAG`` (registered pretrained weights, e.g. efficientnet_lite0@imagenet).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Annotated

import numpy as np
import torch
from fastapi import FastAPI, File, Form, UploadFile
from PIL import Image
from torch import nn

from ..analysis import summary
from ..card import card_from_meta, card_of
from ..data.transforms import EvalTransform
from ..errors import CnnkitError, ImageError, UnknownNameError, did_you_mean
from ..models.registry import create_model, get_model_entry, list_models
from ..viz import plots
from ..viz.hooks import UnitOutOfRangeError, evaluation_mode, record_outputs
from ..weights import list_pretrained
from .checkpoints import CheckpointFolder, drawing_problem
from .errors import ModelUnavailableError, NotDrawableError, UnknownExampleError
from .images import colourise, decode_upload, drawing_to_input, png_data_url
from .inference import InferencePool
from .photo import EXAMPLES_DIR, list_examples
from .unit import convolution_rows, explain_unit

MAX_CACHED_MODELS = 2  # zoo networks built for the page (a VGG is half a gigabyte); runs are cached by Draw
MAX_THUMBNAILS = 32  # channel pictures sent with the maps; the others are reached by number
THUMBNAIL_SIDE = 48  # pixels: the page shows them 40 wide
MAX_SIDE = 512
RANDOM_SEED = 0  # a zoo network at random initialisation is the same network on every request
STAND_IN_STATISTIC = 0.5  # mean and std for a network without its own: pixels in [0, 1] become [-1, 1]


class UnknownSourceError(UnknownNameError):
    http_status = 404


@dataclasses.dataclass
class ExplainModel:
    source: str
    model: nn.Module
    input_shape: tuple[int, int, int]
    transform: EvalTransform
    lock: threading.Lock  # one forward pass at a time: the recording hooks attach to the shared network
    data_shape: tuple[int, int, int] | None = None  # a run's images (MNIST's 28x28), before fitting to input_shape
    fit: object = None  # the run's own fitting to the network's input (LeNet-5 reads 28x28 digits framed in 32x32)
    rows: list | None = None  # the calculator's table at input_shape
    layers: list[dict] | None = None


def _zoo_sources() -> list[dict]:
    pretrained = [{"source": f"zoo:{model}@{tag}", "label": f"{model} ({tag} weights)", "kind": "pretrained",
                   "input_shape": list(get_model_entry(model).input_size)} for model, tag in list_pretrained()]
    random = [{"source": f"zoo:{name}", "label": f"{name} (random weights)", "kind": "random",
               "input_shape": list(get_model_entry(name).input_size)}
              for name in list_models() if get_model_entry(name).task == "classification"]
    return pretrained + random


class ExplainModels:
    def __init__(self, checkpoints: CheckpointFolder):
        self.checkpoints = checkpoints
        self._zoo: collections.OrderedDict[str, ExplainModel] = collections.OrderedDict()
        self._runs: dict[str, ExplainModel] = {}
        self._lock = threading.Lock()

    def sources(self) -> list[dict]:
        runs = [{"source": f"run:{run['name']}", "label": f"{run['name']} ({run['model']} on {run['dataset']})",
                 "kind": "run", "input_shape": run["image_shape"]}
                for run in self.checkpoints.list() if run["drawable"]]
        return runs + _zoo_sources()

    def get(self, source: str) -> ExplainModel:
        if not isinstance(source, str) or ":" not in source:
            raise UnknownSourceError(f"{source!r} names no network: use run:NAME, zoo:MODEL or zoo:MODEL@TAG "
                                     "(GET /api/explain/sources lists them).")
        kind, name = source.split(":", 1)
        if kind == "run":
            return self._run(name)
        if kind != "zoo":
            raise UnknownSourceError(f"{source!r}: the part before ':' must be 'run' or 'zoo', not {kind!r}.")
        with self._lock:
            if source in self._zoo:
                self._zoo.move_to_end(source)
                return self._zoo[source]
            built = self._build_zoo(name)
            self._zoo[source] = built
            while len(self._zoo) > MAX_CACHED_MODELS:
                self._zoo.popitem(last=False)
            return built

    def _run(self, name: str) -> ExplainModel:
        loaded = self.checkpoints.load(name)
        problem = drawing_problem(loaded.meta)
        if problem:
            raise NotDrawableError(f"Run {name!r} cannot be explained here: {problem}.")
        cached = self._runs.get(name)
        if cached is not None and cached.model is loaded.model:
            return cached
        data_shape = tuple(loaded.meta["image_shape"])
        card = card_from_meta(loaded.meta)
        preprocess = card.preprocess()
        shape = (data_shape[0], *(preprocess.input_size or data_shape[1:]))
        transform = EvalTransform(shape[1:], None, card.interpolation, card.mean, card.std)
        self._runs[name] = ExplainModel(f"run:{name}", loaded.model, shape, transform, loaded.lock, data_shape,
                                        preprocess.fit_size)
        return self._runs[name]

    @staticmethod
    def _build_zoo(name: str) -> ExplainModel:
        model_name, _, tag = name.partition("@")
        entry = get_model_entry(model_name)  # an unknown model fails here, with suggestions
        if entry.task != "classification":
            raise UnknownSourceError(f"{model_name} is a {entry.task} model; the Explain page takes classifiers.")
        if tag:
            tags = [t for _, t in list_pretrained(model_name)]
            if tag not in tags:
                raise UnknownSourceError(f"No pretrained weights {tag!r} for {model_name}; registered: "
                                         f"{', '.join(tags) or 'none'} (or leave the tag out for random weights)."
                                         f"{did_you_mean(tag, tags)}")
            try:
                model = create_model(model_name, pretrained=tag)
            except CnnkitError as exc:
                raise ModelUnavailableError(f"The pretrained {model_name} cannot be loaded here: {exc}") from None
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(RANDOM_SEED)
                model = create_model(model_name)
        channels, height, width = entry.input_size
        if max(height, width) > MAX_SIDE or channels not in (1, 3):
            raise ImageError(f"{model_name} reads {channels}x{height}x{width} inputs; the Explain page takes grey "
                             f"or colour images of at most {MAX_SIDE} pixels a side.")
        card = card_of(model)
        stand_in = (STAND_IN_STATISTIC,) * channels
        transform = card.eval_transform(stand_in, stand_in)
        if card.input_size is None:
            transform = dataclasses.replace(transform, size=(height, width))
        return ExplainModel(f"zoo:{name}", model.eval(), (channels, height, width), transform, threading.Lock())


# ------------------------------------------------------------------------------------------------ inputs
def picture_of(example: str | None, upload: tuple[bytes, str | None, str] | None, max_upload_bytes: int):
    if upload is not None and example:
        raise ImageError("Send either an image or an example name, not both.")
    if example:
        if example not in list_examples():  # a name from the list, never a path
            raise UnknownExampleError(f"No example picture {example!r}; choose one of {', '.join(list_examples())}.")
        kind = "image/png" if example.lower().endswith(".png") else "image/jpeg"
        upload = ((EXAMPLES_DIR / example).read_bytes(), kind, example)
    if upload is None:
        raise ImageError("No input: name an example, upload an image or send a drawing.")
    return decode_upload(*upload, max_upload_bytes)


def model_input(explained: ExplainModel, picture: Image.Image, drawing: bool) -> torch.Tensor:
    """The (1, C, H, W) uint8 picture the network reads: a drawing centred the MNIST way (grey networks), a
    photo resized and centre-cropped as the weights' evaluation transform does; for a run, made the size of its
    training images and then fitted to the network's input as its training batches were."""
    shape = explained.data_shape or explained.input_shape
    if drawing:
        pixels = drawing_to_input(picture, shape)
    else:
        grey_or_rgb = np.asarray(picture.convert("L" if shape[0] == 1 else "RGB"))
        pixels = torch.from_numpy(grey_or_rgb.copy()).reshape(*grey_or_rgb.shape[:2], shape[0]).permute(2, 0, 1)
        crop = explained.transform if explained.data_shape is None else EvalTransform(shape[1:])
        pixels = crop.crop(pixels, "the picture")[None]
    if explained.fit is not None and tuple(pixels.shape[-2:]) != tuple(explained.input_shape[1:]):
        pixels = explained.fit(pixels.float()).round().clamp(0, 255).to(torch.uint8)
    return pixels


def calculator_rows(explained: ExplainModel) -> list:
    """The calculator's table of the network (hold its lock: the calculator hooks the shared network)."""
    if explained.rows is None:
        explained.rows = summary(explained.model, explained.input_shape).rows
    return explained.rows


def conv_layers(explained: ExplainModel) -> list[dict]:
    """The network's convolutions in the order they run, with what the page's size calculator needs."""
    if explained.layers is not None:
        return explained.layers
    modules = dict(explained.model.named_modules())
    inputs: dict[str, list[int]] = {}
    def record(name):
        def hook(module, args):  # returns None: a pre-hook's answer would replace the layer's input
            inputs.setdefault(name, list(args[0].shape[1:]))
        return hook

    with explained.lock:
        rows = convolution_rows(explained.model, calculator_rows(explained))
        handles = [modules[r.name].register_forward_pre_hook(record(r.name)) for r in rows]
        try:
            with torch.no_grad(), evaluation_mode(explained.model):
                explained.model(torch.zeros(1, *explained.input_shape))
        finally:
            for handle in handles:
                handle.remove()
    layers = []
    for row in rows:
        conv = modules[row.name]
        same = type(conv).__name__ == "Conv2dSame" or conv.padding == "same"
        layers.append({"name": row.name, "type": row.type, "input_shape": inputs.get(row.name),
                       "output_shape": list(row.output_shape), "kernel": list(conv.kernel_size),
                       "stride": list(conv.stride), "padding": [0, 0] if same else list(conv.padding),
                       "same_padding": same, "dilation": list(conv.dilation), "groups": conv.groups,
                       "receptive_field": row.receptive_field, "jump": row.jump})
    explained.layers = layers
    return layers


def checked_layer(explained: ExplainModel, layer: str | None) -> dict:
    layers = conv_layers(explained)
    if not layer:
        return layers[0]
    for entry in layers:
        if entry["name"] == layer:
            return entry
    names = [entry["name"] for entry in layers]
    raise UnknownNameError(f"{explained.source} has no convolution {layer!r}; pick one of {', '.join(names)}."
                           f"{did_you_mean(layer, names)}")


def _map_picture(values: torch.Tensor, max_side: int | None = None) -> str:
    """One channel as a coloured PNG; a thumbnail is averaged down to ``max_side`` (32 full-size maps of a
    112x112 layer came to nearly a megabyte of JSON for pictures shown 40 pixels wide)."""
    values = values[None, None]
    if max_side and max(values.shape[-2:]) > max_side:
        scale = max_side / max(values.shape[-2:])
        size = [max(1, round(side * scale)) for side in values.shape[-2:]]
        values = torch.nn.functional.interpolate(values, size=size, mode="area")
    return png_data_url(colourise(plots.scale_each(values)[0, 0].numpy()))


def maps_answer(explained: ExplainModel, pixels: torch.Tensor, layer: str | None, channel: int) -> dict:
    entry = checked_layer(explained, layer)
    batch = explained.transform.normalise(pixels)
    with explained.lock, torch.no_grad(), evaluation_mode(explained.model), \
            record_outputs(explained.model, [entry["name"]]) as recorded:
        explained.model(batch)
        output = recorded[entry["name"]][0].detach().float()
    if not 0 <= channel < output.shape[0]:
        raise UnitOutOfRangeError(f"channel {channel} is outside layer {entry['name']!r}, which has "
                                  f"{output.shape[0]} channels: pick 0 to {output.shape[0] - 1}.")
    chosen = output[channel]
    thumbnails = [_map_picture(output[c], THUMBNAIL_SIDE) for c in range(min(MAX_THUMBNAILS, output.shape[0]))]
    return {"source": explained.source, "layer": entry, "channel": channel, "input": _picture(pixels),
            "map": {"image": _map_picture(chosen), "min": float(chosen.min()), "max": float(chosen.max())},
            "thumbnails": thumbnails}


def _picture(pixels: torch.Tensor) -> str:
    seen = pixels[0].permute(1, 2, 0).numpy()
    return png_data_url(seen[..., 0] if seen.shape[-1] == 1 else seen)


def unit_answer(explained: ExplainModel, pixels: torch.Tensor, layer: str | None, channel: int, row: int,
                column: int) -> dict:
    entry = checked_layer(explained, layer)
    batch = explained.transform.normalise(pixels)
    with explained.lock:
        answer = explain_unit(explained.model, batch, entry["name"], channel, row, column, calculator_rows(explained))
    gradient = answer.pop("gradient").abs().sum(0)
    nonzero = torch.nonzero(gradient > 0)
    answer["gradient_support"] = None if not len(nonzero) else [
        int(nonzero[:, 0].min()), int(nonzero[:, 1].min()), int(nonzero[:, 0].max()), int(nonzero[:, 1].max())]
    peak = float(gradient.max())
    # Square root of the scaled magnitude: the few strongest pixels would otherwise leave the rest black.
    answer["gradient"] = png_data_url(colourise((gradient / peak).sqrt().numpy() if peak > 0 else gradient.numpy(),
                                                "inferno"))
    return {"source": explained.source, "input": _picture(pixels), "input_size": list(pixels.shape[-2:]),
            "layer_info": entry, **answer}


# ------------------------------------------------------------------------------------------------ routes
def add_explain_routes(app: FastAPI, checkpoints: CheckpointFolder, inference: InferencePool,
                       max_upload_bytes: int) -> ExplainModels:
    models = ExplainModels(checkpoints)

    @app.get("/api/explain/sources")
    def explain_sources():
        return {"sources": models.sources(), "examples": list_examples()}

    @app.get("/api/explain/layers")
    async def explain_layers(source: str):
        def run():
            explained = models.get(source)
            return {"source": source, "input_shape": list(explained.input_shape), "layers": conv_layers(explained)}
        return await inference.run(run)

    async def read_input(image: UploadFile | None):
        if image is None:
            return None
        return await image.read(), image.content_type, image.filename or "upload"

    def explained_input(source: str, example: str | None, upload, drawing: bool):
        """The network named ``source`` and the picture (example, upload or drawing) as its input tensor."""
        explained = models.get(source)
        return explained, model_input(explained, picture_of(example, upload, max_upload_bytes), drawing)

    @app.post("/api/explain/maps")
    async def explain_maps(source: Annotated[str, Form()], layer: Annotated[str | None, Form()] = None,
                           channel: Annotated[int, Form()] = 0, example: Annotated[str | None, Form()] = None,
                           drawing: Annotated[bool, Form()] = False,
                           image: Annotated[UploadFile | None, File()] = None):
        upload = await read_input(image)

        def run():
            return maps_answer(*explained_input(source, example, upload, drawing), layer, channel)
        return await inference.run(run)

    @app.post("/api/explain/unit")
    async def explain_unit_route(source: Annotated[str, Form()], row: Annotated[int, Form()],
                                 column: Annotated[int, Form()], layer: Annotated[str | None, Form()] = None,
                                 channel: Annotated[int, Form()] = 0, example: Annotated[str | None, Form()] = None,
                                 drawing: Annotated[bool, Form()] = False,
                                 image: Annotated[UploadFile | None, File()] = None):
        upload = await read_input(image)

        def run():
            return unit_answer(*explained_input(source, example, upload, drawing), layer, channel, row, column)
        return await inference.run(run)

    return models
