"""``cnnkit eval`` and ``cnnkit average``: score a run, average runs."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from .common import claim_out
from .options import add_command, comma_floats, overwrite_option
from .train_flags import training_config

EXAMPLES = {
    "eval": "examples:\n  cnnkit eval runs/lenet5 --data mnist\n"
            "  cnnkit eval runs/cifar --tta-crop 28   # AlexNet's ten-crop testing: 28 px crops of the 32 px images",
    "average": "examples:\n  cnnkit average runs/a runs/b runs/c -o runs/soup   # then: cnnkit eval runs/soup\n"
               "  cnnkit average runs/a runs/b -o runs/ab --weights 2,1",
}


def add_parser(sub) -> None:
    p = add_command(sub, "eval", "evaluate a checkpoint on a dataset's test split", EXAMPLES)
    p.add_argument("checkpoint", type=Path, help="run folder (or its checkpoint.json)")
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=positive_int, default=1000, dest="eval_batch_size")
    p.add_argument("--tta-crop", type=positive_int, metavar="SIZE",
                   help="ten-crop testing (AlexNet): average the softmax over SIZE px crops at the four corners and "
                        "the centre and their mirror images, each enlarged to the model's input")
    p.set_defaults(func=cmd_eval)

    p = add_command(sub, "average",
                    "average the weights of runs of one model (a model soup, or a run's last checkpoints)", EXAMPLES)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with checkpoint.json)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the new run folder")
    overwrite_option(p)
    p.add_argument("--weights", type=comma_floats, help="one weight per run, e.g. 2,1,1 (default: equal)")
    p.set_defaults(func=cmd_average)


# The command that applies each non-classification task's checkpoint.
TASK_COMMANDS = {"denoising": "'cnnkit denoise RUN_DIR IMAGE'", "segmentation": "'cnnkit segment RUN_DIR IMAGE'",
                 "compression": "'cnnkit compress RUN_DIR IMAGE'", "pix2pix": "'cnnkit translate RUN_DIR IMAGE'",
                 "gan": "'cnnkit gan RUN_DIR -o samples.png'"}


def cmd_eval(args) -> None:
    from ..data import load_dataset
    from ..train import Trainer
    from ..train.checkpoint import load_model_checkpoint

    model, meta = load_model_checkpoint(args.checkpoint)
    task = meta.get("task", {}).get("name", "classification")
    if task != "classification":  # top-1/top-5 mean nothing for a denoiser, a codec or a GAN
        raise CnnkitError(f"{args.checkpoint} holds a {task} model; 'cnnkit eval' scores classifiers. Its test "
                          f"figures are in {Path(args.checkpoint) / 'summary.json'}; "
                          f"{TASK_COMMANDS.get(task, 'its own command')} applies it to an image.")
    channels, _, width = meta["image_shape"]
    bundle = load_dataset(args.data or meta["dataset"], image_size=width, channels=channels)
    if list(bundle.classes) != list(meta["classes"]):
        raise CnnkitError(f"{args.checkpoint} was trained on {meta['dataset']} ({len(meta['classes'])} classes); "
                          f"{bundle.name} has {len(bundle.classes)} different classes.")
    config = training_config(args, progress=False, input_size=(meta["preprocess"].get("input_size") or [None])[0])
    trainer = Trainer(model, bundle, config)
    trainer.preprocess.mean, trainer.preprocess.std = meta["preprocess"]["mean"], meta["preprocess"]["std"]
    result = trainer.evaluate(bundle.test, with_confusion=True)
    print(f"{meta['model']['name']} on {bundle.name} test ({result['images']:,} images): top-1 accuracy "
          f"{result['acc']:.2f}% (error {100 - result['acc']:.2f}%), top-5 {result['top5']:.2f}%, "
          f"loss {result['loss']:.4f}")
    for name, acc in zip(bundle.classes, result["per_class_acc"].tolist()):
        print(f"  {name:<14} {acc:6.2f}%")


def cmd_average(args) -> None:
    from ..train.checkpoint import average_checkpoints

    if args.out.resolve() in {run.resolve() for run in args.runs}:
        raise CnnkitError(f"--out {args.out} is one of the runs being averaged; give a new folder")
    claim_out(args, None)
    meta = average_checkpoints(args.runs, args.out, args.weights,
                               warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    print(f"averaged {len(args.runs)} runs into {meta.parent}; evaluate it with: cnnkit eval {meta.parent}")
