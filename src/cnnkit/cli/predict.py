"""``cnnkit predict`` and ``cnnkit import``: classify images, turn foreign weights into a run folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from .common import claim_out, parse_model_args
from .options import add_command, comma_floats, overwrite_option

EXAMPLES = {
    "predict": "examples:\n  cnnkit predict runs/lenet5 digit.png other.jpg --top-k 3\n"
               "  cnnkit predict runs/lenet5 pen_on_paper.png --invert   # dark digit on a light background\n"
               "  cnnkit predict --model efficientnet_lite0 --pretrained imagenet photo.jpg   # top-5 ImageNet labels\n"
               "  cnnkit predict --model resnet20 --pretrained resnet20-12fca82f.th --data cifar10 \\\n"
               "      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 cat.png   # a foreign weights file",
    "import": """examples:
  cnnkit import resnet20-12fca82f.th --model resnet20 --data cifar10 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out runs/resnet20-akamaster
  cnnkit eval runs/resnet20-akamaster          # then predict, viz and serve read it like a trained run
  cnnkit import resnet50-0676ba61.pth --model resnet50 --classes imagenet_classes.txt --out runs/resnet50-tv""",
}


def add_parser(sub) -> None:
    p = add_command(sub, "predict",
                    "classify image files with a checkpoint or pretrained weights (top-k classes)", EXAMPLES)
    p.add_argument("checkpoint", type=Path, help="run folder (or its checkpoint.json); omit with --model/--pretrained")
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--model", help="a registered model to build instead of reading a run folder")
    p.add_argument("--pretrained", help="with --model: a pretrained tag (imagenet) or weights file")
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--invert", action="store_true", help="invert grey levels (dark-on-light drawings for MNIST models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    imported_preprocessing_options(p, "with --pretrained FILE: ")
    p.set_defaults(func=cmd_predict)

    p = add_command(sub, "import",
                    "turn a foreign checkpoint (.pth/.th/.pt/.safetensors) into a cnnkit run folder", EXAMPLES)
    p.add_argument("weights", type=Path, help="the weights file (torchvision, akamaster CIFAR ResNet, ...)")
    p.add_argument("--model", required=True, help="the cnnkit model it fits (see 'cnnkit models')")
    p.add_argument("--layout", choices=["cnnkit", "torchvision", "cifar_resnet"],
                   help="the file's key layout (default: found from the keys); cifar_resnet is the akamaster "
                        "resnetNN-*.th family, whose option-A shortcuts pad zeros on both sides")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="builder argument that overrides what the layout implies, e.g. shortcut_padding=after")
    imported_preprocessing_options(p, "")
    p.add_argument("-o", "--out", type=Path, required=True, help="the run folder to write")
    overwrite_option(p)
    p.set_defaults(func=cmd_import)


def imported_preprocessing_options(p, prefix: str) -> None:
    p.add_argument("--data", help=prefix + "the dataset the weights were trained on (classes, image size, and "
                                           "the default of 'cnnkit eval'), e.g. cifar10")
    p.add_argument("--classes", help=prefix + "class names NAME,NAME,... or a file with one per line")
    p.add_argument("--mean", type=comma_floats, help=prefix + "the normalisation mean the weights were trained with")
    p.add_argument("--std", type=comma_floats, help=prefix + "the normalisation std the weights were trained with")


def cmd_predict(args) -> None:
    from ..predict import predict_files
    from ..train.checkpoint import load_model_checkpoint

    if args.model or args.pretrained:
        from ..models.registry import create_model
        from ..transfer import classify_images

        if not (args.model and args.pretrained):
            raise CnnkitError("--model and --pretrained go together: cnnkit predict --model efficientnet_lite0 "
                              "--pretrained imagenet photo.jpg")
        args.images = [args.checkpoint, *args.images]  # no run folder: the first positional is an image
        if Path(args.pretrained).is_dir():  # a run folder carries its own preprocessing and classes
            model, meta = load_model_checkpoint(args.pretrained)
            results = predict_files(model, meta, args.images, args.top_k, args.invert)
        elif Path(args.pretrained).is_file():
            model, meta = _imported_model(args)
            results = predict_files(model, meta, args.images, args.top_k, args.invert)
        else:
            model = create_model(args.model, pretrained=args.pretrained)
            results = classify_images(model, args.images, args.top_k)
    else:
        if not args.images:
            raise CnnkitError("name at least one image: cnnkit predict RUN_DIR image.png")
        model, meta = load_model_checkpoint(args.checkpoint)
        results = predict_files(model, meta, args.images, args.top_k, args.invert,
                                warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    if args.json:
        print(json.dumps({str(f): r for f, r in zip(args.images, results)}, indent=2))
        return
    for f, ranked in zip(args.images, results):
        print(f"{f}: " + ", ".join(f"{name} {100 * p:.1f}%" for name, p in ranked))


def _imported_model(args):
    """predict --model NAME --pretrained FILE: the weights with the preprocessing given on the command line."""
    from ..importer import build_imported_model, imported_meta, read_class_names

    hint = (f"; or make a run folder once, with the preprocessing recorded: 'cnnkit import {args.pretrained} "
            f"--model {args.model} --data ... --mean ... --std ... --out RUN_DIR', then 'cnnkit predict RUN_DIR ...'")
    meta = imported_meta(args.model, mean=args.mean, std=args.std, dataset=args.data, hint=hint,
                         classes=read_class_names(args.classes) if args.classes else None)
    model, _ = build_imported_model(args.pretrained, args.model, num_classes=len(meta["classes"]),
                                    in_channels=meta["image_shape"][0])
    return model, meta


def cmd_import(args) -> None:
    from ..importer import import_checkpoint, read_class_names

    claim_out(args, None)
    meta_path = import_checkpoint(args.weights, args.model, args.out, mean=args.mean, std=args.std,
                                  classes=read_class_names(args.classes) if args.classes else None,
                                  dataset=args.data, layout=args.layout, model_args=parse_model_args(args.model_arg))
    meta = json.loads(meta_path.read_text())
    kwargs = meta["model"].get("kwargs") or {}
    built = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    print(f"imported {args.weights} ({meta['imported_from']['layout']} layout) as {meta['model']['name']}"
          f"{f' ({built})' if built else ''} into {meta_path.parent}")
    evaluate = f"cnnkit eval {meta_path.parent}" + ("" if meta.get("dataset") else " --data DATASET")
    print(f"next: {evaluate}; cnnkit predict {meta_path.parent} IMAGE; cnnkit viz ...; cnnkit serve")
