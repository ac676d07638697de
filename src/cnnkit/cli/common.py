"""Helpers of the commands that write run folders, train through the one loop or apply a task's checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CnnkitError


def claim_out(args, default: Path | None, fresh: bool = True) -> Path | None:
    """The run folder of a command that writes one: --out as given, or ``default`` -- which, when it already holds
    a run, becomes the first free runs/NAME-2, -3, ... (``fresh``), so rerunning a command never destroys the
    previous run. Either is then checked by checkpoint.claim_run_folder (refused if it holds a run, unless
    --overwrite; refused if it is a file or cannot be written)."""
    from ..train.checkpoint import claim_run_folder, fresh_run_folder

    out = args.out
    if out is None and default is not None:
        out = fresh_run_folder(default) if fresh and not args.overwrite else default
        if out != default:
            print(f"{default} holds an earlier run; this run goes to {out} (--out names the folder, --resume "
                  "continues a run, --overwrite replaces it)", file=sys.stderr)
    if out is not None:  # only 'train' can continue a run
        claim_run_folder(out, args.overwrite, resume_hint="--resume" if hasattr(args, "resume") else None)
    return out


def apply_subsets(bundle, args, seed: int = 0):
    """``bundle`` cut to --train-subset (balanced over the classes) and --test-subset (a random draw), when given."""
    from ..data.datasets import subset_bundle

    return subset_bundle(bundle, getattr(args, "train_subset", None), getattr(args, "test_subset", None), seed)


def seed_of(args) -> int:
    """--seed, or 0 where the command's --seed was left out."""
    return 0 if args.seed is None else args.seed


def parse_model_args(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CnnkitError(f"--model-arg expects KEY=VALUE, got {pair!r}.")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def progress(args) -> bool:
    return not args.no_progress  # a bar on a terminal, plain periodic lines in a piped log (cnnkit.progress)


def train_new_run(args, load_data, build_model, run_name, make_task, defaults: dict):
    """The ``--train`` branch every task command shares: an explicit --out is checked before the data is read,
    the data cut to --train-subset/--test-subset, the initial weights seeded, a fresh run folder claimed (the
    default ``runs/`` + ``run_name(bundle)``) and the one loop run. Returns (trainer, model, bundle, summary)."""
    import torch

    from ..train import Trainer
    from .train_flags import training_config

    claim_out(args, None)
    bundle = apply_subsets(load_data(), args, seed_of(args))
    torch.manual_seed(seed_of(args))
    model = build_model(bundle)
    args.out = claim_out(args, Path("runs") / run_name(bundle))
    config = training_config(args, {"optimizer": "adam", "weight_decay": 0.0, **defaults})
    trainer = Trainer(model, bundle, config, out=args.out, task=make_task(bundle))
    return trainer, model, bundle, trainer.fit()


def output_path(args, suffix: str) -> Path:
    return args.output or args.image.with_name(f"{args.image.stem}-{suffix}.png")


def load_task_run_for_image(args, task: str, what: str, command: str):
    """(model, meta) of the run folder a task command applies to an image: both must be given, and the run must
    have been trained for ``task``."""
    if args.checkpoint is None or args.image is None:
        raise CnnkitError(f"Give a run folder and an image (cnnkit {command} RUN_DIR IMAGE -o out.png), or train one "
                          f"with 'cnnkit {command} --train --data ...'.")
    return load_task_checkpoint(args.checkpoint, task, what, command)


def load_task_checkpoint(path, task: str, what: str, command: str):
    """(model, meta) of a run trained for ``task``; another task's checkpoint is refused with the fix."""
    from ..train.checkpoint import load_model_checkpoint

    model, meta = load_model_checkpoint(path)
    found = meta.get("task", {}).get("name", "classification")
    if found != task:
        raise CnnkitError(f"{path} holds a {found} model, not {what}; train one with 'cnnkit {command} --train'.")
    return model, meta
