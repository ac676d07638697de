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

from ..errors import CheckpointError
from ..train.checkpoint import META_FILE, MODEL_FILE, load_model_checkpoint, read_checkpoint_meta
from .errors import CheckpointNameError, CheckpointNotFoundError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass
class LoadedCheckpoint:
    name: str
    model: torch.nn.Module
    meta: dict
    version: int  # mtime of checkpoint.json when loaded
    lock: threading.Lock  # one forward pass at a time: the viz hooks attach to the shared model


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
                "modified": mtime,
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
