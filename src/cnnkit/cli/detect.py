"""``cnnkit detect train|eval|predict``: Faster R-CNN (or the one-stage RetinaNet, ``--model retinanet``) trained
through the one loop on a canvas data set, scored by COCO mAP (pycocotools), and applied to an image file, its boxes
drawn with labels and scores. eval, predict and --resume rebuild whichever detector the run recorded."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from .options import add_command, train_options

EXAMPLES = {"detect": """examples:
  cnnkit detect train --data canvas-mnist --num-train 4000 --epochs 6 --threads 1 --out runs/frcnn-canvas
  cnnkit detect train --model retinanet --out runs/retinanet-canvas   # the one-stage baseline (RetinaNet)
  cnnkit detect train --resume --out runs/frcnn-canvas          # continue an interrupted run exactly
  cnnkit detect eval runs/frcnn-canvas                          # mAP@[.5:.95] and mAP@.5 on its test canvases
  cnnkit detect predict runs/frcnn-canvas canvas.png -o boxes.png --min-score 0.5"""}

BACKBONES = ("resnet20", "resnet32", "resnet56", "resnet18", "resnet34", "resnet50")
# The detectors `detect train --model` builds, and the prefix of their default run folders
DETECTORS = {"faster_rcnn": "frcnn", "retinanet": "retinanet"}
# What `detect train` trains with unless flags say otherwise: the paper's SGD (momentum 0.9, weight decay
# 1e-4) at lr 0.02 for a batch of 16, with the gradient norm clipped while the untrained RPN's proposals settle.
DETECT_TRAINING = {"epochs": 6, "batch_size": 16, "lr": 0.02, "optimizer": "sgd", "momentum": 0.9,
                   "weight_decay": 1e-4, "grad_clip": 10.0}


def _probability(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a score between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"a score is between 0 and 1, got {value:g}")
    return value


def add_parser(sub) -> None:
    p = add_command(sub, "detect", "train a detector (Faster R-CNN, RetinaNet) on canvases, score it by COCO mAP, or "
                    "draw its detections", EXAMPLES)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    t = actions.add_parser("train", help="train a detector through the one training loop",
                           description="train a detector (Faster R-CNN by default) through the one training loop",
                           epilog=EXAMPLES["detect"])
    t.add_argument("--model", choices=tuple(DETECTORS), default="faster_rcnn",
                   help="two-stage Faster R-CNN or the one-stage RetinaNet (focal loss)")
    t.add_argument("--data", default="canvas-mnist", help="canvas-mnist or canvas-fashion-mnist (generated offline)")
    t.add_argument("--num-train", type=positive_int, default=4000, help="training canvases")
    t.add_argument("--num-test", type=positive_int, default=500, help="test canvases")
    t.add_argument("--data-seed", type=int, default=0, help="seed of the generated canvases")
    t.add_argument("--backbone", choices=BACKBONES, default="resnet20",
                   help="zoo network whose last feature stage the detector reads")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    train_options(t)
    t.set_defaults(func=cmd_detect_train)

    e = actions.add_parser("eval", help="COCO mAP of a trained detector on its test canvases",
                           description="COCO mAP of a trained detector on its test canvases")
    e.add_argument("checkpoint", type=Path, help="run folder of a trained detector")
    e.add_argument("--num-test", type=positive_int, help="test canvases (default: as trained)")
    e.add_argument("--threads", type=positive_int, help="CPU threads")
    e.set_defaults(func=cmd_detect_eval)

    q = actions.add_parser("predict", help="draw a detector's boxes, labels and scores on an image",
                           description="draw a detector's boxes, labels and scores on an image")
    q.add_argument("checkpoint", type=Path, help="run folder of a trained detector")
    q.add_argument("image", type=Path, help="image file (read as the detector's channels)")
    q.add_argument("-o", "--output", type=Path, help="output PNG (default IMAGE-detections.png)")
    q.add_argument("--min-score", type=_probability, default=0.5, help="draw detections scoring at least this")
    q.add_argument("--scale", type=positive_int, default=4, help="enlarge the picture N times (small canvases)")
    q.set_defaults(func=cmd_detect_predict)


def _load_data(spec: dict):
    from ..data.canvas import load_canvas
    from ..detect.task import detection_bundle

    return detection_bundle(load_canvas(spec["name"], num_train=spec["num_train"], num_test=spec["num_test"],
                                        seed=spec["seed"]))


def cmd_detect_train(args) -> None:
    import torch

    from ..detect.task import DetectionTask
    from ..models.registry import create_model
    from ..train import Trainer
    from .common import claim_out, seed_of
    from .train_flags import training_config

    if args.resume:
        return _resume(args)
    claim_out(args, None)
    spec = {"name": args.data, "num_train": args.num_train, "num_test": args.num_test, "seed": args.data_seed}
    bundle = _load_data(spec)
    torch.manual_seed(seed_of(args))
    model = create_model(args.model, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0],
                         backbone=args.backbone)
    args.out = claim_out(args, Path("runs") / f"{DETECTORS[args.model]}-{args.backbone}-{args.data}")
    config = training_config(args, DETECT_TRAINING)
    summary = Trainer(model, bundle, config, out=args.out, task=DetectionTask(spec)).fit()
    _report(summary, args.out)


def _resume(args) -> None:
    from ..detect.task import DetectionTask
    from ..models.registry import create_model
    from ..train import TrainConfig, Trainer
    from ..train.checkpoint import STATE_FILE

    if args.out is None or not (args.out / STATE_FILE).exists():
        raise CnnkitError(f"--resume continues the run in --out, which needs its {STATE_FILE}; got "
                          f"{args.out or 'no --out'}. Give the folder of an interrupted 'cnnkit detect train'.")
    described = json.loads((args.out / "config.json").read_text())
    meta = json.loads((args.out / "checkpoint.json").read_text())
    spec = meta.get("task", {}).get("data")
    if meta.get("task", {}).get("name") != "detection" or not spec:
        raise CnnkitError(f"{args.out} is not a 'cnnkit detect train' run; resume it with the command that made it.")
    record = described["model"]
    model = create_model(record["name"], num_classes=record["num_classes"], in_channels=record["in_channels"],
                         **record.get("kwargs", {}))
    config = TrainConfig.from_dict({**described["config"], **({"epochs": args.epochs} if args.epochs else {})})
    summary = Trainer(model, _load_data(spec), config, out=args.out, task=DetectionTask(spec)).fit(resume=True)
    _report(summary, args.out)


def _report(summary: dict, out: Path) -> None:
    print(f"test mAP@[.5:.95] {summary['test_map']:.4f}, mAP@.5 {summary['test_map50']:.4f}, "
          f"{summary['test_images_per_second']:.0f} images/s at inference; {out}")


def _load_detector(path: Path):
    from .common import load_task_checkpoint

    return load_task_checkpoint(path, "detection", "a detector", "detect train")


def cmd_detect_eval(args) -> None:
    import torch

    from ..detect.task import detect_split, map_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = _load_detector(args.checkpoint)
    spec = dict(meta["task"].get("data") or {})
    if not spec:
        raise CnnkitError(f"{args.checkpoint} does not say which canvases it was trained on; evaluate it from Python "
                          "with cnnkit.detect.map_metrics.")
    if args.num_test:
        spec["num_test"] = args.num_test
    test = _load_data(spec).test
    predictions, seconds = detect_split(model, test, meta["preprocess"]["mean"], meta["preprocess"]["std"])
    scores = map_metrics(test.ground_truth(), predictions)
    print(f"{spec['name']} test, {len(test)} canvases: mAP@[.5:.95] {scores['map']:.4f}, mAP@.5 "
          f"{scores['map50']:.4f}, mAP@.75 {scores['map75']:.4f}; {len(test) / seconds:.0f} images/s")


def cmd_detect_predict(args) -> None:
    import torch

    from ..data.augment import normalize
    from ..data.image_io import read_image
    from ..detect.draw import write_detections

    model, meta = _load_detector(args.checkpoint)
    image = read_image(args.image, meta["image_shape"][0])
    x = normalize(image.float()[None] / 255, meta["preprocess"]["mean"], meta["preprocess"]["std"])
    model.eval()
    with torch.no_grad():
        found = model(x)[0]
    output = args.output or args.image.with_name(f"{args.image.stem}-detections.png")
    write_detections(image, found, output, meta["classes"], args.scale, args.min_score)
    shown = found["scores"] >= args.min_score
    listing = ", ".join(f"{meta['classes'][c]} {s:.2f} at ({', '.join(f'{v:.0f}' for v in b)})"
                        for b, s, c in zip(found["boxes"][shown].tolist(), found["scores"][shown].tolist(),
                                           found["labels"][shown].tolist()))
    print(f"{output}: {int(shown.sum())} detection(s) scoring >= {args.min_score:g}" + (f": {listing}" if listing
                                                                                          else ""))
