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
    """``bundle`` with the training and test splits cut to --train-subset and --test-subset (when given): the
    training images balanced over the classes, the test images a fixed random draw (some copies are sorted by
    class, so never "the first N")."""
    import dataclasses

    from ..data import random_subset

    if getattr(args, "train_subset", None):
        bundle = dataclasses.replace(bundle, train=balanced_subset(bundle.train, args.train_subset, seed))
    if getattr(args, "test_subset", None):
        bundle = dataclasses.replace(bundle, test=random_subset(bundle.test, args.test_subset, seed))
    return bundle


def balanced_subset(dataset, n: int, seed: int):
    import torch

    labels = dataset.labels
    classes = int(labels.max()) + 1
    if n < classes:
        raise CnnkitError(f"--train-subset {n} is fewer than one image per class ({classes} classes).")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    per_class = [order[labels[order] == c] for c in range(classes)]
    quota = [n // classes + (1 if c < n % classes else 0) for c in range(classes)]
    return dataset.subset(torch.cat([idx[:q] for idx, q in zip(per_class, quota)]).sort().values)


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


def train_task(args, model, bundle, task, defaults: dict):
    from ..train import TrainConfig, Trainer

    options = {**defaults, **{k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "seed")
                              if getattr(args, k) is not None}}
    options = {"optimizer": "adam", "weight_decay": 0.0, **options}
    config = TrainConfig(device=args.device, num_threads=args.threads, progress=progress(args), **options)
    trainer = Trainer(model, bundle, config, out=args.out, task=task)
    return trainer, trainer.fit()


def output_path(args, suffix: str) -> Path:
    return args.output or args.image.with_name(f"{args.image.stem}-{suffix}.png")


def need_checkpoint_and_image(args, command: str) -> None:
    if args.checkpoint is None or args.image is None:
        raise CnnkitError(f"Give a run folder and an image (cnnkit {command} RUN_DIR IMAGE -o out.png), or train one "
                          f"with 'cnnkit {command} --train --data ...'.")


def load_task_checkpoint(path, task: str, what: str, command: str):
    """(model, meta) of a run trained for ``task``; another task's checkpoint is refused with the fix."""
    from ..train.checkpoint import load_model_checkpoint

    model, meta = load_model_checkpoint(path)
    found = meta.get("task", {}).get("name", "classification")
    if found != task:
        raise CnnkitError(f"{path} holds a {found} model, not {what}; train one with 'cnnkit {command} --train'.")
    return model, meta
