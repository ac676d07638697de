"""The Detect page: a detection run of the checkpoints folder (``cnnkit detect train``) finds the objects in a
picture, and the page draws each one's box, class and score; a slider hides the detections under a score.

A picture is read as the run's training canvases were made: grey or colour as its ``image_shape`` says, scaled
down (never up: the objects would outgrow the anchors) to fit the canvases' size, and normalised by the run's own
mean and std. Boxes are (x1, y1, x2, y2) in the pixels of the picture as read (the answer's ``image``, ``width``
and ``height``), each with its class name, score and the colour cnnkit.detect.draw gives its class; ``drawn``
is the same detections drawn on the server by :func:`cnnkit.detect.draw.draw_detections`. Requests for one
detector share forward passes (batching.py); pictures of one size go through together.
"""

from __future__ import annotations

import math
import shlex
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.augment import normalize
from ..detect.draw import COLOURS, draw_detections
from ..errors import ImageError
from ..viz.hooks import evaluation_mode
from .checkpoints import CheckpointFolder, LoadedCheckpoint, page_problem
from .errors import NotDetectorError
from .images import decode_upload, png_data_url
from .photo import EXAMPLES_DIR

DETECT_EXAMPLES_DIR = EXAMPLES_DIR / "detect"
# The examples are test canvases of the data `cnnkit detect train` uses by default: made from MNIST's test
# images, so a detector trained that way has never seen them. docs/detect_examples.py writes them from this
# recipe and tests/serve/test_detect_api.py checks that they still match it.
EXAMPLE_CANVASES = {"name": "canvas-mnist", "num_train": 1, "num_test": 500, "seed": 0}
EXAMPLE_INDICES = (0, 1, 3, 5, 6, 13)  # two or three digits each
MIN_SIDE = 16  # pixels: below this the backbone's last feature map is a few cells and no digit fits an anchor
MAX_SIDE = 1024  # a run's canvases larger than this are not something a browser upload should be scaled to
DRAWN_SIDE = 256  # the server-drawn picture is enlarged (nearest) to about this, so its labels are readable
# Input values in one forward pass: 64 colour 64x64 canvases. A detector's activations per input pixel are far
# larger than LeNet's, so a batch of big pictures is split into passes of this size.
MAX_PASS_VALUES = 64 * 3 * 64 * 64
TRAIN_COMMAND = "cnnkit detect train --data canvas-mnist --num-train 4000 --epochs 5 --threads 1 --out {out}"


def train_command(checkpoints_root: Path) -> str:
    """The command that trains a detector into the checkpoints folder (what the README measures)."""
    return TRAIN_COMMAND.format(out=shlex.quote(str(Path(checkpoints_root) / "frcnn-canvas")))


def list_detect_examples() -> list[str]:
    if not DETECT_EXAMPLES_DIR.is_dir():
        return []
    return sorted(p.name for p in DETECT_EXAMPLES_DIR.iterdir() if p.suffix.lower() == ".png")


def detection_problem(meta: dict) -> str | None:
    """Why the Detect page cannot use a run (None when it can): a detector of grey or colour pictures whose
    class names (background first), normalisation and network belong together."""
    problem = page_problem(meta, "detection", "detector", "the Detect page finds objects, so pick a run of "
                           "'cnnkit detect train'", MAX_SIDE)
    if problem:
        return problem
    shape = meta["image_shape"]
    classes, described = meta.get("classes"), meta.get("model")
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        return "its checkpoint names no classes (the background and at least one object class)"
    if isinstance(described, dict) and described.get("num_classes") != len(classes):
        return (f"its checkpoint names {len(classes)} classes (background included) but its network has "
                f"{described.get('num_classes')}; the pair does not belong together, so retrain the run")
    if isinstance(described, dict) and described.get("in_channels") != shape[0]:
        return (f"its pictures have {shape[0]} channel(s) but its network reads {described.get('in_channels')}; the "
                "pair does not belong together, so retrain the run")
    preprocess = meta.get("preprocess") or {}
    if not all(isinstance(preprocess.get(k), list) and len(preprocess[k]) in (1, shape[0]) for k in ("mean", "std")):
        return f"its checkpoint does not give the mean and std of its {shape[0]} input channel(s)"
    return None


def refuse_non_detector(loaded: LoadedCheckpoint) -> None:
    problem = detection_problem(loaded.meta)
    if problem:
        raise NotDetectorError(f"Checkpoint {loaded.name!r} cannot be used on the Detect page: {problem}.")


def picture_to_input(picture: Image.Image, image_shape, name: str) -> tuple[torch.Tensor, float]:
    """The picture as the detector's uint8 (C, h, w) input, and the factor its sides were scaled by."""
    height, width = int(image_shape[1]), int(image_shape[2])
    scale = min(1.0, height / picture.height, width / picture.width)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    if min(size) < MIN_SIDE:
        read = f"is {picture.width}x{picture.height} pixels" if scale == 1 else (
            f"is {picture.width}x{picture.height} pixels, {size[0]}x{size[1]} once scaled to fit the {width}x{height} "
            "canvases the detector was trained on")
        raise ImageError(f"{name} {read}; the detector needs at least {MIN_SIDE} pixels a side. Upload a larger "
                         "picture, or crop it closer to the objects.")
    if scale < 1:
        picture = picture.resize(size, Image.BILINEAR)
    pixels = np.asarray(picture)
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1), scale


def detect_pictures(loaded: LoadedCheckpoint, pictures: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The detector's detections (boxes, scores, labels) for each uint8 (C, h, w) picture, without gradients;
    pictures of one size share forward passes."""
    mean, std = loaded.meta["preprocess"]["mean"], loaded.meta["preprocess"]["std"]
    by_size: dict[tuple, list[int]] = defaultdict(list)
    for index, picture in enumerate(pictures):
        by_size[tuple(picture.shape)].append(index)
    found: list = [None] * len(pictures)
    for shape, indices in by_size.items():
        per_pass = max(1, MAX_PASS_VALUES // math.prod(shape))
        for start in range(0, len(indices), per_pass):
            chunk = indices[start:start + per_pass]
            batch = normalize(torch.stack([pictures[i] for i in chunk]).float() / 255, mean, std)
            with loaded.lock, torch.no_grad(), evaluation_mode(loaded.model):
                outputs = loaded.model(batch)
            if not (isinstance(outputs, (list, tuple)) and len(outputs) == len(chunk) and all(
                    isinstance(o, dict) and {"boxes", "scores", "labels"} <= o.keys() for o in outputs)):
                raise NotDetectorError(f"Checkpoint {loaded.name!r}: its network does not answer with boxes, scores "
                                       "and labels per picture, as a detector of 'cnnkit detect train' does.")
            for index, output in zip(chunk, outputs):
                found[index] = {key: output[key].detach().cpu() for key in ("boxes", "scores", "labels")}
    return found


def colour_of(label: int) -> str:
    """The colour draw_detections gives class ``label``, as CSS."""
    red, green, blue = COLOURS[(label - 1) % len(COLOURS)]
    return f"#{red:02x}{green:02x}{blue:02x}"


def detection_answer(loaded: LoadedCheckpoint, picture: torch.Tensor, found: dict, source: str, scale: float,
                     min_score: float) -> dict:
    """The page's answer for one picture: the detections scoring at least ``min_score``, best first, and the
    picture as read, plain and with them drawn."""
    classes = loaded.meta["classes"]
    keep = found["scores"] >= min_score
    kept = {key: value[keep] for key, value in found.items()}
    labels = kept["labels"].tolist()
    if any(not 1 <= label < len(classes) for label in labels):
        raise NotDetectorError(f"Checkpoint {loaded.name!r} names {len(classes)} classes (background included) but "
                               f"its network answered class {max(labels)}; the pair does not belong together.")
    detections = [{"box": box, "label": classes[label], "class_index": label, "score": score,
                   "colour": colour_of(label)}
                  for box, score, label in zip(kept["boxes"].tolist(), kept["scores"].tolist(), labels)]
    height, width = picture.shape[1:]
    enlarge = max(1, DRAWN_SIDE // max(height, width))
    seen = picture.permute(1, 2, 0).numpy()
    return {
        "detector": loaded.name, "source": source, "width": width, "height": height, "scale": scale,
        "min_score": min_score, "classes": classes[1:], "detections": detections,
        "image": png_data_url(seen[..., 0] if seen.shape[-1] == 1 else seen),
        "drawn": png_data_url(np.asarray(draw_detections(picture, kept, classes, scale=enlarge))),
    }


def detections_answerer(checkpoints: CheckpointFolder, max_upload_bytes: int):
    """``answer(name, requests)``: the Detect page's answers for requests (bytes, content type, file name,
    min_score) sent to detector ``name`` (a MicroBatcher's ``run_batch``).

    A bad name or a run that is no detector fails the whole batch (every request in it named that run), before
    any upload is decoded; an upload that cannot be decoded fails only its own request."""

    def answer(name: str, requests: list[tuple[bytes, str | None, str, float]]) -> list:
        loaded = checkpoints.load(name)
        refuse_non_detector(loaded)
        shape = loaded.meta["image_shape"]
        answers: list = [None] * len(requests)
        ready = []
        for index, (data, content_type, file_name, _) in enumerate(requests):
            try:
                picture = decode_upload(data, content_type, file_name, max_upload_bytes, channels=shape[0])
                ready.append((index, *picture_to_input(picture, shape, file_name)))
            except Exception as exc:  # noqa: BLE001 - this request's own error, raised where it waits
                answers[index] = exc
        found = detect_pictures(loaded, [picture for _, picture, _ in ready])
        for (index, picture, scale), detections in zip(ready, found):
            file_name, min_score = requests[index][2], requests[index][3]
            answers[index] = detection_answer(loaded, picture, detections, file_name, scale, min_score)
        return answers

    return answer
