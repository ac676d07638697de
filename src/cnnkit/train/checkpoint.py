"""Resume state and averaging of run folders, for the Trainer (the run folder's own files, the model card and
weights, are written and read by :mod:`cnnkit.runs`; its names stay importable from here).

  last.safetensors   everything needed to resume: model and optimiser tensors, with the epoch, scheduler state
                     and history as JSON in the file's header, so one atomic rename commits all of it together
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..runs import (  # noqa: F401 (re-exported: cnnkit.train.checkpoint is where these were first)
    FORMAT,
    HEADER_KEY,
    MAX_CHANNELS,
    MAX_CLASSES,
    MAX_IMAGE_SIDE,
    META_FILE,
    META_SCHEMA,
    MODEL_FILE,
    RUN_FILES,
    STATE_FILE,
    atomic_save_tensors,
    atomic_write_text,
    claim_run_folder,
    file_sha256,
    fresh_run_folder,
    holds_run,
    is_cnnkit_run,
    load_model_checkpoint,
    load_state_dict_checked,
    read_checkpoint_meta,
    read_tensors,
    remove_temp_files,
    resolve_checkpoint,
    save_model_checkpoint,
    validate_checkpoint_meta,
)
from ..weights import average_state_dicts
from .lineage import independence_warning


def average_checkpoints(runs, out: str | Path, weights=None, warn=None) -> Path:
    """Average the weights of several run folders of one model and dataset (see weights.average_state_dicts)
    into a new run folder ``out`` that eval, predict and the other tools read like any other. Returns the path
    of its checkpoint.json. Runs that did not start from the same weights average into a broken network:
    ``warn`` (default: warnings.warn) is called with a line saying which (train/lineage.py)."""
    import warnings

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
def save_train_state(run_dir: Path, model, optimizer, schedule, state: dict, ema=None, scaler=None) -> None:
    """Model + optimiser tensors (and the weights' moving average, if any) and the JSON-able rest (epoch,
    scheduler, history, fp16's loss scale) in one atomic file."""
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
    if scaler is not None and scaler.is_enabled():  # its scale and growth tracker: plain numbers
        header["grad_scaler"] = scaler.state_dict()
    atomic_save_tensors(tensors, Path(run_dir) / STATE_FILE,
                        {"cnnkit_train_state": json.dumps(header, default=_json_default)})


def _json_default(value):
    if torch.is_tensor(value):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint header")


def load_train_state(run_dir: Path, model, optimizer, schedule, ema=None, scaler=None) -> dict:
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
    if scaler is not None and scaler.is_enabled() and header.get("grad_scaler"):
        # Without it (a run that trained in another precision) the scaler starts afresh, as a new fp16 run does.
        scaler.load_state_dict(header["grad_scaler"])
    return header["state"]
