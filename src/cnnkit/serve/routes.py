"""The playground's routes, one function per page's API (create_app in app.py wires them together).

Each ``add_*`` function registers its routes on the app and reads the shared state it needs (the checkpoints
folder, the inference pool, the training manager) from its arguments, never from globals.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from .. import __version__
from ..errors import ConfigError, ImageError
from .batching import MicroBatcher
from .checkpoints import CheckpointFolder
from .detection import DETECT_EXAMPLES_DIR, detections_answerer, list_detect_examples, train_command
from .errors import NoDetectorError, UnknownExampleError
from .images import decode_upload, drawing_to_input
from .inference import InferencePool
from .jobs import event_stream
from .photo import EXAMPLES_DIR, PhotoClassifier, list_examples
from .teaching import TeachingManager, upload_to_input
from .pictures import draw_responses, filters_picture, refuse_undrawable
from .training import TrainingManager, TrainRequest
from .zoo import checked_input_size, zoo_models, zoo_summary

STATIC_DIR = Path(__file__).with_name("static")
PAGES = {"/": "draw.html", "/photo": "photo.html", "/train": "train.html", "/zoo": "zoo.html"}
PAGES["/explain"] = "explain.html"
PAGES["/teach"] = "teach.html"
PAGES["/detect"] = "detect.html"
# Input values in one Draw forward pass: two 1024x1024 colour drawings, what two workers ran at once before
# batching; a batch of big drawings is split so its activations stay as small as they were.
MAX_PASS_VALUES = 2 * 3 * 1024 * 1024


def add_pages(app: FastAPI) -> None:
    def page(file_name: str):
        async def serve_page():
            return FileResponse(STATIC_DIR / file_name, media_type="text/html")
        return serve_page

    for route, file_name in PAGES.items():
        app.add_api_route(route, page(file_name), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/examples", StaticFiles(directory=EXAMPLES_DIR), name="examples")


def drawings_answerer(checkpoints: CheckpointFolder, max_upload_bytes: int):
    """``answer(name, uploads)``: the Draw page's answers for the uploads (bytes, content type, file name)
    sent to checkpoint ``name``, with one forward pass for all of them (a MicroBatcher's ``run_batch``).

    A bad name or an undrawable run fails the whole batch (every request in it named that run), before any
    upload is decoded; an upload that cannot be decoded fails only its own request."""

    def answer(name: str, uploads: list[tuple[bytes, str | None, str]]) -> list:
        loaded = checkpoints.load(name)
        refuse_undrawable(loaded)
        answers: list = [None] * len(uploads)
        inputs = []
        for index, (data, content_type, file_name) in enumerate(uploads):
            try:
                picture = decode_upload(data, content_type, file_name, max_upload_bytes)
                inputs.append((index, drawing_to_input(picture, loaded.meta["image_shape"])))
            except Exception as exc:  # noqa: BLE001 - this request's own error, raised where it waits
                answers[index] = exc
        per_pass = max(1, MAX_PASS_VALUES // math.prod(loaded.meta["image_shape"]))
        for start in range(0, len(inputs), per_pass):
            chunk = inputs[start:start + per_pass]
            drawn = draw_responses(loaded, torch.cat([batch for _, batch in chunk]))
            for (index, _), response in zip(chunk, drawn):
                answers[index] = {"checkpoint": name, **response}
        return answers

    return answer


def add_draw_routes(app: FastAPI, checkpoints: CheckpointFolder, inference: InferencePool,
                    max_upload_bytes: int) -> MicroBatcher:
    """The Draw page's checkpoints, filters and predictions; returns the batcher that serves the drawings."""
    drawings = MicroBatcher(drawings_answerer(checkpoints, max_upload_bytes), inference.start, what="drawings")

    @app.get("/api/checkpoints")
    def list_checkpoints():
        return {"checkpoints": checkpoints.list(), "folder": str(checkpoints.root)}

    @app.get("/api/checkpoints/{name}/filters")
    def checkpoint_filters(name: str):
        loaded = checkpoints.load(name)
        with loaded.lock:
            return {"checkpoint": name, **filters_picture(loaded.model)}

    @app.post("/api/draw")
    async def draw(checkpoint: Annotated[str, Form()], image: Annotated[UploadFile, File()]):
        # Decoding, loading and the forward pass run in the inference pool, batched with the drawings that
        # arrive meanwhile; the answer is plain JSON already, so FastAPI's encoder is skipped.
        upload = (await image.read(), image.content_type, image.filename or "drawing")
        return JSONResponse(await drawings.submit(checkpoint, upload))

    return drawings


async def chosen_picture(image: UploadFile | None, example: str | None, examples_dir: Path, examples: list[str],
                         what: str) -> tuple[bytes, str | None, str]:
    """(bytes, content type, name) of the uploaded image, or of the bundled example named (never a path)."""
    if image is not None and example:
        raise ImageError("Send either an image or an example name, not both.")
    if example:
        if example not in examples:  # a name from the list, never a path
            raise UnknownExampleError(f"No example {what} {example!r}; choose one of {', '.join(examples)}.")
        content_type = "image/png" if example.lower().endswith(".png") else "image/jpeg"
        return (examples_dir / example).read_bytes(), content_type, example
    if image is not None:
        return await image.read(), image.content_type, image.filename or "upload"
    raise ImageError("No image: upload a file in the 'image' field or name an example.")


def add_photo_routes(app: FastAPI, photos: PhotoClassifier, inference: InferencePool, max_upload_bytes: int) -> None:
    @app.get("/api/photo/examples")
    def photo_examples():
        return {"examples": [{"name": n, "url": f"/examples/{n}"} for n in list_examples()]}

    @app.post("/api/photo")
    async def photo(image: Annotated[UploadFile | None, File()] = None, example: Annotated[str | None, Form()] = None):
        data, content_type, name = await chosen_picture(image, example, EXAMPLES_DIR, list_examples(), "photo")

        def run():
            return photos.classify(decode_upload(data, content_type, name, max_upload_bytes))

        return {"source": name, **await inference.run(run)}


def add_training_routes(app: FastAPI, training: TrainingManager) -> None:
    @app.post("/api/train", status_code=202)
    def start_training(settings: TrainRequest):
        job = training.start(settings)
        return job.describe()

    @app.post("/api/train/stop")
    def stop_training():
        return training.stop().describe()

    @app.get("/api/train")
    def training_state():
        return {"job": training.job.describe() if training.job else None}

    @app.get("/api/train/events")
    async def training_events(request: Request, after: int = -1):
        """Server-sent events of the current (or last) run from event ``after + 1`` on; a page that opens
        mid-run first receives the whole history, so its curves start at the beginning."""
        return event_stream(request, training.job, after)


def add_info_routes(app: FastAPI, checkpoints: CheckpointFolder, max_upload_bytes: int) -> None:
    @app.get("/api/info")
    def info():
        return {"version": __version__, "checkpoints_dir": str(checkpoints.root),
                "max_upload_mb": max_upload_bytes / 2**20}

    @app.get("/api/zoo/models")
    def models():
        return {"models": zoo_models()}

    @app.get("/api/zoo/summary")
    def model_summary(model: str, input_size: str | None = None):
        return zoo_summary(model, checked_input_size(model, input_size))


class TeachSessionRequest(BaseModel):
    session: str


def add_teach_routes(app: FastAPI, teaching: TeachingManager, checkpoints: CheckpointFolder,
                     inference: InferencePool, max_upload_bytes: int) -> None:
    """The Teach page: a session, its images one per request, the fit (followed as events), and new pictures
    classified by the taught run (teaching.py)."""

    @app.post("/api/teach/session", status_code=201)
    def open_teaching_session():
        return teaching.open_session()

    @app.post("/api/teach/images")
    async def teach_image(session: Annotated[str, Form()], image: Annotated[UploadFile, File()],
                          label: Annotated[str, Form()] = ""):  # empty: refused with the naming rule
        teaching.check_upload(session, label)  # an ended session or a bad name is refused before decoding
        data, content_type, name = await image.read(), image.content_type, image.filename or "upload"

        def run():
            pixels = upload_to_input(decode_upload(data, content_type, name, max_upload_bytes))
            return teaching.add_image(session, label, pixels)

        return await inference.run(run)

    @app.post("/api/teach/close")
    def close_teaching_session(request: TeachSessionRequest):
        return teaching.close_session(request.session)

    @app.post("/api/teach/fit", status_code=202)
    def teach_fit(request: TeachSessionRequest):
        return teaching.fit(request.session).describe()

    @app.get("/api/teach")
    def teaching_state():
        return teaching.describe()

    @app.get("/api/teach/events")
    async def teaching_events(request: Request, after: int = -1):
        return event_stream(request, teaching.job, after)

    @app.post("/api/teach/predict")
    async def teach_predict(run: Annotated[str, Form()], image: Annotated[UploadFile, File()]):
        data, content_type, name = await image.read(), image.content_type, image.filename or "upload"

        def classify():
            loaded = checkpoints.load(run)
            return {"source": name, **teaching.classify(loaded, decode_upload(data, content_type, name,
                                                                              max_upload_bytes))}

        return await inference.run(classify)


def add_detect_routes(app: FastAPI, checkpoints: CheckpointFolder, inference: InferencePool,
                      max_upload_bytes: int) -> MicroBatcher:
    """The Detect page: the detection runs of the checkpoints folder, example canvases, and detections
    (detection.py); returns the batcher that serves them."""
    detections = MicroBatcher(detections_answerer(checkpoints, max_upload_bytes), inference.start,
                              what="detection requests")

    @app.get("/api/detect/detectors")
    def list_detectors():
        shown = ("name", "model", "dataset", "classes", "image_shape", "epoch", "saved", "modified")
        found = [{key: row[key] for key in shown} for row in checkpoints.list() if row["task"] == "detection"]
        return {"detectors": found, "folder": str(checkpoints.root), "train_command": train_command(checkpoints.root)}

    @app.get("/api/detect/examples")
    def detect_examples():
        return {"examples": [{"name": n, "url": f"/examples/detect/{n}"} for n in list_detect_examples()]}

    @app.post("/api/detect")
    async def detect(detector: Annotated[str, Form()] = "", image: Annotated[UploadFile | None, File()] = None,
                     example: Annotated[str | None, Form()] = None, min_score: Annotated[float, Form()] = 0.0):
        if not detector:
            raise NoDetectorError("Name a detector in the 'detector' field (GET /api/detect/detectors lists the "
                                  f"checkpoints folder's); to train one: {train_command(checkpoints.root)}")
        if not 0 <= min_score <= 1:
            raise ConfigError(f"min_score is a score between 0 and 1, got {min_score:g}.")
        picture = await chosen_picture(image, example, DETECT_EXAMPLES_DIR, list_detect_examples(), "canvas")
        # Decoding, loading and the forward pass run in the inference pool, batched with the requests for the
        # same detector that arrive meanwhile.
        return JSONResponse(await detections.submit(detector, (*picture, min_score)))

    return detections
