"""The checkpoints the Draw page may use: run folders directly inside one configured folder, by name only.

A client never sends a path. It sends a name, which must be a plain folder name (no separators, no '..', not
hidden); the folder it names must resolve, symlinks followed, to a place inside the configured folder. Models
are loaded once and reused until the run writes a newer checkpoint (a live training run does, every epoch).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import CheckpointError, CnnkitError
from ..models.registry import get_model_entry
from ..runs import META_FILE, MODEL_FILE, load_model_checkpoint, read_checkpoint_meta
from .errors import CheckpointNameError, CheckpointNotFoundError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_DRAW_SIDE = 1024  # a drawing is resized to the model's input: beyond this it is no longer a drawing


@dataclass
class LoadedCheckpoint:
    name: str
    model: torch.nn.Module
    meta: dict
    version: int  # mtime of checkpoint.json when loaded
    lock: threading.Lock  # one forward pass at a time: the viz hooks attach to the shared model
    map_layers: list[tuple[str, str]] | None = None  # the layers the Draw page shows: the same for every input


def task_of(meta: dict) -> str:
    """The task a run trained for: written by the Trainer; for older runs, the model's task in the registry."""
    task = meta.get("task")
    if isinstance(task, dict) and isinstance(task.get("name"), str):
        return task["name"]
    try:
        return get_model_entry(str((meta.get("model") or {}).get("name"))).task
    except (CnnkitError, AttributeError):
        return "unknown"


def model_name(meta: dict) -> str:
    described = meta.get("model")
    return described.get("name", "this model") if isinstance(described, dict) else "this model"


def is_picture_shape(shape, max_side: int) -> bool:
    """Whether ``shape`` is the [C, H, W] of a grey or colour picture of at most ``max_side`` pixels a side."""
    return (isinstance(shape, list) and len(shape) == 3 and shape[0] in (1, 3)
            and all(isinstance(v, int) and 0 < v <= max_side for v in shape[1:]))


def page_problem(meta: dict, task: str, kind: str, page_does: str, max_side: int, shape_hint: str = "") -> str | None:
    """The checks every page opens with (None when they pass): the run holds a ``task`` model (a ``kind``, in
    the page's words), of grey or colour pictures at most ``max_side`` pixels a side."""
    actual = task_of(meta)
    if actual != task:
        return f"it holds a {actual} model ({model_name(meta)}), not a {kind}; {page_does}"
    shape = meta.get("image_shape")
    if not is_picture_shape(shape, max_side):
        return (f"its input shape {shape} is not a grey or colour picture of at most {max_side} pixels a "
                f"side{shape_hint}")
    return None


def drawing_problem(meta: dict) -> str | None:
    """Why the Draw page cannot use a run (None when it can): it takes classifiers of grey or colour images,
    whose class names match their outputs."""
    problem = page_problem(meta, "classification", "classifier", "the Draw page predicts classes, so pick a "
                           "classifier run", MAX_DRAW_SIDE, ", which a drawing cannot be turned into")
    if problem:
        return problem
    classes = meta.get("classes")
    if not (isinstance(classes, list) and len(classes) >= 2):
        return "its checkpoint names no classes, so there is nothing to predict"
    return None


class CheckpointFolder:
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self._cache: dict[str, LoadedCheckpoint] = {}
        self._lock = threading.Lock()

    def run_dir(self, name: str) -> Path:
        """The run folder called ``name``, or an error: never a path outside ``root``."""
        if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
            raise CheckpointNameError(f"{name!r} is not a checkpoint name: names are plain folder names inside "
                                      "the checkpoints folder (letters, digits, '.', '_', '-'); paths are refused.")
        folder = (self.root / name).resolve()
        if folder.parent != self.root:  # a symlink pointing elsewhere
            raise CheckpointNameError(f"{name!r} leads outside the checkpoints folder; refused.")
        if not (folder / META_FILE).is_file() or not (folder / MODEL_FILE).is_file():
            raise CheckpointNotFoundError(f"No checkpoint called {name!r} in the checkpoints folder; pick one "
                                          "from the list (GET /api/checkpoints).")
        return folder

    def list(self) -> list[dict]:
        """Every usable run folder, newest first, with what the pages show about it."""
        if not self.root.is_dir():
            return []
        found = []
        for folder in self.root.iterdir():
            try:
                run_dir = self.run_dir(folder.name)
                meta = read_checkpoint_meta(run_dir)
                mtime = (run_dir / META_FILE).stat().st_mtime
            except (CheckpointError, OSError):
                continue  # half-written, foreign or unreadable folders are simply not offered
            metrics = meta.get("metrics") or {}
            found.append({
                "name": folder.name, "model": meta["model"].get("name"), "dataset": meta.get("dataset"),
                "classes": meta.get("classes", []), "image_shape": meta.get("image_shape"),
                "epoch": meta.get("epoch"), "val_acc": metrics.get("val_acc"), "saved": meta.get("saved"),
                "modified": mtime, "task": task_of(meta), "drawable": drawing_problem(meta) is None,
            })
        return sorted(found, key=lambda row: row["modified"], reverse=True)

    def load(self, name: str) -> LoadedCheckpoint:
        run_dir = self.run_dir(name)
        version = (run_dir / META_FILE).stat().st_mtime_ns
        with self._lock:
            cached = self._cache.get(name)
            if cached is not None and cached.version == version:
                return cached
            try:
                model, meta = load_model_checkpoint(run_dir)
            except CheckpointError:
                # A run that is training rewrites its files each epoch; between the two atomic writes the
                # pair can briefly disagree. The previous epoch's model is still a fine answer.
                if cached is not None:
                    return cached
                raise
            model.eval()
            loaded = LoadedCheckpoint(name, model, meta, version, threading.Lock())
            self._cache[name] = loaded
            return loaded
