"""``cnnkit`` command line: thin argument parsing over the Python API.

Every subcommand prints a clear message and exits with status 2 on bad input (unknown names, missing or
corrupt files, unreadable images, mismatched checkpoints); a traceback means a bug in cnnkit.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import CnnkitError

EXAMPLES = {
    "train": """examples:
  cnnkit train lenet5 --data mnist --recipe recipes/lenet5_mnist.yaml --out runs/lenet5
  cnnkit train resnet20 --data cifar10 --epochs 30 --lr 0.1 --schedule onecycle --batch-size 256
  cnnkit train lenet5 --data mnist --out runs/lenet5 --resume runs/lenet5   # continue an interrupted run""",
    "eval": "example:\n  cnnkit eval runs/lenet5 --data mnist",
    "predict": "examples:\n  cnnkit predict runs/lenet5 digit.png other.jpg --top-k 3\n"
               "  cnnkit predict runs/lenet5 pen_on_paper.png --invert   # dark digit on a light background\n"
               "  cnnkit predict --model efficientnet_lite0 --pretrained imagenet photo.jpg   # top-5 ImageNet labels",
    "finetune": """examples:
  cnnkit finetune --from efficientnet_lite0:imagenet --data cifar10 --strategy linear --train-subset 1000
  cnnkit finetune --from efficientnet_lite0:imagenet --data cifar10 --strategy two-phase --top-stages 2 \\
      --train-subset 1000 --epochs 5 --lr 0.05 --out runs/lite0-cifar10
  cnnkit finetune --from runs/lenet5_relu-mnist --data fashion-mnist --strategy full --train-subset 1000
  cnnkit finetune --from resnet50-0676ba61.pth --model resnet50 --data imagefolder:photos --strategy head""",
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
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR from its last epoch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (per-epoch lines only)")
    p.set_defaults(func=cmd_train)

    p = command("eval", "evaluate a checkpoint on a dataset's test split")
    p.add_argument("checkpoint", type=Path, help="run folder (or its checkpoint.json)")
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    p.set_defaults(func=cmd_eval)

    p = command("predict", "classify image files with a checkpoint or pretrained weights (top-k classes)")
    p.add_argument("checkpoint", type=Path, help="run folder (or its checkpoint.json); omit with --model/--pretrained")
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--model", help="a registered model to build instead of reading a run folder")
    p.add_argument("--pretrained", help="with --model: a pretrained tag (imagenet) or weights file")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--invert", action="store_true", help="invert grey levels (dark-on-light drawings for MNIST models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_predict)

    p = command("finetune", "transfer a pretrained model or checkpoint to a dataset (cnnkit.transfer)")
    p.add_argument("--from", dest="source", required=True, metavar="PRETRAINED|CHECKPOINT",
                   help="MODEL:TAG (efficientnet_lite0:imagenet), a cnnkit run folder, or a weights file with --model")
    p.add_argument("--model", help="model to build for a weights file or a bare tag")
    p.add_argument("--data", required=True, help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--strategy", choices=["linear", "head", "two-phase", "full"], default="two-phase")
    p.add_argument("--stage", action="append", help="--strategy linear: a stage to probe (repeatable; default all)")
    p.add_argument("--top-stages", type=int, default=2, help="two-phase: stages unfrozen in phase 2 (default 2)")
    p.add_argument("--train-subset", type=int, metavar="N", help="N training images, balanced over the classes")
    p.add_argument("--test-subset", type=int, metavar="N", help="evaluate on N test images (default all)")
    p.add_argument("--epochs", type=int, default=5, help="epochs per phase (default 5)")
    p.add_argument("--head-epochs", type=int, help="two-phase: epochs of the head phase (default --epochs)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--lr-factor", type=float, default=0.1, help="two-phase: phase-2 learning rate factor (0.1)")
    p.add_argument("--lr-decay", type=float, help="discriminative LRs: each stage this times the one above")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=int, help="resize images to this (default: the backbone's, 224)")
    p.add_argument("--channels", choices=["sum", "average", "repeat"], default="sum",
                   help="adapting an RGB backbone to grey data: sum (default) or average the first filters")
    p.add_argument("--keep-head", action="store_true", help="keep the classifier (same classes as the checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, dest="num_threads")
    p.add_argument("--workers", type=int, default=2, dest="num_workers", help="image-folder decoding processes")
    p.add_argument("--out", type=Path, help="run folder for the fine-tuned checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)
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
               "early_stopping", "seed", "device", "num_threads", "num_workers")


def cmd_train(args) -> None:
    import torch

    from .data import load_dataset
    from .models.registry import create_model, get_model_entry
    from .train import TrainConfig, Trainer
    from .train.checkpoint import STATE_FILE

    recipe: dict = {}
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
    Trainer(model, bundle, config, out=out).fit(resume=bool(args.resume))


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

    if args.model or args.pretrained:
        from .models.registry import create_model
        from .transfer import classify_images

        if not (args.model and args.pretrained):
            raise CnnkitError("--model and --pretrained go together: cnnkit predict --model efficientnet_lite0 "
                              "--pretrained imagenet photo.jpg")
        args.images = [args.checkpoint, *args.images]  # no run folder: the first positional is an image
        model = create_model(args.model, pretrained=args.pretrained)
        results = classify_images(model, args.images, args.top_k)
    else:
        if not args.images:
            raise CnnkitError("name at least one image: cnnkit predict RUN_DIR image.png")
        model, meta = load_model_checkpoint(args.checkpoint)
        results = predict_files(model, meta, args.images, args.top_k, args.invert)
    if args.json:
        print(json.dumps({str(f): r for f, r in zip(args.images, results)}, indent=2))
        return
    for f, ranked in zip(args.images, results):
        print(f"{f}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in ranked))


def _load_source(args):
    """The model named by ``finetune --from``: MODEL:TAG, a cnnkit run folder, or a weights file (--model)."""
    from .models.registry import create_model
    from .train.checkpoint import load_model_checkpoint

    path = Path(args.source)
    if path.is_dir() and (path / "checkpoint.json").is_file():
        return load_model_checkpoint(path)[0]
    if path.exists() or args.model:
        if not args.model:
            raise CnnkitError(f"--from {path} is a weights file; name its architecture with --model NAME.")
        return create_model(args.model, pretrained=str(path) if path.exists() else args.source)
    if ":" in args.source:
        name, tag = args.source.split(":", 1)
        return create_model(name, pretrained=tag)
    raise CnnkitError(f"--from {args.source!r} is neither MODEL:TAG (e.g. efficientnet_lite0:imagenet), a cnnkit run "
                      "folder, nor an existing weights file.")


def _balanced_subset(dataset, n: int, seed: int):
    import torch

    labels = dataset.labels
    classes = int(labels.max()) + 1
    if n < classes:
        raise CnnkitError(f"--train-subset {n} is fewer than one image per class ({classes} classes).")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    per_class = [order[labels[order] == c] for c in range(classes)]
    quota = [n // classes + (1 if c < n % classes else 0) for c in range(classes)]
    return dataset.subset(torch.cat([idx[:q] for idx, q in zip(per_class, quota)]).sort().values)


def cmd_finetune(args) -> None:
    import dataclasses

    import torch

    from .data import load_dataset
    from .train import TrainConfig
    from .transfer import finetune, format_probe_table

    torch.manual_seed(args.seed)
    model = _load_source(args)
    pretrained = getattr(model, "pretrained_config", None) or {}
    size = args.input_size or pretrained.get("crop") or model.default_config["input_size"][-1]
    bundle = load_dataset(args.data, image_size=size, channels=model.cnnkit_config["in_channels"])
    if args.train_subset:
        bundle = dataclasses.replace(bundle, train=_balanced_subset(bundle.train, args.train_subset, args.seed))
    if args.test_subset:
        pick = torch.randperm(len(bundle.test), generator=torch.Generator().manual_seed(args.seed))[:args.test_subset]
        bundle = dataclasses.replace(bundle, test=bundle.test.subset(pick))
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, input_size=args.input_size,
                         seed=args.seed, device=args.device, num_threads=args.num_threads,
                         num_workers=args.num_workers, channels_last=True,
                         augment={"flip": True} if bundle.image_shape[0] == 3 else {},
                         progress=not args.no_progress and sys.stderr.isatty())
    result = finetune(model, bundle, args.strategy, config, top_stages=args.top_stages, lr_factor=args.lr_factor,
                      head_epochs=args.head_epochs, stage=args.stage, lr_decay=args.lr_decay,
                      new_head=not args.keep_head, channel_mode=args.channels, out=args.out)
    if args.strategy == "linear":
        print(format_probe_table(result["probes"]))
    print(f"{args.strategy}: test accuracy {result['test_acc']:.2f}% on {bundle.describe()}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
