"""``cnnkit`` command line: thin argument parsing over the Python API.

Every subcommand prints a clear message and exits with status 2 on bad input (unknown names, missing or
corrupt files, unreadable images, mismatched checkpoints); a traceback means a bug in cnnkit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

from .errors import CnnkitError

EXAMPLES = {
    "train": """examples:
  cnnkit train lenet5 --data mnist --recipe recipes/lenet5_mnist.yaml --out runs/lenet5
  cnnkit train resnet20 --data cifar10 --epochs 30 --lr 0.1 --schedule onecycle --batch-size 256
  cnnkit train lenet5 --data mnist --out runs/lenet5 --resume runs/lenet5   # continue an interrupted run
  cnnkit train lenet5 --data mnist --nproc 2 --out runs/ddp     # data-parallel: 2 processes through torchrun
  torchrun --nproc-per-node 4 --max-restarts 3 -m cnnkit train resnet20 --data cifar10 --scale-lr""",
    "eval": "example:\n  cnnkit eval runs/lenet5 --data mnist",
    "predict": "examples:\n  cnnkit predict runs/lenet5 digit.png other.jpg --top-k 3\n"
               "  cnnkit predict runs/lenet5 pen_on_paper.png --invert   # dark digit on a light background",
    "models": "example:\n  cnnkit models --family resnet",
    "datasets": "example:\n  cnnkit datasets",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", description="Build, train, transfer, inspect and apply convolutional neural networks.",
        epilog="Run 'cnnkit COMMAND --help' for a command's options and examples. "
               "Datasets are looked for in $CNNKIT_DATA, then ~/.cache/cnnkit, then downloaded.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name, help_text):
        return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("models", "list the registered models")
    p.add_argument("--family", help="only this family (lenet, resnet, vgg, ...)")
    p.set_defaults(func=cmd_models)

    p = command("datasets", "list the dataset catalog and which datasets are present locally")
    p.set_defaults(func=cmd_datasets)

    p = command("train", "train a model with the one training loop")
    p.add_argument("model", nargs="?", help="model name (see 'cnnkit models'); may come from --recipe")
    p.add_argument("--data", help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--recipe", type=Path, help="YAML recipe with model, data and training options")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="(peak) learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--schedule", choices=["constant", "step", "plateau", "cosine", "onecycle"])
    p.add_argument("--milestones", type=lambda s: [int(v) for v in s.split(",")], help="epochs for --schedule step, e.g. 30,60")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action="store_true", default=None)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--precision", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--val-split", type=float, help="fraction of the training set held out for validation")
    p.add_argument("--early-stopping", type=int, metavar="EPOCHS")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, dest="num_threads")
    p.add_argument("--workers", type=int, dest="num_workers", help="image-folder decoding processes (default 2)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model argument, e.g. --model-arg output=linear (YAML-parsed value)")
    p.add_argument("--out", type=Path, help="run folder (default runs/MODEL-DATA)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last epoch (any number of processes); 'auto': "
                        "continue --out if it holds a checkpoint, else start it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines only)")
    p.add_argument("--accumulate", type=int, metavar="BATCHES",
                   help="batches per optimiser step (gradient accumulation)")
    p.add_argument("--warmup-epochs", type=float, help="linear learning-rate warm-up (cosine schedule)")
    dp = p.add_argument_group("data-parallel training (PyTorch DDP through torchrun; see README 'Scaling out')")
    dp.add_argument("--nproc", type=int, metavar="N",
                    help="start N processes on this node through torchrun (one per GPU, or CPU processes with gloo)")
    dp.add_argument("--nnodes", help="with --nproc: number of nodes (or MIN:MAX for elastic c10d rendezvous)")
    dp.add_argument("--node-rank", type=int, help="with --nproc: this node's rank (static rendezvous)")
    dp.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="with --nproc: the rendezvous every node joins")
    dp.add_argument("--max-restarts", type=int, default=0,
                    help="with --nproc: restart the workers up to this many times after a failure; each restart "
                         "continues from the run folder's last checkpoint")
    dp.add_argument("--sync-batchnorm", action="store_true", default=None,
                    help="BatchNorm statistics over the global batch of all processes")
    dp.add_argument("--scale-lr", action="store_true", default=None,
                    help="linear scaling rule: lr x global batch / reference batch, with warm-up")
    dp.add_argument("--reference-batch", type=int, help="the batch --lr was tuned for (default: --batch-size)")
    p.set_defaults(func=cmd_train)

    p = command("eval", "evaluate a checkpoint on a dataset's test split")
    p.add_argument("checkpoint", type=Path, help="run folder (or its checkpoint.json)")
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    p.set_defaults(func=cmd_eval)

    p = command("predict", "classify image files with a checkpoint (top-k classes)")
    p.add_argument("checkpoint", type=Path, help="run folder (or its checkpoint.json)")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--invert", action="store_true", help="invert grey levels (dark-on-light drawings for MNIST models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_predict)
    return parser


# ------------------------------------------------------------------------------------------------ commands
def cmd_models(args) -> None:
    from .models.registry import get_model_entry, list_models

    names = list_models(args.family)
    if not names:
        raise CnnkitError(f"No models in family {args.family!r}.")
    print(f"{'model':<22} {'family':<12} {'input':<12} {'classes':>7}  paper")
    for name in names:
        e = get_model_entry(name)
        print(f"{name:<22} {e.family:<12} {'x'.join(map(str, e.input_size)):<12} {e.num_classes:>7}  {e.paper}")


def cmd_datasets(args) -> None:
    from .data.catalog import data_roots
    from .data.datasets import describe_catalog

    print(f"{'dataset':<15} {'local':<6} description")
    for row in describe_catalog():
        print(f"{row['name']:<15} {'yes' if row['local'] else 'no':<6} {row['description']}")
    print(f"{'imagefolder:PATH':<15} {'':<6} a folder with one sub-folder per class (or train/ and val/ sub-folders)")
    print("searched: " + ", ".join(str(r) for r in data_roots()) + ", then the download mirrors")


def _parse_model_args(pairs: list[str]) -> dict:
    import yaml

    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise CnnkitError(f"--model-arg expects KEY=VALUE, got {pair!r}.")
        key, value = pair.split("=", 1)
        out[key] = yaml.safe_load(value)
    return out


def load_recipe(path: Path) -> dict:
    import yaml

    try:
        recipe = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise CnnkitError(f"Recipe {path} does not exist; see recipes/ for examples.") from None
    except yaml.YAMLError as exc:
        raise CnnkitError(f"Recipe {path} is not valid YAML: {exc}") from None
    if not isinstance(recipe, dict):
        raise CnnkitError(f"Recipe {path} must be a mapping of options, not {type(recipe).__name__}.")
    return recipe


TRAIN_FLAGS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "milestones", "weight_decay", "momentum",
               "nesterov", "label_smoothing", "grad_clip", "precision", "channels_last", "compile", "val_split",
               "early_stopping", "seed", "device", "num_threads", "num_workers", "accumulate", "warmup_epochs",
               "sync_batchnorm", "scale_lr", "reference_batch")


def cmd_train(args) -> None:
    from .train import distributed

    if args.nproc is not None and not distributed.launched_by_torchrun():
        return _launch_torchrun(args)
    launcher_options = {"--nnodes": args.nnodes, "--node-rank": args.node_rank, "--rdzv-endpoint": args.rdzv_endpoint,
                        "--max-restarts": args.max_restarts or None}
    given = [name for name, value in launcher_options.items() if value is not None]
    if given and args.nproc is None and not distributed.launched_by_torchrun():
        raise CnnkitError(f"{', '.join(given)} configure the torchrun launch: add --nproc N (processes on this node).")
    if args.nproc is not None and int(os.environ.get("LOCAL_WORLD_SIZE", args.nproc)) != args.nproc:
        raise CnnkitError(f"--nproc {args.nproc} was given, but torchrun started {os.environ['LOCAL_WORLD_SIZE']} "
                          "processes on this node; launching with torchrun, leave --nproc out.")
    try:
        _train(args)
    finally:
        distributed.shutdown()


def _launch_torchrun(args) -> None:
    from .train import distributed

    device_kind = distributed.check_process_count(args.nproc, args.device or "auto")
    threads = args.num_threads
    if threads is None and device_kind == "cpu":
        threads = max(1, distributed.usable_cpu_cores() // args.nproc)
    # The workers re-run this command line, less --nproc (torchrun's own parser would take it for an
    # ambiguous abbreviation of --nproc-per-node and stop).
    out = args.resume if args.resume and str(args.resume) != "auto" else args.out
    rdzv_id = f"cnnkit-{Path(out).name if out else args.model}"  # the same on every node running this command
    command = distributed.torchrun_command(args.nproc, _without_nproc(args.argv), args.nnodes, args.node_rank,
                                           args.rdzv_endpoint, rdzv_id=rdzv_id, max_restarts=args.max_restarts)
    status = distributed.launch(command, threads)
    if status != 0:
        raise CnnkitError(f"torchrun exited with status {status}: a worker failed (its error is printed above)"
                          + ("; the run folder keeps the last completed epoch: continue it with --resume."
                             if out else "."))


def _without_nproc(argv: list[str]) -> list[str]:
    """argv less the --nproc option (in any form argparse accepts: --nproc 2, --nproc=2, --npro 2, ...)."""
    kept, skip_value = [], False
    for token in argv:
        name = token.split("=", 1)[0]
        if skip_value:
            skip_value = False
        elif len(name) >= len("--np") and "--nproc".startswith(name):
            skip_value = "=" not in token
        else:
            kept.append(token)
    return kept


def _train(args) -> None:
    import torch

    from .data import load_dataset
    from .models.registry import create_model, get_model_entry
    from .train import TrainConfig, Trainer
    from .train import distributed
    from .train.checkpoint import STATE_FILE

    recipe: dict = {}
    auto_resume = args.resume is not None and str(args.resume) == "auto"
    if auto_resume:
        args.resume = None
    if args.resume:
        config_file = args.resume / "config.json"
        if not (args.resume / STATE_FILE).is_file() or not config_file.is_file():
            raise CnnkitError(f"{args.resume} has no {STATE_FILE} and config.json to resume from; "
                              "it is not a cnnkit run folder, or the run never finished an epoch.")
        saved = json.loads(config_file.read_text())
        recipe = {**saved["config"], "model": saved["model"]["name"], "data": saved["dataset"],
                  "model_args": saved["model"].get("kwargs", {})}
        for flag in TRAIN_FLAGS:  # only the epoch budget and runtime settings may change on resume
            if getattr(args, flag, None) is not None and flag not in ("epochs", "device", "num_threads", "num_workers"):
                raise CnnkitError(f"--{flag.replace('_', '-')} cannot change when resuming; the run's own "
                                  "options are read from its config.json.")
    elif args.recipe:
        recipe = load_recipe(args.recipe)
    model_name = args.model or recipe.pop("model", None)
    data_name = args.data or recipe.pop("data", None)
    recipe.pop("model", None), recipe.pop("data", None)
    if not model_name or not data_name:
        raise CnnkitError("Name a model and a dataset: 'cnnkit train MODEL --data DATASET' (or put 'model:' and "
                          "'data:' in the recipe).")
    model_args = {**recipe.pop("model_args", {}), **_parse_model_args(args.model_arg)}
    recipe.pop("description", None)
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    options = {**recipe, **overrides}
    if args.no_progress or not sys.stderr.isatty():
        options["progress"] = False
    config = TrainConfig.from_dict(options)
    entry = get_model_entry(model_name)  # an unknown name fails before any data is read
    # Image folders are decoded at the model's own input size and channel count.
    bundle = load_dataset(data_name, image_size=config.input_size or entry.input_size[-1],
                          channels=model_args.get("in_channels", entry.input_size[0]))
    torch.manual_seed(config.seed)  # the initial weights follow the seed too
    model = create_model(model_name, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0], **model_args)
    out = args.resume or args.out or Path("runs") / f"{model_name}-{data_name.replace(':', '_').replace('/', '_')}"
    resume = bool(args.resume)
    # A worker group that torchrun restarted after a failure (--max-restarts) re-runs the original command
    # line: it continues from the checkpoint the failed attempt left, if that attempt finished an epoch.
    if (auto_resume or distributed.restart_count() > 0) and (Path(out) / STATE_FILE).is_file():
        resume = True
    Trainer(model, bundle, config, out=out).fit(resume=resume)


def cmd_eval(args) -> None:
    from .data import load_dataset
    from .train import TrainConfig, Trainer
    from .train.checkpoint import load_model_checkpoint

    model, meta = load_model_checkpoint(args.checkpoint)
    channels, _, width = meta["image_shape"]
    bundle = load_dataset(args.data or meta["dataset"], image_size=width, channels=channels)
    if list(bundle.classes) != list(meta["classes"]):
        raise CnnkitError(f"{args.checkpoint} was trained on {meta['dataset']} ({len(meta['classes'])} classes); "
                          f"{bundle.name} has {len(bundle.classes)} different classes.")
    config = TrainConfig(device=args.device, eval_batch_size=args.batch_size, progress=False,
                         input_size=(meta["preprocess"].get("input_size") or [None])[0])
    trainer = Trainer(model, bundle, config)
    trainer.preprocess.mean, trainer.preprocess.std = meta["preprocess"]["mean"], meta["preprocess"]["std"]
    result = trainer.evaluate(bundle.test, with_confusion=True)
    print(f"{meta['model']['name']} on {bundle.name} test ({result['images']:,} images): top-1 accuracy "
          f"{result['acc']:.2f}% (error {100 - result['acc']:.2f}%), top-5 {result['top5']:.2f}%, loss {result['loss']:.4f}")
    for name, acc in zip(bundle.classes, result["per_class_acc"].tolist()):
        print(f"  {name:<14} {acc:6.2f}%")


def cmd_predict(args) -> None:
    from .predict import predict_files
    from .train.checkpoint import load_model_checkpoint

    model, meta = load_model_checkpoint(args.checkpoint)
    results = predict_files(model, meta, args.images, args.top_k, args.invert)
    if args.json:
        print(json.dumps({str(f): r for f, r in zip(args.images, results)}, indent=2))
        return
    for f, ranked in zip(args.images, results):
        print(f"{f}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in ranked))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            args.func(args)
    except CnnkitError as exc:
        print(f"cnnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnkit {args.command}: interrupted; 'cnnkit train ... --resume RUN_DIR' continues a training run "
              "from its last completed epoch.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
