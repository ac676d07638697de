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
    POST /api/teach/session                  opens the one teaching session (409 while another is open)
    POST /api/teach/images                   multipart: session, label, image -> the image joins that class
    POST /api/teach/close                    JSON {"session"}: gives the session up (the next visitor may teach)
    POST /api/teach/fit                      JSON {"session"} -> fits the taught classifier into a run folder
    GET  /api/teach                          busy or not, the current (or last) fit
    GET  /api/teach/events                   server-sent events: started, features, fitting, done
    POST /api/teach/predict                  multipart: run, image -> every class's probability, Grad-CAM
    GET  /api/zoo/models                     the registry
    GET  /api/zoo/summary?model=M&input_size=CxHxW   the architecture calculator's table and stages
    GET  /api/explain/sources, /api/explain/layers; POST /api/explain/maps, /api/explain/unit   (explain.py)
    GET  /api/detect/detectors               detection runs in the checkpoints folder, and the command to train one
    GET  /api/detect/examples                bundled example canvases
    POST /api/detect                         multipart: detector, image or example=NAME, min_score -> boxes,
                                             labels, scores (detection.py)

Every error is ``{"error": message}`` with a fitting status; a failing request never stops the server. Requests
from other web sites, or addressed to a name this server does not listen on, get 403 (origin.py). The routes
themselves are in routes.py; drawings are answered in batches (batching.py).
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import CnnkitError
from .checkpoints import CheckpointFolder
from .errors import http_status
from .explain import add_explain_routes
from .images import MAX_UPLOAD_BYTES, readable_size
from .inference import InferencePool
from .origin import LocalOriginOnly, listening_names
from .photo import PhotoClassifier
from .routes import add_draw_routes, add_info_routes, add_pages, add_photo_routes, add_training_routes
from .routes import add_detect_routes, add_teach_routes
from .teaching import TeachingManager
from .training import TrainingManager

MULTIPART_OVERHEAD = 64 * 1024  # form boundaries and the other fields around the image
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
    add_error_handlers(app)
    checkpoints = CheckpointFolder(checkpoints_dir)
    training = TrainingManager(checkpoints.root, busy_elsewhere=lambda: app.state.teaching.fitting())
    photos = PhotoClassifier(max_copies=inference.workers)
    app.state.checkpoints, app.state.training, app.state.photos = checkpoints, training, photos
    app.state.inference = inference

    add_pages(app)
    add_info_routes(app, checkpoints, max_upload_bytes)
    app.state.drawings = add_draw_routes(app, checkpoints, inference, max_upload_bytes)
    add_photo_routes(app, photos, inference, max_upload_bytes)
    add_training_routes(app, training)
    app.state.explain = add_explain_routes(app, checkpoints, inference, max_upload_bytes)
    app.state.teaching = TeachingManager(checkpoints.root, busy_elsewhere=lambda: training_busy(training))
    add_teach_routes(app, app.state.teaching, checkpoints, inference, max_upload_bytes)
    app.state.detections = add_detect_routes(app, checkpoints, inference, max_upload_bytes)
    return app


def training_busy(training: TrainingManager) -> str | None:
    """Why the Teach page must wait for the Train page (both would take all the cores), or None."""
    job = training.job
    if job is None or job.done:
        return None
    return (f"The Train page is training {job.run_name} right now; this machine fits one model at a time. Try "
            "again when it is done (or stop it there).")


def add_error_handlers(app: FastAPI) -> None:
    """Every error answers ``{"error": message}`` with a fitting status; a bug is logged and the server
    keeps serving."""

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
