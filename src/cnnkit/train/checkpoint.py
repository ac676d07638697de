"""Checkpoints: safetensors for tensors, JSON for everything else, every write atomic.

A run folder holds
  checkpoint.safetensors + checkpoint.json  the model for the tools (eval, predict, viz, transfer): weights,
                                            and how to rebuild and feed the model (name, arguments, classes,
                                            preprocessing), with the weights' SHA-256 so a mismatched pair
                                            is caught
  last.safetensors                          everything needed to resume: model and optimiser tensors, with the
                                            epoch, scheduler state and history as JSON in the file's header,
                                            so one atomic rename commits all of it together
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError

FORMAT = "cnnkit-checkpoint-1"
MODEL_FILE, META_FILE, STATE_FILE = "checkpoint.safetensors", "checkpoint.json", "last.safetensors"


def _atomic_replace(tmp: Path, target: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, target)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    _atomic_replace(tmp, path)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(_unshared(tensors), str(tmp), metadata=metadata)
    _atomic_replace(tmp, path)


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
def save_model_checkpoint(run_dir: Path, model: torch.nn.Module, meta: dict) -> Path:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = run_dir / MODEL_FILE
    atomic_save_tensors(model.state_dict(), weights)
    meta = {"format": FORMAT, "model": getattr(model, "cnnkit_config", None), **meta,
            "weights_file": MODEL_FILE, "weights_sha256": file_sha256(weights),
            "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "torch_version": torch.__version__}
    atomic_write_text(run_dir / META_FILE, json.dumps(meta, indent=2, default=str))
    return run_dir / META_FILE


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """(weights, metadata) paths for a run folder, a checkpoint.json or a checkpoint.safetensors."""
    path = Path(path)
    if path.is_dir():
        weights, meta = path / MODEL_FILE, path / META_FILE
    elif path.suffix == ".json":
        weights, meta = path.with_name(MODEL_FILE), path
    else:
        weights, meta = path, path.with_suffix(".json")
    if not meta.is_file() or not weights.is_file():
        raise CheckpointError(f"{path}: expected a run folder with {MODEL_FILE} and {META_FILE} (written by "
                              "'cnnkit train'); found no such pair.")
    return weights, meta


def read_checkpoint_meta(path: str | Path) -> dict:
    _, meta_path = resolve_checkpoint(path)
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{meta_path} is not valid JSON ({exc}).") from None
    if meta.get("format") != FORMAT or not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{meta_path} is not a cnnkit checkpoint (format {meta.get('format')!r}).")
    return meta


def load_state_dict_checked(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict, with an error that lists every missing, unexpected and wrongly shaped key."""
    from ..weights import compare_state_dict

    mismatch = compare_state_dict(model, state)
    if not mismatch.ok:
        raise CheckpointError(f"{source} does not match the model's architecture: {mismatch.describe()}. "
                              "Build the model the checkpoint was trained with (see its checkpoint.json).")
    model.load_state_dict(state, strict=False)  # keys verified above; only num_batches_tracked may be absent


def load_model_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """Rebuild the model a run saved and load its weights. Returns (model, metadata)."""
    from ..models.registry import create_model

    weights, _ = resolve_checkpoint(path)
    meta = read_checkpoint_meta(path)
    if file_sha256(weights) != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights} does not match the SHA-256 recorded in its checkpoint.json: the pair was "
                              "mixed up or the file is corrupt.")
    cfg = meta["model"]
    model = create_model(cfg["name"], num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                         **cfg.get("kwargs", {}))
    state, _ = read_tensors(weights)
    load_state_dict_checked(model, state, str(weights))
    return model.to(map_location), meta


def average_checkpoints(runs, out: str | Path, weights=None, warn=None) -> Path:
    """Average the weights of several run folders of one model and dataset (see weights.average_state_dicts)
    into a new run folder ``out`` that eval, predict and the other tools read like any other. Returns the path
    of its checkpoint.json. Runs that did not start from the same weights average into a broken network:
    ``warn`` (default: warnings.warn) is called with a line saying which (train/lineage.py)."""
    import warnings

    from ..weights import average_state_dicts
    from .lineage import independence_warning

    runs = [Path(run) for run in runs]
    if len(runs) < 2:
        raise CheckpointError(f"averaging needs at least two run folders, got {len(runs)}")
    if weights is not None and len(weights) != len(runs):
        raise CheckpointError(f"{len(weights)} weights for {len(runs)} run folders; give one weight per run")
    model, meta = load_model_checkpoint(runs[0])
    states, metas = [model.state_dict()], [meta]
    for run in runs[1:]:
        other = read_checkpoint_meta(run)
        for field in ("model", "classes", "image_shape", "preprocess"):
            if other.get(field) != meta.get(field):
                raise CheckpointError(f"{run} differs from {runs[0]} in its {field} ({other.get(field)!r} vs "
                                      f"{meta.get(field)!r}); only runs of one model on one dataset can be averaged")
        states.append(load_model_checkpoint(run)[0].state_dict())
        metas.append(other)
    if (problem := independence_warning([str(run) for run in runs], metas, states)) is not None:
        (warn or (lambda text: warnings.warn(text, stacklevel=3)))(problem)
    model.load_state_dict(average_state_dicts(states, weights))
    meta = {key: value for key, value in meta.items() if key not in ("metrics", "epoch")}
    meta["averaged_from"] = [str(run) for run in runs]
    meta["average_weights"] = list(weights) if weights is not None else [1.0] * len(runs)
    return save_model_checkpoint(Path(out), model, meta)


# ------------------------------------------------------------------------------------------------ train state
def save_train_state(run_dir: Path, model, optimizer, schedule, state: dict, ema=None) -> None:
    """Model + optimiser tensors (and the weights' moving average, if any) and the JSON-able rest (epoch,
    scheduler, history) in one atomic file."""
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
    opt = optimizer.state_dict()
    opt_scalars = {}
    for idx, values in opt["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optimizer/{idx}/{key}"] = value
            else:
                opt_scalars.setdefault(str(idx), {})[key] = value
    header = {"state": state, "optimizer_param_groups": opt["param_groups"], "optimizer_scalars": opt_scalars,
              "scheduler": schedule.state_dict()}
    atomic_save_tensors(tensors, Path(run_dir) / STATE_FILE,
                        {"cnnkit_train_state": json.dumps(header, default=_json_default)})


def _json_default(value):
    if torch.is_tensor(value):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint header")


def load_train_state(run_dir: Path, model, optimizer, schedule, ema=None) -> dict:
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {STATE_FILE}: nothing to resume (the run never finished an epoch).")
    tensors, meta = read_tensors(path)
    if "cnnkit_train_state" not in meta:
        raise CheckpointError(f"{path} has no training state header; it was not written by cnnkit's trainer.")
    header = json.loads(meta["cnnkit_train_state"])
    load_state_dict_checked(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}, str(path))
    if ema is not None:
        averaged = {k[4:]: v for k, v in tensors.items() if k.startswith("ema/")}
        if not averaged:
            raise CheckpointError(f"{path} holds no moving average of the weights: the run was trained without "
                                  "ema; resume it with the same setting (ema=0).")
        load_state_dict_checked(ema, averaged, str(path))
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, idx, name = key.split("/", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    for idx, values in header["optimizer_scalars"].items():
        opt_state.setdefault(int(idx), {}).update(values)
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": header["optimizer_param_groups"]})
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: the optimiser state does not fit this run's optimiser ({exc}).") from None
    schedule.load_state_dict(header["scheduler"])
    return header["state"]
