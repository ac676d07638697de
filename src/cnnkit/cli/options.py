"""Argument types, option groups and help wording shared by the ``cnnkit`` commands (no heavy imports)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..schema import positive_int
from ..train.config import PRECISIONS  # light: the config module loads no torch


def add_command(sub, name: str, help_text: str, examples: dict):
    """A subcommand parser whose description is its help line and whose epilog holds its examples."""
    return sub.add_parser(name, help=help_text, description=help_text, epilog=examples.get(name),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def train_options(p, out_help: str = "run folder (default runs/NAME, or runs/NAME-2, ... when that holds a run)"
                  ) -> None:
    """The options of a subcommand that trains through the one loop (denoise, segment, translate, gan)."""
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--lr", float), ("--seed", int)):
        p.add_argument(flag, type=kind)
    p.add_argument("--threads", type=int, dest="num_threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 (default), bf16 autocast (DnCNN trains 1.9x faster on an AVX-512 CPU) or fp16")
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="channels_last memory layout (faster convolutions on CPUs and recent GPUs)")
    p.add_argument("--out", type=Path, help=out_help)
    overwrite_option(p)
    p.add_argument("--no-progress", action="store_true")


def overwrite_option(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out and start a new one there (without it such a folder is "
                        "refused: --resume continues a run)")


def comma_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def comma_names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def subset_options(p) -> None:
    """--train-subset/--test-subset: a quick run of any command that trains or probes."""
    p.add_argument("--train-subset", type=positive_int, metavar="N",
                   help="train on N images, balanced over the classes (default: all; e.g. 2000 for a quick run)")
    p.add_argument("--test-subset", type=positive_int, metavar="N",
                   help="evaluate on N test images drawn at random (default: all)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written, and every option's default shown (unless its help already says it)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        absent = default is None or default is False or default is argparse.SUPPRESS or default == []
        said = f"({default})" in text or (isinstance(default, float) and f"({default:g})" in text)
        if action.option_strings and not absent and not said and "default" not in text.lower():
            shown = ",".join(f"{v:g}" for v in default) if isinstance(default, list) else "%(default)s"
            text += f" (default: {shown})"
        return text


# Help for options that several commands share, or that were declared without one; (command, option) first.
OPTION_HELP = {
    "--epochs": "epochs to train",
    "--batch-size": "images per batch",
    "--lr": "(peak) learning rate",
    "--seed": "random seed: initial weights, data order, augmentation",
    "--threads": "CPU threads for PyTorch (default: all cores)",
    "--device": "auto (a GPU when there is one), cpu, cuda or cuda:N",
    "--no-progress": "no progress bar",
    "--out": "run folder",
    "--optimizer": "optimiser",
    "--schedule": "learning-rate schedule: constant, step (/10 at --milestones), plateau, cosine or one-cycle",
    "--weight-decay": "L2 weight decay",
    "--momentum": "SGD momentum",
    "--nesterov": "Nesterov momentum (SGD)",
    "--label-smoothing": "label smoothing epsilon, e.g. 0.1",
    "--grad-clip": "clip the gradient norm to this value",
    "--precision": "fp32, or bf16 autocast (faster on recent CPUs and GPUs)",
    "--channels-last": "channels_last memory layout (faster convolutions)",
    "--early-stopping": "stop after EPOCHS epochs without improvement of the validation metric",
    "--image": "image file",
    "image": "image file (PNG, JPEG, ...)",
    "images": "image files (PNG, JPEG, ...); any size or mode is converted",
    "-o": "output image",
    "content": "the photo to repaint",
    "--content-layers": "comma-separated content layer names (default: the descriptor's)",
    "--init": "start the optimisation from the content image or from noise",
    "--train-iterations": "generator training steps",
    "--save-generator": "write the trained generator to this file",
    "--noise": "kind of corruption to learn to remove",
    "--task": "what to translate: grey -> colour, Sobel edges -> image, or fill a masked square",
    "--port": "TCP port to listen on",
    "--strategy": "linear probe, head only, head then the top stages, or every layer (full)",
    "--descriptor": "the network whose feature statistics define style",
    "--snapshot-every": "iterations between snapshots",
    "--layer": "layer name (default: the first convolution; an unknown name lists the valid ones)",
    "--target": "maximise a channel's mean, one neuron, or a class logit",
    "--steps": "optimisation steps",
    "--parameterization": "optimise pixels, or a decorrelated Fourier spectrum (smoother images)",
    "--examples": "test images used",
    "--resolution": "grid points along each direction",
    "--span": "extent of each direction, in filter-normalised units",
    "run_dir": "run folder with metrics.csv",
    ("eval", "--batch-size"): "images per evaluation batch",
    ("denoise", "--out"): "run folder (default runs/denoise-DATA-NOISE-bBOTTLENECK)",
    ("segment", "--out"): "run folder (default runs/MODEL-DATA, e.g. runs/unet-shapes)",
    ("translate", "--out"): "run folder (default runs/p2p-TASK-DATA, or l1-TASK-DATA with --l1-only)",
    ("gan", "--out"): "run folder (default runs/dcgan-DATA)",
    ("predict", "--top-k"): "classes listed per image",
    ("finetune", "--lr"): "learning rate (phase 2 of two-phase uses lr x --lr-factor)",
    ("stylize", "--optimizer"): "L-BFGS (the paper's) or Adam on the pixels",
    ("texture", "--optimizer"): "L-BFGS (the paper's) or Adam on the pixels",
    ("stylize", "--seed"): "random seed (noise initialisation)",
    ("texture", "--seed"): "random seed (the starting noise, the generator's inputs)",
    ("maximize", "--seed"): "random seed (starting image, jitter)",
}
