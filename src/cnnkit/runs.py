"""Run folders: the files a run leaves for the tools (the model card and the weights), and how every file in
it is written: safetensors for tensors, JSON for everything else, every write atomic.

A run folder holds
  checkpoint.safetensors + checkpoint.json  the model for the tools (eval, predict, viz, transfer): weights,
                                            and how to rebuild and feed the model (name, arguments, classes,
                                            preprocessing), with the weights' SHA-256 so a mismatched pair
                                            is caught
  last.safetensors                          everything needed to resume: model and optimiser tensors, with the
                                            epoch, scheduler state and history as JSON in the file's header,
                                            so one atomic rename commits all of it together

Each file is written to a temporary name, flushed to disk and renamed over the old one, and the folder itself is
flushed so the rename survives a power cut. The model pair is two files but one commit: the weights file carries
its own metadata (everything checkpoint.json holds but the weights' SHA-256) in its safetensors header, with an
id that checkpoint.json repeats. The weights are renamed first, checkpoint.json second; a reader that finds the
ids differ knows the process died between the two renames and takes the newer, complete weights file with its
header's metadata. So a folder always loads the previous epoch's model or the new one, never a mix. Folders
written before (no header metadata) are read as before, by checkpoint.json and its SHA-256.

Loading a run folder is one path downward: read and check checkpoint.json (here), build the network from its
build record (models.registry), load the tensors with their keys and shapes compared (weights), and give the
model the card the folder describes (card). ``load_pretrained`` does the same for a registered tag or a foreign
weights file loaded into a model already built.

After an epoch the trainer writes last.safetensors first (the commit of the epoch for --resume), then the pair,
then metrics.csv; --resume rewrites the pair and metrics.csv from last.safetensors, which repairs a folder
whose writer was killed part-way.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from torch import nn

from .card import build_record, card_from_meta, set_card
from .errors import CheckpointError, CnnkitError, ConfigError, RunFolderError, UnknownNameError
from .models.registry import create_model, get_model_entry
from .schema import Field, Limit, check_mapping, short_repr
from .weights import (apply_architecture, compare_state_dict, list_pretrained, load_state_dict_into,
                      pretrained_entry, read_state_dict)

FORMAT = "cnnkit-checkpoint-1"
MODEL_FILE, META_FILE, STATE_FILE = "checkpoint.safetensors", "checkpoint.json", "last.safetensors"


RUN_FILES = (META_FILE, MODEL_FILE, STATE_FILE, "config.json", "metrics.csv", "summary.json")  # what marks a run
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp(?P<pid>\d+)$")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (the renames in it) to disk; some file systems cannot, which is no error."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_failed(path: Path, tmp: Path, exc: OSError) -> RunFolderError:
    """A disk that is full, read-only or gone: the temporary file is removed (the previous file stays whole)
    and the error says what to do."""
    tmp.unlink(missing_ok=True)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free some disk space or choose another --out ('cnnkit train --resume' continues from the last epoch "\
              "written)"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "choose a writable --out"
    else:
        fix = "check the disk, or choose another --out"
    return RunFolderError(f"could not write {path}: {exc.strerror or exc}; {fix}.")


def _commit(tmp: Path, target: Path, digest: bool = False) -> str | None:
    """fsync ``tmp``, rename it over ``target`` and fsync the folder; with ``digest``, the SHA-256 of the bytes
    committed (read back from the flushed file, so it is what a reader will hash)."""
    sha = None
    try:
        with open(tmp, "rb") as f:
            if digest:
                sha = hashlib.file_digest(f, "sha256").hexdigest()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        raise _write_failed(target, tmp, exc) from None
    _fsync_dir(target.parent)
    return sha


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = _temp_path(path)
    try:
        tmp.write_text(text)
    except OSError as exc:
        raise _write_failed(path, tmp, exc) from None
    _commit(tmp, path)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None,
                        digest: bool = False) -> str | None:
    """Write a safetensors file atomically; returns its SHA-256 when ``digest``."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        save_file(_unshared(tensors), str(tmp), metadata=metadata)
    except (OSError, SafetensorError) as exc:
        failure = exc if isinstance(exc, OSError) else OSError(_errno_of(str(exc)), str(exc))
        raise _write_failed(path, tmp, failure) from None
    return _commit(tmp, path, digest)


def _errno_of(message: str) -> int:
    """safetensors reports an I/O failure as a SafetensorError with the OS message inside; recover its errno."""
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES):
        if os.strerror(code).lower() in message.lower():
            return code
    return errno.EIO


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temporary files of writers that died before their rename (``.NAME.tmpPID`` with PID no longer
    running, or this process's own); returns what was removed."""
    removed = []
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return removed
    for entry in run_dir.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if not match or not entry.is_file():
            continue
        pid = int(match["pid"])
        if pid != os.getpid() and _process_alive(pid):
            continue  # another process is writing this file right now
        entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


# ---------------------------------------------------------------------------------------------- run folders
def holds_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run's results (a checkpoint, training state or metrics). A folder with only
    config.json is a run that never finished an epoch: nothing in it would be lost."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any((run_dir / name).exists() for name in RUN_FILES if name != "config.json")


def is_cnnkit_run(run_dir: Path) -> bool:
    """Whether the run files in ``run_dir`` were written by cnnkit (so --overwrite may delete the folder)."""
    run_dir = Path(run_dir)
    if (run_dir / STATE_FILE).is_file() or (run_dir / MODEL_FILE).is_file():
        return True
    for name, keys in ((META_FILE, ("format",)), ("config.json", ("model", "dataset", "config"))):
        try:
            values = json.loads((run_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(values, dict) and all(key in values for key in keys):
            return True
    return False


def fresh_run_folder(base: Path) -> Path:
    """``base`` if it holds no run, else the first of base-2, base-3, ... that does not."""
    base = Path(base)
    candidate, number = base, 2
    while holds_run(candidate) or candidate.is_file():
        candidate, number = base.with_name(f"{base.name}-{number}"), number + 1
    return candidate


def claim_run_folder(out: Path, overwrite: bool = False, resume_hint: str | None = "--resume",
                     overwrite_hint: str = "--overwrite") -> Path:
    """Check that ``out`` may take a new run, or refuse: the one check every command that writes a run folder
    (train, finetune, denoise, segment, translate, gan, compress, average) and the Trainer itself go through.

    A folder that holds a run is refused unless ``overwrite``, which deletes it first (so no file of the old run
    survives to be mistaken for the new one's). A path that is a file, or lies under one, or on a disk that
    cannot be written (read-only, no permission) is refused. Nothing is created: the writer makes the folder
    when it has something to put in it. Returns ``out``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a run folder; choose a folder name (e.g. runs/NAME).")
    if holds_run(out):
        if not overwrite:
            resume = f"continue it with {resume_hint} {out}, " if resume_hint else ""
            raise RunFolderError(f"{out} already holds a run; {resume}replace it with {overwrite_hint}, or choose "
                                 "another --out.")
        if not is_cnnkit_run(out):
            raise RunFolderError(f"{out} holds files cnnkit did not write (one of {', '.join(RUN_FILES)}); "
                                 f"{overwrite_hint} deletes only cnnkit run folders: choose another --out.")
        try:
            shutil.rmtree(out)
        except OSError as exc:
            raise RunFolderError(f"could not delete the previous run in {out}: {exc.strerror or exc}; delete it "
                                 "yourself or choose another --out.") from None
    try:
        existing = out.absolute()
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise RunFolderError(f"--out {out} lies under {existing}, which is a file; choose a folder name.")
        probe = existing / f".cnnkit-write-test{os.getpid()}"
        # Written and deleted rather than asked (os.access): a read-only mount answers only to a write, and
        # os.access says yes to root.
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"cannot write the run folder {out}: {existing} is not writable ({exc.strerror or exc}); "
                             "choose a writable --out.") from None
    return out


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights); give each its own contiguous copy."""
    seen, out = set(), {}
    for key, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        ptr = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else None
        if ptr in seen:
            t = t.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[key] = t
    return out


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, (f.metadata() or {})
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint file.") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); "
                              "it is corrupt or truncated.") from None


# ----------------------------------------------------------------------------------------------- model files
HEADER_KEY = "cnnkit_checkpoint"  # the weights file's copy of checkpoint.json (without the SHA-256)


def save_model_checkpoint(run_dir: Path, model: torch.nn.Module, meta: dict) -> Path:
    """Write the model pair: the weights (with the metadata in their header) first, then checkpoint.json; see
    the module docstring for why a crash between the two leaves a folder that still loads."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = run_dir / MODEL_FILE
    meta = {"format": FORMAT, "model": build_record(model) or None, **meta,
            "weights_file": MODEL_FILE, "checkpoint_id": uuid.uuid4().hex,
            "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "torch_version": torch.__version__}
    meta.pop("weights_sha256", None)
    header = json.dumps(meta, default=str)
    if isinstance(meta["model"], dict) and {"name", "num_classes", "in_channels"} <= meta["model"].keys():
        # A registry model's checkpoint is for the tools: checked before writing, so a bad one is never written.
        # (Others, e.g. a bare nn.Module or transfer's stage tails, only keep their weights here.)
        validate_checkpoint_meta({**json.loads(header), "weights_sha256": None}, run_dir / META_FILE)
    sha = atomic_save_tensors(model.state_dict(), weights, {HEADER_KEY: header}, digest=True)
    atomic_write_text(run_dir / META_FILE, json.dumps({**json.loads(header), "weights_sha256": sha}, indent=2))
    return run_dir / META_FILE


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) paths for a run folder, a checkpoint.json or a checkpoint.safetensors. The metadata
    file may be missing when the weights carry their own (a writer killed between the pair's two renames)."""
    path = Path(path)
    if path.is_dir():
        weights, meta = path / MODEL_FILE, path / META_FILE
    elif path.suffix == ".json":
        weights, meta = path.with_name(MODEL_FILE), path
    else:
        weights, meta = path, path.with_suffix(".json")
    if not weights.is_file() or not (meta.is_file() or _header_meta(weights) is not None):
        raise CheckpointError(f"{path}: expected a run folder with {MODEL_FILE} and {META_FILE} (written by "
                              "'cnnkit train'); found no such pair.")
    return weights, meta


def _header_meta(weights: Path) -> dict | None:
    """The metadata a weights file carries in its header (None for files written before it did, or unreadable
    ones: those are reported when the tensors are read)."""
    try:
        with safe_open(str(weights), "pt") as f:
            text = (f.metadata() or {}).get(HEADER_KEY)
    except (SafetensorError, OSError, ValueError):
        return None
    try:
        meta = json.loads(text) if text else None
    except (ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def read_checkpoint_meta(path: str | Path) -> dict:
    """checkpoint.json, validated; or, when the weights file is newer than it (its header's id differs: the
    writer died between the two renames), the weights' own header metadata, without a SHA-256 to check."""
    weights, meta_path = resolve_checkpoint(path)
    header = _header_meta(weights)
    meta = None
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_bytes())
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if header is None:
                raise CheckpointError(f"{meta_path} is not valid JSON ({str(exc)[:200]}).") from None
    if header is not None and (not isinstance(meta, dict) or meta.get("checkpoint_id") != header.get("checkpoint_id")):
        meta = {**header, "weights_sha256": None}
    validate_checkpoint_meta(meta, meta_path)
    return meta


# The fields the tools read from checkpoint.json, with their types and the ranges that keep them from
# allocating unbounded memory (an image_shape of 30000x30000 would ask predict for a 900-Mpx canvas).
MAX_IMAGE_SIDE, MAX_CHANNELS, MAX_CLASSES = 8192, 64, 100_000
_SIDE = Limit(1, MAX_IMAGE_SIDE)
META_SCHEMA = {
    "format": Field(str, Limit(choices=(FORMAT,))),
    # num_classes 0: generative models (autoencoders, GANs, codecs) have no classes
    "model": Field(dict, fields={"name": Field(str), "num_classes": Field(int, Limit(0, MAX_CLASSES)),
                                 "in_channels": Field(int, Limit(1, MAX_CHANNELS)),
                                 "kwargs": Field(dict, required=False)}),
    "image_shape": Field(tuple[int, int, int]),
    "classes": Field(list[str]),
    "preprocess": Field(dict, fields={"mean": Field(list[float]), "std": Field(list[float], Limit(0, low_open=True)),
                                      "input_size": Field(list[int] | None, _SIDE, required=False)}),
    "task": Field(dict, required=False, fields={"name": Field(str)}),
    "weights_sha256": Field(str | None),
    "epoch": Field(int, Limit(0), required=False),
}


def validate_checkpoint_meta(meta, where: str | Path) -> None:
    """Check checkpoint metadata against META_SCHEMA and against itself (channels, class names, the model's
    arguments); a CheckpointError naming the field otherwise."""
    fix = "the file was edited or damaged: restore it, or retrain the run"
    try:
        check_mapping(meta, META_SCHEMA, str(where), fix)
        channels, height, width = meta["image_shape"]
        _check_range(channels, Limit(1, MAX_CHANNELS), f"{where}: image_shape[0] (channels)", fix)
        for side, name in ((height, "height"), (width, "width")):
            _check_range(side, _SIDE, f"{where}: image_shape ({name})", fix)
        if meta["model"]["in_channels"] != channels and meta.get("task", {}).get("name") in (None, "classification"):
            raise ConfigError(f"{where}: image_shape has {channels} channels but model.in_channels is "
                              f"{meta['model']['in_channels']}; {fix}.")
        for key in ("mean", "std"):
            if len(meta["preprocess"][key]) not in (1, channels):
                raise ConfigError(f"{where}: preprocess: {key} has {len(meta['preprocess'][key])} values for "
                                  f"{channels}-channel images; give 1 or {channels}; {fix}.")
        if meta.get("task", {}).get("name", "classification") == "classification":
            if len(meta["classes"]) < meta["model"]["num_classes"]:
                raise ConfigError(f"{where}: classes lists {len(meta['classes'])} names for a model with "
                                  f"{meta['model']['num_classes']} outputs; give one name per class; {fix}.")
        _check_model_arguments(meta["model"], where, fix)
    except (ConfigError, UnknownNameError) as exc:  # the tools (and the server) catch CheckpointError
        raise CheckpointError(str(exc)) from None


def _check_range(value, limit: Limit, name: str, fix: str) -> None:
    if not limit.admits(value):
        raise ConfigError(f"{name} must be {limit.describe()}, not {value}; {fix}.")


def _check_model_arguments(model: dict, where, fix: str) -> None:
    """Arguments the model's builder does not take are refused here, with their names, rather than as a
    TypeError from deep inside the builder."""
    import inspect

    kwargs = model.get("kwargs") or {}
    entry = get_model_entry(model["name"])
    try:
        parameters = inspect.signature(entry.builder).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(kwargs) - set(parameters) - {"num_classes", "in_channels"})
    if unknown:
        valid = sorted(set(parameters) - {"num_classes", "in_channels"})
        raise ConfigError(f"{where}: model: kwargs {unknown} are not arguments of {model['name']} (it takes "
                          f"{', '.join(valid) or 'none'}); {fix}.")


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict, with an error that lists every missing, unexpected and wrongly shaped key."""
    mismatch = compare_state_dict(model, state)
    if not mismatch.ok:
        raise CheckpointError(f"{source} does not match the model's architecture: {mismatch.describe()}. "
                              "Build the model the checkpoint was trained with (see its checkpoint.json).")
    model.load_state_dict(state, strict=False)  # keys verified above; only num_batches_tracked may be absent


def load_model_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model a run saved, load its weights and give it the run's card. Returns (model, metadata)."""
    weights, _ = resolve_checkpoint(path)
    meta = read_checkpoint_meta(path)
    if meta["weights_sha256"] is not None and file_sha256(weights) != meta["weights_sha256"]:
        raise CheckpointError(f"{weights} does not match the SHA-256 recorded in its checkpoint.json: the pair was "
                              "mixed up or the file is corrupt ('cnnkit train --resume' rewrites the pair of an "
                              "interrupted run).")
    cfg = meta["model"]

    def build(device):
        with torch.device(device):
            return create_model(cfg["name"], num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                                **cfg.get("kwargs", {}))

    try:
        # Built first on the meta device (no memory): arguments asking for more weights than the file holds
        # (widths: [100000, 100000]) are refused before anything is allocated.
        needed = sum(t.numel() * t.element_size() for t in build("meta").state_dict().values())
        if needed > weights.stat().st_size:
            raise CheckpointError(f"{path}: its checkpoint.json's model arguments {short_repr(cfg.get('kwargs', {}))} "
                                  f"describe a {cfg['name']} of {needed / 2**20:.1f} MiB of weights, but "
                                  f"{weights.name} holds {weights.stat().st_size / 2**20:.1f} MiB; restore the file, "
                                  "or retrain the run.")
        model = build("cpu")
    except CnnkitError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a builder given arguments from a file may fail in any way
        raise CheckpointError(f"{path}: its checkpoint.json's model arguments {short_repr(cfg.get('kwargs', {}))} do "
                              f"not build {cfg['name']} ({type(exc).__name__}: {str(exc)[:200]}); restore the file, "
                              "or retrain the run.") from None
    state, _ = read_tensors(weights)
    load_state_dict_checked(model, state, str(weights))
    set_card(model, card_from_meta(meta, f"run:{path}"))
    return model.to(map_location), meta


# ------------------------------------------------------------------------------------------- loading weights
def load_pretrained(model: nn.Module, spec: str | Path, layout: str | None = None) -> nn.Module:
    """Load weights named by ``spec`` into ``model`` (in place; also returned).

    ``spec``: a registered tag for the model (``"imagenet"`` for ``efficientnet_lite0``), a ``.safetensors``
    or ``.pth/.pt`` file, or a cnnkit run folder holding ``checkpoint.safetensors`` (+ ``checkpoint.json``).
    ``layout`` forces one key layout (``"cnnkit"``, ``"torchvision"``, ``"cifar_resnet"``); by default the one
    that matches is found. Architecture choices without parameters that the file implies are applied to
    ``model`` unless it was built with them explicitly: a cnnkit run folder's recorded ``shortcut_padding``, and
    the both-sides padding of the akamaster CIFAR ResNets (``cifar_resnet`` layout)."""
    name = build_record(model).get("name")
    spec_text = str(spec)
    path = Path(spec_text)
    if name and (name, spec_text) in list_pretrained(name):
        load_state_dict_into(model, read_state_dict(pretrained_entry(name, spec_text).locate()), layout)
        return set_card(model, pretrained_entry(name, spec_text).card())
    if not path.exists():
        tags = [t for m, t in list_pretrained(name)] if name else []
        hint = f"registered tags for {name}: {', '.join(tags)}" if tags else (
            f"no pretrained tags are registered for {name or 'this model'}; give the path of a checkpoint you "
            f"have, e.g. a torchvision .pth file or a cnnkit run folder")
        raise CheckpointError(f"pretrained={spec_text!r} is neither an existing file or run folder nor a registered "
                              f"tag ({hint})")
    metadata = read_checkpoint_meta(path) if (path / META_FILE).is_file() else None
    state = read_state_dict(path / MODEL_FILE if path.is_dir() else path)
    if metadata and metadata["model"].get("name") in (None, name):
        # The run folder says how its network was built (e.g. an imported akamaster ResNet pads both sides).
        apply_architecture(model, metadata["model"].get("kwargs") or {})
    try:
        load_state_dict_into(model, state, layout)
    except CheckpointError as error:
        if metadata and name and metadata.get("model", {}).get("name") not in (None, name):
            saved = metadata["model"]
            raise CheckpointError(
                f"{path} was saved from {saved.get('name')!r} (num_classes={saved.get('num_classes')}, "
                f"in_channels={saved.get('in_channels')}), not {name!r}: {error}") from None
        raise
    if metadata:  # the run's preprocessing and classes come with its weights (a new head drops the classes)
        set_card(model, card_from_meta(metadata, f"run:{path}"))
    return model
