"""The Teach page's work: a visitor teaches a classifier of their own from images they upload
(:mod:`cnnkit.transfer.teach`: a linear head on the pretrained EfficientNet-Lite0's features), then classifies new
pictures with it, with Grad-CAM.

A teacher opens a session, sends the images one per request (each within the upload limit), then asks for the
fit, which runs in a background thread and reports as server-sent events (features of image k of n, fitting,
done: held-out accuracy and confusion matrix) into the run folder ``teach-<date>-<time>`` in the checkpoints
folder, where `cnnkit predict`, `cnnkit eval` and the Draw page find it like any other run.

Bounded. At most MAX_IMAGES images in MAX_CLASSES classes, each decoded at once to the network's 224x224
input (150 KB), so a session holds at most about 45 MB. The machine teaches one model at a time: while a
session collects images (until it has been idle IDLE_SECONDS) or is being fitted, and while the Train page
trains, another visitor who opens a session is answered 409 at once, with the reason, rather than made to share
the cores with a feature extraction; the Train page likewise refuses to start a run while a fit runs.
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..card import card_of
from ..errors import CheckpointError, CnnkitError
from ..runs import fresh_run_folder
from ..transfer.teach import TEACH_MODEL, TEACH_WEIGHTS, pretrained_backbone, teach
from ..viz import gradcam
from ..viz.commands import default_gradcam_layer
from ..weights import pretrained_entry
from .checkpoints import LoadedCheckpoint
from .errors import ModelUnavailableError, NotTaughtError, TeachBusyError, TeachDataError, TeachSessionError
from .images import drawing_to_input, overlay_heatmap, png_data_url
from .inference import TRAINING_THREADS, use_threads
from .jobs import EventLog

MIN_CLASSES, MAX_CLASSES = 2, 5
MIN_IMAGES_PER_CLASS = 5  # four to learn from, one held out
MAX_IMAGES = 300
IDLE_SECONDS = 120.0
INPUT_SHAPE = (3, 224, 224)  # EfficientNet-Lite0's input: uploads are resized, whole, to it (as predict does)
# A class name becomes a folder name (RUN/images/train/<name>): letters, digits, spaces, '.', '_', '-', starting
# and ending with a letter or digit.
LABEL_PATTERN = re.compile(r"[^\W_](?:[\w .-]{0,30}[^\W_])?")


class TeachSession:
    def __init__(self):
        self.token = secrets.token_urlsafe(18)
        self.images: dict[str, list[torch.Tensor]] = {}
        self.last_active = time.monotonic()
        self.job: TeachJob | None = None

    @property
    def count(self) -> int:
        return sum(len(images) for images in self.images.values())


class TeachJob(EventLog):
    def __init__(self, run_name: str, images_per_class: dict[str, int]):
        super().__init__()  # starting -> running -> finished | failed
        self.run_name, self.images_per_class = run_name, images_per_class
        self.started = time.time()

    def describe(self) -> dict:
        return {"run": self.run_name, "state": self.state, "images_per_class": self.images_per_class,
                "events": len(self.events),
                "started": _dt.datetime.fromtimestamp(self.started, _dt.UTC).isoformat(timespec="seconds")}


def checked_label(label: str) -> str:
    label = (label or "").strip()
    if not LABEL_PATTERN.fullmatch(label):
        raise TeachDataError(f"{label[:40]!r} cannot name a class: use 1 to 32 letters, digits, spaces, '.', '_' or "
                             "'-', starting and ending with a letter or digit.")
    return label


def upload_to_input(picture: Image.Image) -> torch.Tensor:
    """An uploaded picture as the (3, 224, 224) uint8 image the network reads: resized whole, bilinearly, as
    `cnnkit predict` reads a file (the same conversion as the Draw page's colour drawings)."""
    return drawing_to_input(picture, INPUT_SHAPE)[0]


class TeachingManager:
    def __init__(self, checkpoints_dir: Path, busy_elsewhere: Callable[[], str | None] = lambda: None,
                 idle_seconds: float = IDLE_SECONDS):
        self.checkpoints_dir = Path(checkpoints_dir)
        self.busy_elsewhere, self.idle_seconds = busy_elsewhere, idle_seconds
        self.session: TeachSession | None = None
        self.job: TeachJob | None = None  # the current or last fit, for the events stream
        self._lock = threading.Lock()
        self._gradcam_layers: dict[tuple[str, int], str] = {}

    # ----------------------------------------------------------------------------------------- sessions
    def _busy_reason(self) -> str | None:
        session = self.session
        if session is not None:
            if session.job is not None and not session.job.done:
                return (f"Another visitor's classifier is being fitted ({session.count} images); this machine "
                        "teaches one model at a time. Try again in a minute.")
            idle = time.monotonic() - session.last_active
            if session.job is None and idle < self.idle_seconds:
                return (f"Another visitor is teaching right now ({session.count} images so far); this machine "
                        f"teaches one model at a time. Try again when they are done (at most "
                        f"{self.idle_seconds - idle:.0f} s if they stop).")
        return self.busy_elsewhere()

    def open_session(self) -> dict:
        """A new session, or TeachBusyError; ModelUnavailableError where the pretrained network is missing
        (said before any image is sent, not after)."""
        try:
            pretrained_entry(TEACH_MODEL, TEACH_WEIGHTS).locate()
        except CheckpointError as exc:
            raise ModelUnavailableError(f"The Teach page needs the pretrained {TEACH_MODEL}: {exc}") from None
        with self._lock:
            reason = self._busy_reason()
            if reason:
                raise TeachBusyError(reason)
            self.session = TeachSession()
            return {"session": self.session.token, "limits": limits()}

    def close_session(self, token: str) -> dict:
        """The teacher gives up (an upload was refused, the page is left): the next visitor need not wait."""
        with self._lock:
            session = self._session(token)
            self.session = None
            return {"closed": True, "images": session.count}

    def _session(self, token: str) -> TeachSession:
        session = self.session
        if session is None or not secrets.compare_digest(session.token, str(token or "")):
            raise TeachSessionError("This teaching session has ended (it was fitted, or left idle and another "
                                    "visitor started one); start again.")
        if session.job is not None:
            raise TeachSessionError("This session's images are already being fitted; start a new session to "
                                    "teach another classifier.")
        return session

    def _admit(self, token: str, label: str) -> tuple[TeachSession, str]:
        """The session and the checked class name of an upload, or the reason it is refused (under the lock)."""
        session = self._session(token)
        label = checked_label(label)
        if label not in session.images and any(label.lower() == name.lower() for name in session.images):
            raise TeachDataError(f"Class names must differ in more than capital letters: {label!r}.")
        if label not in session.images and len(session.images) >= MAX_CLASSES:
            raise TeachDataError(f"At most {MAX_CLASSES} classes: {', '.join(session.images)} already; "
                                 f"{label!r} would be one more.")
        if session.count >= MAX_IMAGES:
            raise TeachDataError(f"At most {MAX_IMAGES} images in all; this session has them. Teach with these, "
                                 "or start again with fewer.")
        session.last_active = time.monotonic()
        return session, label

    def check_upload(self, token: str, label: str) -> None:
        """Refuse an upload before it is decoded: an ended session, a bad class name, a full session."""
        with self._lock:
            self._admit(token, label)

    def add_image(self, token: str, label: str, pixels: torch.Tensor) -> dict:
        with self._lock:  # checked again: other uploads may have filled the session while this one was decoded
            session, label = self._admit(token, label)
            session.images.setdefault(label, []).append(pixels)
            return {"label": label, "count": len(session.images[label]), "total": session.count}

    # ----------------------------------------------------------------------------------------------- fit
    def fit(self, token: str) -> TeachJob:
        with self._lock:
            session = self._session(token)
            counts = {label: len(images) for label, images in sorted(session.images.items())}
            few = [f"{label} ({count})" for label, count in counts.items() if count < MIN_IMAGES_PER_CLASS]
            if len(counts) < MIN_CLASSES:
                raise TeachDataError(f"Teaching needs at least {MIN_CLASSES} classes with images; this session has "
                                     f"{len(counts)}{': ' + ', '.join(counts) if counts else ''}.")
            if few:
                raise TeachDataError(f"Each class needs at least {MIN_IMAGES_PER_CLASS} images (some to learn from, "
                                     f"one to test on); add more to {', '.join(few)}.")
            reason = self.busy_elsewhere()
            if reason:
                raise TeachBusyError(reason)
            run_dir = fresh_run_folder(self.checkpoints_dir / f"teach-{_dt.datetime.now():%Y%m%d-%H%M%S}")
            session.job = self.job = TeachJob(run_dir.name, counts)
        threading.Thread(target=self._run, args=(session, run_dir), name=f"teach-{run_dir.name}", daemon=True).start()
        return session.job

    def _run(self, session: TeachSession, run_dir: Path) -> None:
        job = session.job
        use_threads(TRAINING_THREADS)
        try:
            classes = sorted(session.images)  # sorted, as `cnnkit eval` lists the image folder's classes
            images = torch.stack([image for name in classes for image in session.images[name]])
            labels = torch.tensor([index for index, name in enumerate(classes) for _ in session.images[name]])
            job.state = "running"
            job.publish("started", {"run": job.run_name, "classes": classes, "images": len(images),
                                    "images_per_class": job.images_per_class})
            result = teach(images, labels, classes, run_dir, model=self._backbone(),
                           on_progress=lambda stage, data: job.publish(stage, data))
            job.finish("finished", {"run": job.run_name, **{key: value for key, value in result.items()
                                                            if key not in ("model", "run_dir")}})
        except CnnkitError as exc:
            job.finish("failed", {"run": job.run_name, "error": str(exc)})
        except Exception as exc:  # the server must outlive a bug in a fit; the page shows what happened
            traceback.print_exc()
            job.finish("failed", {"run": job.run_name, "error": f"internal error: {type(exc).__name__}: {exc}"})
        finally:
            with self._lock:
                session.images = {}  # the images live on in the run folder; the session's copies go
                if self.session is session:
                    self.session = None

    def _backbone(self) -> torch.nn.Module:
        try:
            return pretrained_backbone()
        except CheckpointError as exc:
            raise ModelUnavailableError(f"The Teach page needs the pretrained {TEACH_MODEL}: {exc}") from None

    def fitting(self) -> str | None:
        """Why the Train page must wait (a fit takes the cores), or None."""
        job = self.job
        if job is None or job.done:
            return None
        return (f"The Teach page is fitting {job.run_name} right now; this machine fits one model at a time. Try "
                "again in a minute.")

    def describe(self) -> dict:
        with self._lock:
            reason = self._busy_reason()
        return {"busy": reason, "job": self.job.describe() if self.job else None, "limits": limits()}

    # ------------------------------------------------------------------------------------------- classify
    def classify(self, loaded: LoadedCheckpoint, picture: Image.Image) -> dict:
        """A new picture through a taught run: every class's probability, and Grad-CAM for the best one over
        the 224x224 image the network read."""
        if not isinstance(loaded.meta.get("teach"), dict):
            raise NotTaughtError(f"{loaded.name} was not made on the Teach page; pick a run called teach-....")
        pixels = drawing_to_input(picture, loaded.meta["image_shape"])
        batch = card_of(loaded.model).preprocess()(pixels)
        classes = loaded.meta["classes"]
        with loaded.lock:  # Grad-CAM's hooks attach to the shared model
            key = (loaded.name, loaded.version)
            if key not in self._gradcam_layers:
                self._gradcam_layers[key] = default_gradcam_layer(loaded.model, batch)
            layer = self._gradcam_layers[key]
            with torch.no_grad():
                probabilities = torch.softmax(loaded.model(batch).float(), dim=1)[0]
            best = int(probabilities.argmax())
            heatmap = gradcam(loaded.model, batch, layer, target=best)[0]
        seen = Image.fromarray(pixels[0].permute(1, 2, 0).numpy())
        return {"run": loaded.name, "prediction": classes[best], "layer": layer,
                "probabilities": [{"class": name, "p": float(p)} for name, p in zip(classes, probabilities)],
                "input": png_data_url(np.asarray(seen)), "overlay": png_data_url(overlay_heatmap(seen, heatmap))}


def limits() -> dict:
    return {"min_classes": MIN_CLASSES, "max_classes": MAX_CLASSES, "min_images_per_class": MIN_IMAGES_PER_CLASS,
            "max_images": MAX_IMAGES, "idle_seconds": IDLE_SECONDS}
