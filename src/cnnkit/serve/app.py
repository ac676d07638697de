"""``create_app(checkpoints_dir)``: the FastAPI app behind ``cnnkit serve``.

Pages are static files (plain HTML, CSS and JavaScript: nothing to build); everything they show comes from the
JSON endpoints under ``/api``:

    GET  /api/checkpoints                    run folders in the checkpoints folder, newest first
    GET  /api/checkpoints/{name}/filters     the first convolution's kernels as an image
    POST /api/draw                           multipart: checkpoint, image (the canvas as PNG) -> classes, maps
    GET  /api/photo/examples                 bundled example photos
    POST /api/photo                          multipart: image, or example=NAME -> top-5 labels, Grad-CAM
    POST /api/train                          JSON settings -> starts the one training run (409 while one runs)
    POST /api/train/stop                     stop after the current batch (the checkpoint is still written)
    GET  /api/train                          the current run's state
    GET  /api/train/events                   server-sent events: started, batch, filters, epoch, done
    GET  /api/zoo/models                     the registry
    GET  /api/zoo/summary?model=M&input_size=CxHxW   the architecture calculator's table and stages

Every error is ``{"error": message}`` with a fitting status; a failing request never stops the server. Requests
from other web sites, or addressed to a name this server does not listen on, get 403 (origin.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import traceback
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import CnnkitError, ImageError
from .checkpoints import CheckpointFolder
from .errors import UnknownExampleError, http_status
from .images import MAX_UPLOAD_BYTES, decode_upload, drawing_to_input, readable_size
from .inference import InferencePool
from .origin import LocalOriginOnly, listening_names
from .photo import EXAMPLES_DIR, PhotoClassifier, list_examples
from .pictures import draw_response, filters_picture, refuse_undrawable
from .training import TrainingManager, TrainRequest
from .zoo import checked_input_size, zoo_models, zoo_summary

STATIC_DIR = Path(__file__).with_name("static")
PAGES = {"/": "draw.html", "/photo": "photo.html", "/train": "train.html", "/zoo": "zoo.html"}
MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and the other fields around the image
EVENT_POLL_SECONDS = 0.2
log = logging.getLogger("cnnkit.serve")


class RequestBodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before any of it reaches the parsers.

    The declared Content-Length is checked first; a body sent without one (chunked) is read up to the limit
    and then handed on, so a client cannot stream an endless upload into memory or onto disk."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            return await self._refuse(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        limit = readable_size(self.max_bytes - MULTIPART_OVERHEAD)
        response = JSONResponse({"error": f"The request is too large; uploads are limited to {limit}."},
                                status_code=413)
        await response({"type": "http"}, None, send)


def create_app(checkpoints_dir: str | Path = "runs", max_upload_bytes: int = MAX_UPLOAD_BYTES,
               host: str = "127.0.0.1", port: int | None = None, allowed_hosts: tuple[str, ...] = ()) -> FastAPI:
    """The app for a server listening on ``host``:``port``: requests must name that address (or a loopback
    name, or one of ``allowed_hosts``) in their Host header, with ``port`` when given; see origin.py."""
    inference = InferencePool()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        inference.shutdown()

    app = FastAPI(title="cnnkit playground", version=__version__, docs_url="/api/docs", redoc_url=None,
                  lifespan=lifespan)
    app.add_middleware(RequestBodyLimit, max_bytes=max_upload_bytes + MULTIPART_OVERHEAD)
    # Added last, so it runs first: a refused request is not even read.
    app.add_middleware(LocalOriginOnly, names=listening_names(host, tuple(allowed_hosts)), port=port)
    checkpoints = CheckpointFolder(checkpoints_dir)
    training = TrainingManager(checkpoints.root)
    photos = PhotoClassifier(max_copies=inference.workers)
    app.state.checkpoints, app.state.training, app.state.photos = checkpoints, training, photos
    app.state.inference = inference

    # -------------------------------------------------------------------------------------------- errors
    @app.exception_handler(CnnkitError)
    async def cnnkit_error(request: Request, exc: CnnkitError):
        return JSONResponse({"error": str(exc)}, status_code=http_status(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"Invalid request: {problems}."}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug: say so, log it, keep serving
        log.error("%s %s failed:\n%s", request.method, request.url.path, traceback.format_exc())
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    # --------------------------------------------------------------------------------------------- pages
    def page(file_name: str):
        async def serve_page():
            return FileResponse(STATIC_DIR / file_name, media_type="text/html")
        return serve_page

    for route, file_name in PAGES.items():
        app.add_api_route(route, page(file_name), include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/examples", StaticFiles(directory=EXAMPLES_DIR), name="examples")

    # ----------------------------------------------------------------------------------------------- api
    @app.get("/api/info")
    def info():
        return {"version": __version__, "checkpoints_dir": str(checkpoints.root),
                "max_upload_mb": max_upload_bytes / 2**20}

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
        data = await image.read()

        def run():  # decoding, loading and the forward pass stay off the event loop, so events keep flowing
            loaded = checkpoints.load(checkpoint)  # a bad name is refused before the upload is even decoded
            refuse_undrawable(loaded)  # so is a run that is no classifier of images
            picture = decode_upload(data, image.content_type, image.filename or "drawing", max_upload_bytes)
            batch = drawing_to_input(picture, loaded.meta["image_shape"])
            return {"checkpoint": checkpoint, **draw_response(loaded, batch)}

        return await inference.run(run)

    @app.get("/api/photo/examples")
    def photo_examples():
        return {"examples": [{"name": n, "url": f"/examples/{n}"} for n in list_examples()]}

    @app.post("/api/photo")
    async def photo(image: Annotated[UploadFile | None, File()] = None, example: Annotated[str | None, Form()] = None):
        if image is not None and example:
            raise ImageError("Send either an image or an example name, not both.")
        if example:
            if example not in list_examples():  # a name from the list, never a path
                raise UnknownExampleError(f"No example photo {example!r}; choose one of {', '.join(list_examples())}.")
            data, content_type, name = (EXAMPLES_DIR / example).read_bytes(), "image/jpeg", example
            if example.lower().endswith(".png"):
                content_type = "image/png"
        elif image is not None:
            data, content_type, name = await image.read(), image.content_type, image.filename or "upload"
        else:
            raise ImageError("No image: upload a file in the 'image' field or name an example.")

        def run():
            return photos.classify(decode_upload(data, content_type, name, max_upload_bytes))

        return {"source": name, **await inference.run(run)}

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
        job = training.job
        last_seen = request.headers.get("last-event-id", "")  # sent by a reconnecting EventSource
        start = max(after + 1, int(last_seen) + 1 if last_seen.isdigit() else 0)

        async def stream():
            yield "retry: 2000\n\n"
            if job is None:
                yield "event: idle\ndata: {}\n\n"
                return
            index = start
            while True:
                events = job.events_since(index)
                for event in events:
                    yield f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event['data'])}\n\n"
                index += len(events)
                if job.done and not job.events_since(index):
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(EVENT_POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/api/zoo/models")
    def models():
        return {"models": zoo_models()}

    @app.get("/api/zoo/summary")
    def model_summary(model: str, input_size: str | None = None):
        return zoo_summary(model, checked_input_size(model, input_size))

    return app
