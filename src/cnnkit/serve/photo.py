"""The Photo page: the pretrained EfficientNet-Lite0's top-5 ImageNet labels and a Grad-CAM overlay."""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..card import ModelCard, card_of
from ..errors import CheckpointError
from ..models import create_model
from ..predict import top_classes
from ..viz import gradcam
from ..viz.commands import default_gradcam_layer
from .errors import ModelUnavailableError
from .images import overlay_heatmap, png_data_url

PHOTO_MODEL, PHOTO_WEIGHTS = "efficientnet_lite0", "imagenet"
EXAMPLES_DIR = Path(__file__).with_name("examples")
EXAMPLE_SUFFIXES = (".jpg", ".jpeg", ".png")


def list_examples() -> list[str]:
    return sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


class PhotoClassifier:
    """Loads the network on first use (about a second) rather than at start-up, so `cnnkit serve` starts at
    once and the other pages work on machines without the pretrained weights.

    Grad-CAM attaches hooks to the network it explains, so one copy of the network serves one request at a
    time. Concurrent requests borrow copies from a pool that grows, on demand, to ``max_copies`` (the number
    of inference workers; about 20 MB each) instead of queueing on one lock."""

    def __init__(self, max_copies: int = 1):
        self._lock = threading.Lock()
        self._model = None
        self._card: ModelCard | None = None
        self._gradcam_layer: str | None = None
        self.max_copies = max(1, max_copies)
        self._idle: queue.Queue = queue.Queue()
        self._copies = 0

    def _load(self):
        with self._lock:
            if self._model is None:
                try:
                    model = create_model(PHOTO_MODEL, pretrained=PHOTO_WEIGHTS)
                except CheckpointError as exc:
                    raise ModelUnavailableError(f"The Photo page needs the pretrained {PHOTO_MODEL}: {exc}") from None
                self._card = card_of(model)
                self._model = model.eval()
        return self._model, self._card

    @contextlib.contextmanager
    def _borrowed_copy(self):
        model, _ = self._load()
        with self._lock:
            make = self._idle.empty() and self._copies < self.max_copies
            if make:
                self._copies += 1
        # Copies are made from the loaded network, which is never lent out itself: it carries no request's
        # hooks, so a copy made while other requests run starts clean.
        copy_ = copy.deepcopy(model) if make else self._idle.get()  # blocks while all copies are in use
        try:
            yield copy_
        finally:
            self._idle.put(copy_)

    def classify(self, image: Image.Image, top_k: int = 5) -> dict:
        _, card = self._load()
        # The eval transform predict and viz use: the page shows, and Grad-CAM explains, the same crop.
        transform = card.eval_transform()
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
        crop = transform.crop(pixels, "the photo")
        batch = transform.normalise(crop[None])
        crop = Image.fromarray(crop.permute(1, 2, 0).numpy())
        with self._borrowed_copy() as model:
            top = top_classes(model, batch, top_k)[0]
            best = top[0][0]
            if self._gradcam_layer is None:  # the same network every time: find its last convolution once
                self._gradcam_layer = default_gradcam_layer(model, batch)
            layer = self._gradcam_layer
            heatmap = gradcam(model, batch, layer, target=best)[0]
        names = card.classes
        return {
            "model": PHOTO_MODEL,
            "labels": [{"label": names[i], "index": i, "p": p} for i, p in top],
            "gradcam_layer": layer, "gradcam_class": names[best],
            "input": png_data_url(np.asarray(crop)),
            "overlay": png_data_url(overlay_heatmap(crop, heatmap)),
        }
