"""``cnnkit`` command line: thin argument parsing over the Python API.

Every subcommand prints a clear message and exits with status 2 on bad input (unknown names, missing or
corrupt files, unreadable images, mismatched checkpoints); a traceback means a bug in cnnkit.
"""

from __future__ import annotations

import argparse
import errno
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
               "  cnnkit predict runs/lenet5 pen_on_paper.png --invert   # dark digit on a light background\n"
               "  cnnkit predict --model efficientnet_lite0 --pretrained imagenet photo.jpg   # top-5 ImageNet labels\n"
               "  cnnkit predict --model resnet20 --pretrained resnet20-12fca82f.th --data cifar10 \\\n"
               "      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 cat.png   # a foreign weights file",
    "import": """examples:
  cnnkit import resnet20-12fca82f.th --model resnet20 --data cifar10 \\
      --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --out runs/resnet20-akamaster
  cnnkit eval runs/resnet20-akamaster          # then predict, viz and serve read it like a trained run
  cnnkit import resnet50-0676ba61.pth --model resnet50 --classes imagenet_classes.txt --out runs/resnet50-tv""",
    "finetune": """examples:
  cnnkit finetune --from efficientnet_lite0:imagenet --data cifar10 --strategy linear --train-subset 1000
  cnnkit finetune --from efficientnet_lite0:imagenet --data cifar10 --strategy two-phase --top-stages 2 \\
      --train-subset 1000 --epochs 5 --lr 0.05 --out runs/lite0-cifar10
  cnnkit finetune --from runs/lenet5_relu-mnist --data fashion-mnist --strategy full --train-subset 1000
  cnnkit finetune --from resnet50-0676ba61.pth --model resnet50 --data imagefolder:photos --strategy head""",
    "models": "example:\n  cnnkit models --family resnet",
    "datasets": "example:\n  cnnkit datasets",
    "stylize": """examples:
  cnnkit stylize photo.jpg starry_night.jpg -o out.png                  # EfficientNet-Lite0, offline, 384 px
  cnnkit stylize photo.jpg starry.jpg scream.jpg --style-weights 0.7,0.3 -o mix.png --preserve-color
  cnnkit stylize photo.jpg starry.jpg --descriptor vgg19 --weights vgg19-dcbb9e9d.pth -o out.png
  cnnkit stylize photo.jpg starry.jpg --optimizer adam --lr 0.02 --init noise --snapshots snaps/ -o out.png""",
    "texture": """examples:
  cnnkit texture starry_night.jpg -o texture.png --size 256                      # optimise from noise
  cnnkit texture starry_night.jpg --feedforward --save-generator starry.safetensors -o sample.png
  cnnkit texture --generator starry.safetensors --height 512 --width 1024 --count 4 -o samples.png""",
    "denoise": """examples:
  cnnkit denoise --train --data mnist --noise gaussian --level 0.3 --bottleneck 16 --out runs/dae-mnist
  cnnkit denoise --train --data fashion-mnist --noise salt-and-pepper --level 0.2 --out runs/dae-fashion
  cnnkit denoise runs/dae-mnist digit.png -o clean.png --add-noise gaussian:0.3   # corrupt, then denoise""",
    "segment": """examples:
  cnnkit segment --train --data shapes --epochs 12 --out runs/unet-shapes      # synthetic shapes, seed 0
  cnnkit segment --train --data segfolder:my_data --image-size 128 --out runs/unet-mine   # images/ + masks/
  cnnkit segment runs/unet-shapes picture.png -o overlay.png --mask-out mask.png""",
    "translate": """examples:
  cnnkit translate --train --task colorize --train-subset 5000 --out runs/p2p-colorize   # cifar10, grey -> RGB
  cnnkit translate --train --task edges --l1-only --out runs/l1-edges        # fashion-mnist, the L1-only U-Net
  cnnkit translate runs/p2p-colorize grey.png -o colour.png
  cnnkit translate runs/p2p-colorize photo.jpg -o colour.png --make-input    # grey it first, then colourise""",
    "gan": """examples:
  cnnkit gan --train --data mnist --epochs 5 --out runs/dcgan-mnist   # samples/epoch_NNN.png, FID-like score
  cnnkit gan runs/dcgan-mnist -o samples.png --count 64 --seed 3""",
    "average": "examples:\n  cnnkit average runs/a runs/b runs/c -o runs/soup   # then: cnnkit eval runs/soup\n"
               "  cnnkit average runs/a runs/b -o runs/ab --weights 2,1",
    "summary": "examples:\n  cnnkit summary resnet18 --input 3x224x224 --batch-size 32\n"
               "  cnnkit summary lenet5            # at the model's native input (1x32x32)",
    "lr-find": "examples:\n  cnnkit lr-find lenet5 --data mnist             # plot in runs/lr-find-lenet5-mnist.png\n"
               "  cnnkit lr-find resnet20 --data cifar10 --optimizer sgd --steps 300 -o lr.png",
    "serve": "examples:\n  cnnkit serve                          # then open http://127.0.0.1:8000\n"
             "  cnnkit serve --checkpoints runs --port 8080",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", description="Build, train, transfer, inspect and apply convolutional neural networks.",
        epilog="Run 'cnnkit COMMAND --help' for a command's options and examples. "
               "Datasets are looked for in $CNNKIT_DATA, then ~/.cache/cnnkit, then downloaded.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
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

    p = command("summary", "per-layer shapes, parameters, multiply-accumulates, memory and receptive fields")
    p.add_argument("model", help="model name (see 'cnnkit models')")
    p.add_argument("--input", help="input size CxHxW or HxW (default: the model's native input)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="batch size for the activation-memory column")
    p.set_defaults(func=cmd_summary)

    from .viz.cli import add_parser as add_viz_parser

    add_viz_parser(sub)

    p = command("train", "train a model with the one training loop")
    p.add_argument("model", nargs="?", help="model name (see 'cnnkit models'); may come from --recipe")
    p.add_argument("--data", help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--recipe", type=Path, help="YAML recipe with model, data and training options")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="(peak) learning rate")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    p.add_argument("--schedule", choices=["constant", "step", "plateau", "cosine", "onecycle"])
    p.add_argument("--milestones", type=lambda s: [int(v) for v in s.split(",")],
                   help="epochs for --schedule step, e.g. 30,60")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--nesterov", action="store_true", default=None)
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--mixup", type=float, metavar="ALPHA", help="mixup with weights ~ Beta(ALPHA, ALPHA), e.g. 0.2")
    p.add_argument("--cutmix", type=float, metavar="ALPHA", help="CutMix with box areas ~ Beta(ALPHA, ALPHA), e.g. 1")
    p.add_argument("--ema", type=float, metavar="DECAY",
                   help="validate and keep a moving average of the weights, e.g. 0.998 (~ the last 500 steps)")
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
    p.add_argument("--out", type=Path, help="run folder (default runs/MODEL-DATA, or runs/MODEL-DATA-2, ... when that "
                   "holds a run)")
    _overwrite_option(p)
    _subset_options(p)
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
    p.add_argument("--batch-size", type=positive_int, default=1000)
    p.set_defaults(func=cmd_eval)

    p = command("average", "average the weights of runs of one model (a model soup, or a run's last checkpoints)")
    p.add_argument("runs", nargs="+", type=Path, help="run folders (each with checkpoint.json)")
    p.add_argument("-o", "--out", type=Path, required=True, help="the new run folder")
    _overwrite_option(p)
    p.add_argument("--weights", type=_floats, help="one weight per run, e.g. 2,1,1 (default: equal)")
    p.set_defaults(func=cmd_average)

    p = command("predict", "classify image files with a checkpoint or pretrained weights (top-k classes)")
    p.add_argument("checkpoint", type=Path, help="run folder (or its checkpoint.json); omit with --model/--pretrained")
    p.add_argument("images", nargs="*", type=Path)
    p.add_argument("--model", help="a registered model to build instead of reading a run folder")
    p.add_argument("--pretrained", help="with --model: a pretrained tag (imagenet) or weights file")
    p.add_argument("--top-k", type=positive_int, default=5)
    p.add_argument("--invert", action="store_true", help="invert grey levels (dark-on-light drawings for MNIST models)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _imported_preprocessing_options(p, "with --pretrained FILE: ")
    p.set_defaults(func=cmd_predict)

    p = command("import", "turn a foreign checkpoint (.pth/.th/.pt/.safetensors) into a cnnkit run folder")
    p.add_argument("weights", type=Path, help="the weights file (torchvision, akamaster CIFAR ResNet, ...)")
    p.add_argument("--model", required=True, help="the cnnkit model it fits (see 'cnnkit models')")
    p.add_argument("--layout", choices=["cnnkit", "torchvision", "cifar_resnet"],
                   help="the file's key layout (default: found from the keys); cifar_resnet is the akamaster "
                        "resnetNN-*.th family, whose option-A shortcuts pad zeros on both sides")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="builder argument that overrides what the layout implies, e.g. shortcut_padding=after")
    _imported_preprocessing_options(p, "")
    p.add_argument("--out", type=Path, required=True, help="the run folder to write")
    _overwrite_option(p)
    p.set_defaults(func=cmd_import)

    p = command("stylize", "Gatys neural style transfer: a content image painted in the style of others")
    p.add_argument("content", type=Path)
    p.add_argument("styles", nargs="+", type=Path, help="one or more style images")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--style-weights", type=_floats, help="one weight per style image, e.g. 0.7,0.3")
    _style_options(p, iterations=150, size=384)
    p.add_argument("--content-layers", type=_names)
    p.add_argument("--content-weight", type=float, help="alpha (default: the descriptor's)")
    p.add_argument("--init", choices=["content", "noise"], default="content")
    p.add_argument("--preserve-color", action="store_true", help="transfer luminance only, keep the photo's colours")
    p.set_defaults(func=cmd_stylize)

    p = command("texture", "texture synthesis: optimise noise, or train a feed-forward generator and sample it")
    p.add_argument("style", nargs="?", type=Path, help="the texture image (not needed with --generator)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--height", type=positive_int, help="output height (default --size)")
    p.add_argument("--width", type=positive_int, help="output width (default --size)")
    _style_options(p, iterations=150, size=256)
    p.add_argument("--feedforward", action="store_true", help="train a texture network (Ulyanov et al. 2016)")
    p.add_argument("--train-size", type=positive_int, default=128, help="generator training crops (pixels)")
    p.add_argument("--train-iterations", type=positive_int, default=300)
    p.add_argument("--save-generator", type=Path, metavar="FILE.safetensors")
    p.add_argument("--generator", type=Path, metavar="FILE.safetensors", help="sample a trained generator")
    p.add_argument("--count", type=positive_int, default=1, help="samples side by side (with a generator)")
    p.set_defaults(func=cmd_texture)

    for name, help_text in (("denoise", "train a denoising autoencoder, or denoise an image with one"),
                            ("segment", "train a U-Net segmenter, or write the mask overlay of an image")):
        p = command(name, help_text)
        p.add_argument("checkpoint", nargs="?", type=Path, help="run folder of a trained model")
        p.add_argument("image", nargs="?", type=Path)
        p.add_argument("-o", "--output", type=Path, help="output image (default IMAGE-%s.png)" % name)
        p.add_argument("--train", action="store_true", help="train through the one training loop")
        data_help = "mnist or fashion-mnist" if name == "denoise" else "shapes[:SEED] or segfolder:PATH"
        p.add_argument("--data", help=data_help)
        _train_options(p)
        if name == "denoise":
            p.add_argument("--noise", choices=["gaussian", "salt-and-pepper"], default="gaussian")
            p.add_argument("--level", type=float, default=0.3, help="sigma (gaussian) or fraction (salt-and-pepper)")
            p.add_argument("--bottleneck", type=positive_int, default=16,
                           help="bottleneck channels of conv_autoencoder")
            p.add_argument("--add-noise", metavar="KIND:LEVEL", help="corrupt IMAGE first (a demonstration)")
            _subset_options(p)
            p.set_defaults(func=cmd_denoise)
        else:
            p.add_argument("--image-size", type=positive_int, help="shapes: image size (64); folders: resize to N x N")
            p.add_argument("--num-train", type=positive_int, default=2000, help="shapes: training images")
            p.add_argument("--num-test", type=positive_int, default=400, help="shapes: test images")
            p.add_argument("--base-channels", type=positive_int, default=16, help="U-Net width (64 in the paper)")
            p.add_argument("--dice-weight", type=float, default=1.0, help="loss = cross-entropy + w x Dice")
            p.add_argument("--mask-out", type=Path, help="also write the class-index mask (PNG)")
            p.add_argument("--size", type=positive_int, help="resize IMAGE so its longer side is N before segmenting")
            p.set_defaults(func=cmd_segment)

    from .compress_cli import add_parsers as add_compression_parsers

    add_compression_parsers(sub)

    p = command("translate", "train pix2pix (colorize, edges, inpaint), or translate an image with it")
    p.add_argument("checkpoint", nargs="?", type=Path, help="run folder of a trained pix2pix model")
    p.add_argument("image", nargs="?", type=Path)
    p.add_argument("-o", "--output", type=Path, help="output image (default IMAGE-translated.png)")
    p.add_argument("--make-input", action="store_true",
                   help="IMAGE is a target-style picture: derive the input as training did (grey, edges, mask)")
    p.add_argument("--train", action="store_true", help="train through the one training loop")
    p.add_argument("--task", choices=["colorize", "edges", "inpaint"], default="colorize", dest="kind")
    p.add_argument("--data", help="dataset (default: cifar10 for colorize and inpaint, fashion-mnist for edges)")
    p.add_argument("--l1-only", action="store_true", help="no discriminator: the paper's L1-only U-Net ablation")
    p.add_argument("--l1-weight", type=float, default=100.0, help="lambda of lambda L1 + adversarial (100)")
    p.add_argument("--base-channels", type=positive_int, default=32,
                   help="generator and discriminator width (64 in the paper)")
    _subset_options(p)
    _train_options(p)
    p.set_defaults(func=cmd_translate)

    p = command("gan", "train a DCGAN (28x28 or 32x32 images), or write a grid of its samples")
    p.add_argument("checkpoint", nargs="?", type=Path, help="run folder of a trained GAN")
    p.add_argument("-o", "--output", type=Path, default=Path("samples.png"), help="sample grid (default samples.png)")
    p.add_argument("--count", type=positive_int, default=64, help="samples in the grid")
    p.add_argument("--train", action="store_true", help="train through the one training loop")
    p.add_argument("--data", default="mnist", help="mnist, fashion-mnist or cifar10")
    p.add_argument("--width", type=positive_int, default=64, help="generator and discriminator width (64 in the paper)")
    _subset_options(p)
    p.add_argument("--fid-samples", type=int, default=5000,
                   help="generated images behind each epoch's score (default 5000; 0: no score, no feature network)")
    _train_options(p)
    p.set_defaults(func=cmd_gan)

    p = command("lr-find", "learning-rate range test (Smith 2015; fastai's lr_find): loss vs lr plot, suggestion")
    p.add_argument("model", help="model name (see 'cnnkit models')")
    p.add_argument("--data", required=True, help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="default: the model's default recipe's")
    p.add_argument("--batch-size", type=int, help="default: the model's default recipe's")
    p.add_argument("--start-lr", type=float, default=1e-7, help="first learning rate of the ramp (default 1e-7)")
    p.add_argument("--end-lr", type=float, default=10.0, help="last learning rate of the ramp (default 10)")
    p.add_argument("--steps", type=int, default=200, help="mini-batches of the ramp at most (default 200)")
    p.add_argument("-o", "--output", type=Path, help="plot (default runs/lr-find-MODEL-DATA.png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, dest="num_threads")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_lr_find)

    p = command("serve", "the web playground: draw digits, classify photos, train live, explore the zoo")
    p.add_argument("--checkpoints", type=Path, default=Path("runs"),
                   help="folder of run folders offered on the Draw page; Train writes its runs here (default runs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; the playground has no login)")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name browsers use to reach the server (a reverse proxy, a LAN name); requests "
                        "naming any other host are refused (default: the --host address and loopback names)")
    p.set_defaults(func=cmd_serve)

    p = command("finetune", "transfer a pretrained model or checkpoint to a dataset (cnnkit.transfer)")
    p.add_argument("--from", dest="source", required=True, metavar="PRETRAINED|CHECKPOINT",
                   help="MODEL:TAG (efficientnet_lite0:imagenet), a cnnkit run folder, or a weights file with --model")
    p.add_argument("--model", help="model to build for a weights file or a bare tag")
    p.add_argument("--data", required=True, help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--strategy", choices=["linear", "head", "two-phase", "full"], default="two-phase")
    p.add_argument("--stage", action="append", help="--strategy linear: a stage to probe (repeatable; default all)")
    p.add_argument("--top-stages", type=int, default=2, help="two-phase: stages unfrozen in phase 2 (default 2)")
    _subset_options(p)
    p.add_argument("--epochs", type=int, default=5, help="epochs per phase (default 5)")
    p.add_argument("--head-epochs", type=positive_int, help="two-phase: epochs of the head phase (default --epochs)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--lr-factor", type=float, default=0.1, help="two-phase: phase-2 learning rate factor (0.1)")
    p.add_argument("--lr-decay", type=float, help="discriminative LRs: each stage this times the one above")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--input-size", type=positive_int, help="resize images to this (default: the backbone's, 224)")
    p.add_argument("--channels", choices=["sum", "average", "repeat"], default="sum",
                   help="adapting an RGB backbone to grey data: sum (default) or average the first filters")
    p.add_argument("--keep-head", action="store_true", help="keep the classifier (same classes as the checkpoint)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, dest="num_threads")
    p.add_argument("--workers", type=int, default=2, dest="num_workers", help="image-folder decoding processes")
    p.add_argument("--out", type=Path, help="run folder for the fine-tuned checkpoint (default "
                   "runs/finetune-SOURCE-DATA-STRATEGY; the linear probe saves no model)")
    _overwrite_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)
    _complete_help(parser)
    return parser


def _train_options(p) -> None:
    """The options of a subcommand that trains through the one loop (denoise, segment, translate, gan)."""
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--lr", float), ("--seed", int), ("--threads", int)):
        p.add_argument(flag, type=kind)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, help="run folder (default runs/NAME, or runs/NAME-2, ... when that holds a run)")
    _overwrite_option(p)
    p.add_argument("--no-progress", action="store_true")


def _overwrite_option(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="delete the run already in --out and start a new one there (without it such a folder is "
                        "refused: --resume continues a run)")


def claim_out(args, default: Path | None, fresh: bool = True) -> Path | None:
    """The run folder of a command that writes one: --out as given, or ``default`` -- which, when it already holds
    a run, becomes the first free runs/NAME-2, -3, ... (``fresh``), so rerunning a command never destroys the
    previous run. Either is then checked by checkpoint.claim_run_folder (refused if it holds a run, unless
    --overwrite; refused if it is a file or cannot be written)."""
    from .train.checkpoint import claim_run_folder, fresh_run_folder

    out = args.out
    if out is None and default is not None:
        out = fresh_run_folder(default) if fresh and not args.overwrite else default
        if out != default:
            print(f"{default} holds an earlier run; this run goes to {out} (--out names the folder, --resume "
                  "continues a run, --overwrite replaces it)", file=sys.stderr)
    if out is not None:  # only 'train' can continue a run
        claim_run_folder(out, args.overwrite, resume_hint="--resume" if hasattr(args, "resume") else None)
    return out


def _imported_preprocessing_options(p, prefix: str) -> None:
    p.add_argument("--data", help=prefix + "the dataset the weights were trained on (classes, image size, and "
                                           "the default of 'cnnkit eval'), e.g. cifar10")
    p.add_argument("--classes", help=prefix + "class names NAME,NAME,... or a file with one per line")
    p.add_argument("--mean", type=_floats, help=prefix + "the normalisation mean the weights were trained with")
    p.add_argument("--std", type=_floats, help=prefix + "the normalisation std the weights were trained with")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def positive_int(text: str) -> int:
    """An argparse type for counts and sizes: 0 or less would divide by zero or do nothing, silently."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    port = positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port


def _subset_options(p) -> None:
    """--train-subset/--test-subset: a quick run of any command that trains or probes."""
    p.add_argument("--train-subset", type=positive_int, metavar="N",
                   help="train on N images, balanced over the classes (default: all; e.g. 2000 for a quick run)")
    p.add_argument("--test-subset", type=positive_int, metavar="N",
                   help="evaluate on N test images drawn at random (default: all)")


def _apply_subsets(bundle, args, seed: int = 0):
    """``bundle`` with the training and test splits cut to --train-subset and --test-subset (when given): the
    training images balanced over the classes, the test images a fixed random draw (some copies are sorted by
    class, so never "the first N")."""
    import dataclasses

    from .data import random_subset

    if getattr(args, "train_subset", None):
        bundle = dataclasses.replace(bundle, train=_balanced_subset(bundle.train, args.train_subset, seed))
    if getattr(args, "test_subset", None):
        bundle = dataclasses.replace(bundle, test=random_subset(bundle.test, args.test_subset, seed))
    return bundle


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
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
    ("train", "--batch-size"): "images per batch (per process under --nproc)",
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
    ("segment", "--out"): "run folder (default runs/unet-DATA)",
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


def _complete_help(parser: argparse.ArgumentParser, command: str = "") -> None:
    """Every (sub)parser gets the defaults-showing formatter; an option declared without help gets the shared
    wording above; train's options, whose defaults come from the recipe or TrainConfig, say which."""
    import dataclasses

    from .train import TrainConfig

    parser.formatter_class = _HelpFormatter
    config_defaults = {}
    if command == "train":
        fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
        config_defaults = {k: v for k, v in fields.items()
                           if k in TRAIN_FLAGS and v is not None and v is not False and v != ()}
    task_defaults = _task_training_defaults(command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                _complete_help(child, name)
            continue
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        names = action.option_strings or [action.dest]
        if not action.help:
            action.help = next((OPTION_HELP[key] for name in names for key in ((command, name), name)
                                if key in OPTION_HELP), None)
        if action.dest in config_defaults and action.default is None and "default" not in (action.help or ""):
            action.help = f"{action.help or ''} (default: the recipe's, else {config_defaults[action.dest]})".strip()
        if action.dest in task_defaults and action.default is None and "default" not in (action.help or ""):
            action.help = f"{action.help or ''} (default: {task_defaults[action.dest]:g})".strip()


def _style_options(p, iterations: int, size: int) -> None:
    p.add_argument("--descriptor", default="efficientnet_lite0", choices=["efficientnet_lite0", "vgg19", "vgg16"])
    p.add_argument("--weights", type=Path, help="descriptor checkpoint (torchvision layout for VGG)")
    p.add_argument("--style-layers", type=_names, help="comma-separated layer names (default: the descriptor's)")
    p.add_argument("--layer-weights", type=_floats, help="w_l, one per style layer")
    p.add_argument("--style-weight", type=float, help="beta (default: the descriptor's)")
    p.add_argument("--tv-weight", type=float, default=1.0, help="total-variation regularisation")
    p.add_argument("--smoothing", choices=["none", "softmax", "tanh"], help="activation smoothing (default: "
                   "tanh for EfficientNet, none for VGG)")
    p.add_argument("--smoothing-scale", type=float, default=0.3, help="tanh scale / softmax temperature as a "
                   "fraction of each layer's activation std (0.3)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    p.add_argument("--lr", type=float, help="L-BFGS step (1) or Adam pixel step (0.02)")
    p.add_argument("--size", type=positive_int, default=size, help=f"longer side of the output in pixels ({size})")
    p.add_argument("--scales", type=_floats, default=[0.5, 1.0], help="coarse-to-fine fractions of --size")
    p.add_argument("--iterations", type=positive_int, default=iterations, help="loss evaluations over all scales")
    p.add_argument("--snapshots", type=Path, metavar="DIR", help="write intermediate images here")
    p.add_argument("--snapshot-every", type=positive_int, default=25)
    p.add_argument("--loss-csv", type=Path, help="write the loss per iteration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")


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
        if row["copy"]:  # which copy: figures on a lossy one are not comparable to published ones
            print(f"{'':<22} present: {row['copy']}")
    print(f"{'imagefolder:PATH':<15} {'':<6} a folder with one sub-folder per class (or train/ and val/ sub-folders)")
    print("searched: " + ", ".join(str(r) for r in data_roots()) + ", then the download mirrors")


def cmd_summary(args) -> None:
    from .analysis import summary

    print(summary(args.model, args.input, batch_size=args.batch_size))


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
    """A recipe file's mapping of options (its model, data, model_args and description fields checked; the
    training options are checked by TrainConfig). Any content ends in a dict or a CnnkitError."""
    from .schema import Field, check_mapping

    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise CnnkitError(f"Recipe {path} does not exist; see recipes/ for examples.") from None
    except OSError as exc:
        raise CnnkitError(f"Recipe {path} cannot be read: {exc.strerror or exc}.") from None
    recipe = parse_recipe(text, str(path))
    fields = {"model": Field(str, required=False), "data": Field(str, required=False),
              "model_args": Field(dict, required=False), "description": Field(str, required=False)}
    check_mapping(recipe, fields, f"Recipe {path}", "see recipes/ for examples")
    return recipe


def parse_recipe(text: bytes | str, name: str = "recipe") -> dict:
    """YAML text to a mapping, with YAML 1.2 numbers (``lr: 1e-3`` is a number, as a reader expects, not the
    string PyYAML's YAML 1.1 rules make of it)."""
    import re

    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    RecipeLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?[0-9][0-9_]*\.[0-9_]*$"
                   r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"), list("-+0123456789."))
    try:
        recipe = yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        raise CnnkitError(f"Recipe {name} is not valid YAML: {str(exc)[:300]}") from None
    except (RecursionError, UnicodeError, ValueError) as exc:  # nesting too deep, bytes that are no text
        raise CnnkitError(f"Recipe {name} is not a readable YAML text ({type(exc).__name__}).") from None
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise CnnkitError(f"Recipe {name} must be a mapping of options, not {type(recipe).__name__}.")
    return recipe


TRAIN_FLAGS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "milestones", "weight_decay", "momentum",
               "nesterov", "label_smoothing", "mixup", "cutmix", "ema", "grad_clip", "precision", "channels_last",
               "compile", "val_split", "early_stopping", "seed", "device", "num_threads", "num_workers", "accumulate",
               "warmup_epochs", "sync_batchnorm", "scale_lr", "reference_batch")


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
    if not args.resume and not args.recipe:
        recipe = _default_recipe_options(model_name, data_name, args)
    model_args = {**recipe.pop("model_args", {}), **_parse_model_args(args.model_arg)}
    recipe.pop("description", None)
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k, None) is not None}
    options = {**recipe, **overrides}
    if args.no_progress:  # a piped log gets plain periodic lines instead of a bar (cnnkit.progress)
        options["progress"] = False
    config = TrainConfig.from_dict(options)
    entry = get_model_entry(model_name)  # an unknown name fails before any data is read
    default_out = Path("runs") / f"{model_name}-{data_name.replace(':', '_').replace('/', '_')}"
    out = args.resume or args.out or default_out
    resume = bool(args.resume)
    # A worker group that torchrun restarted after a failure (--max-restarts) re-runs the original command
    # line: it continues from the checkpoint the failed attempt left, if that attempt finished an epoch.
    if (auto_resume or distributed.restart_count() > 0) and (Path(out) / STATE_FILE).is_file():
        resume = True
    if args.overwrite and args.resume:
        raise CnnkitError("--resume continues a run and --overwrite replaces it; give one of them.")
    if not resume and int(os.environ.get("RANK", "0")) == 0:  # the other ranks wait for the Trainer's answer
        # Under torchrun every worker (and every restart) must name the same folder: no fresh default there.
        out = claim_out(args, default_out, fresh=not (auto_resume or distributed.launched_by_torchrun()))
    # Image folders are decoded at the model's own input size and channel count.
    bundle = load_dataset(data_name, image_size=config.input_size or entry.input_size[-1],
                          channels=model_args.get("in_channels", entry.input_size[0]))
    bundle = _apply_subsets(bundle, args, config.seed)
    torch.manual_seed(config.seed)  # the initial weights follow the seed too
    model = create_model(model_name, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0], **model_args)
    args.run_dir = Path(out)  # named by the interrupt message
    Trainer(model, bundle, config, out=out).fit(resume=resume)


# The training defaults of the commands that train a task (shown by their --help).
DENOISE_TRAINING = {"epochs": 3, "batch_size": 128, "lr": 3e-3}
SEGMENT_TRAINING = {"epochs": 12, "batch_size": 32, "lr": 3e-3, "augment": {"flip": True}}
TASK_EPOCHS = 5  # gan and translate; their optimiser settings are the papers' (GAN_TRAINING, PIX2PIX_TRAINING)


def _task_training_defaults(command: str) -> dict:
    if command == "denoise":
        return DENOISE_TRAINING
    if command == "segment":
        return SEGMENT_TRAINING
    if command == "compress":
        from .compress_cli import COMPRESS_TRAINING

        return COMPRESS_TRAINING
    if command in ("gan", "translate"):
        from .gan import GAN_TRAINING
        from .translate import PIX2PIX_TRAINING

        return {**(GAN_TRAINING if command == "gan" else PIX2PIX_TRAINING), "epochs": TASK_EPOCHS}
    return {}


# The command that applies each non-classification task's checkpoint.
TASK_COMMANDS = {"denoising": "'cnnkit denoise RUN_DIR IMAGE'", "segmentation": "'cnnkit segment RUN_DIR IMAGE'",
                 "compression": "'cnnkit compress RUN_DIR IMAGE'", "pix2pix": "'cnnkit translate RUN_DIR IMAGE'",
                 "gan": "'cnnkit gan RUN_DIR -o samples.png'"}


def _default_recipe_options(model_name: str, data_name: str, args) -> dict:
    """The model's default recipe for this data (see cnnkit.train.recipes), said out loud with the flags that
    override its fields; the generic TrainConfig defaults where the table has no row."""
    from .train.recipes import default_recipe

    recipe = default_recipe(model_name, data_name)
    flags = [f"--{k.replace('_', '-')}" for k in TRAIN_FLAGS if getattr(args, k, None) is not None]
    overridden = f"; overridden by {', '.join(flags)}" if flags else ""
    if recipe is not None:
        message = recipe.describe() + overridden + " (--recipe FILE.yaml replaces it)"
    else:
        message = (f"no default recipe for {model_name} on {data_name}: the generic defaults (sgd lr 0.1, one-cycle, "
                   f"10 epochs){overridden}; 'cnnkit lr-find {model_name} --data {data_name}' suggests a learning "
                   "rate")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process says it
        print(message, flush=True)
    return dict(recipe.options) if recipe is not None else {}


def cmd_lr_find(args) -> None:
    import torch

    from .data import load_dataset
    from .models.registry import create_model, get_model_entry
    from .train import TrainConfig
    from .train.lr_find import lr_find
    from .train.recipes import default_recipe

    entry = get_model_entry(args.model)
    recipe = default_recipe(args.model, args.data)
    options = {k: v for k, v in (recipe.options if recipe else {}).items() if k != "epochs"}
    options.update({k: getattr(args, k) for k in ("optimizer", "batch_size", "num_threads")
                    if getattr(args, k) is not None})
    options.update(seed=args.seed, device=args.device, progress=not args.no_progress)
    config = TrainConfig.from_dict(options)
    print(f"range test with {config.optimizer}, batch {config.batch_size}"
          + (f" ({recipe.source} default recipe's settings)" if recipe else "")
          + f": learning rate {args.start_lr:g} -> {args.end_lr:g} over at most {args.steps} batches", flush=True)
    bundle = load_dataset(args.data, image_size=config.input_size or entry.input_size[-1],
                          channels=entry.input_size[0])
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0])
    result = lr_find(model, bundle, config, args.start_lr, args.end_lr, args.steps)
    output = args.output or Path("runs") / f"lr-find-{args.model}-{args.data.replace(':', '_').replace('/', '_')}.png"
    result.plot(output, title=f"{args.model} on {args.data}: {config.optimizer}, batch {config.batch_size}")
    print(result.describe())
    print(f"plot: {output}; train with it: cnnkit train {args.model} --data {args.data} --lr {result.suggestion:.2g}")


def cmd_eval(args) -> None:
    from .data import load_dataset
    from .train import TrainConfig, Trainer
    from .train.checkpoint import load_model_checkpoint

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
    config = TrainConfig(device=args.device, eval_batch_size=args.batch_size, progress=False,
                         input_size=(meta["preprocess"].get("input_size") or [None])[0])
    trainer = Trainer(model, bundle, config)
    trainer.preprocess.mean, trainer.preprocess.std = meta["preprocess"]["mean"], meta["preprocess"]["std"]
    result = trainer.evaluate(bundle.test, with_confusion=True)
    print(f"{meta['model']['name']} on {bundle.name} test ({result['images']:,} images): top-1 accuracy "
          f"{result['acc']:.2f}% (error {100 - result['acc']:.2f}%), top-5 {result['top5']:.2f}%, "
          f"loss {result['loss']:.4f}")
    for name, acc in zip(bundle.classes, result["per_class_acc"].tolist()):
        print(f"  {name:<14} {acc:6.2f}%")


def cmd_average(args) -> None:
    from .train.checkpoint import average_checkpoints

    if args.out.resolve() in {run.resolve() for run in args.runs}:
        raise CnnkitError(f"--out {args.out} is one of the runs being averaged; give a new folder")
    claim_out(args, None)
    meta = average_checkpoints(args.runs, args.out, args.weights,
                               warn=lambda line: print(f"warning: {line}", file=sys.stderr))
    print(f"averaged {len(args.runs)} runs into {meta.parent}; evaluate it with: cnnkit eval {meta.parent}")


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
    from .importer import build_imported_model, imported_meta, read_class_names

    hint = (f"; or make a run folder once, with the preprocessing recorded: 'cnnkit import {args.pretrained} "
            f"--model {args.model} --data ... --mean ... --std ... --out RUN_DIR', then 'cnnkit predict RUN_DIR ...'")
    meta = imported_meta(args.model, mean=args.mean, std=args.std, dataset=args.data, hint=hint,
                         classes=read_class_names(args.classes) if args.classes else None)
    model, _ = build_imported_model(args.pretrained, args.model, num_classes=len(meta["classes"]),
                                    in_channels=meta["image_shape"][0])
    return model, meta


def cmd_import(args) -> None:
    from .importer import import_checkpoint, read_class_names

    claim_out(args, None)
    meta_path = import_checkpoint(args.weights, args.model, args.out, mean=args.mean, std=args.std,
                                  classes=read_class_names(args.classes) if args.classes else None,
                                  dataset=args.data, layout=args.layout, model_args=_parse_model_args(args.model_arg))
    meta = json.loads(meta_path.read_text())
    kwargs = meta["model"].get("kwargs") or {}
    built = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    print(f"imported {args.weights} ({meta['imported_from']['layout']} layout) as {meta['model']['name']}"
          f"{f' ({built})' if built else ''} into {meta_path.parent}")
    evaluate = f"cnnkit eval {meta_path.parent}" + ("" if meta.get("dataset") else " --data DATASET")
    print(f"next: {evaluate}; cnnkit predict {meta_path.parent} IMAGE; cnnkit viz ...; cnnkit serve")


def _style_config(args, **extra):
    import torch

    from .style import StyleConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    lr = args.lr if args.lr is not None else (1.0 if args.optimizer == "lbfgs" else 0.02)
    return StyleConfig(size=args.size, iterations=args.iterations, scales=tuple(args.scales), optimizer=args.optimizer,
                       lr=lr, style_layers=args.style_layers, layer_weights=args.layer_weights,
                       style_weight=args.style_weight, tv_weight=args.tv_weight, smoothing=args.smoothing,
                       smoothing_scale=args.smoothing_scale, seed=args.seed, **extra)


def _write_loss_csv(history: list[dict], path: Path | None) -> None:
    if path and history:
        import csv

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)


def _progress(args) -> bool:
    return not args.no_progress  # a bar on a terminal, plain periodic lines in a piped log (cnnkit.progress)


def cmd_stylize(args) -> None:
    import time

    from .style import build_descriptor, load_image, save_image, stylize

    config = _style_config(args, content_layers=args.content_layers, content_weight=args.content_weight,
                           init=args.init, preserve_color=args.preserve_color)
    content = load_image(args.content, max(args.size * 2, 512))  # read once, rescaled per pass
    styles = [load_image(path, max(args.size * 2, 512)) for path in args.styles]
    descriptor = build_descriptor(args.descriptor, args.weights)
    start = time.perf_counter()
    image, history = stylize(content, styles, config, descriptor, args.style_weights, _progress(args),
                             args.snapshots, args.snapshot_every if args.snapshots else 0)
    save_image(image, args.output)
    _write_loss_csv(history, args.loss_csv)
    print(f"{args.output}: {image.shape[2]}x{image.shape[1]}, {len(history)} iterations in "
          f"{time.perf_counter() - start:.1f}s; loss {history[0]['loss']:.4g} -> {history[-1]['loss']:.4g} "
          f"(content {history[-1]['content']:.4g}, style {history[-1]['style']:.4g})")


def cmd_texture(args) -> None:
    import time

    import torch

    from .style import (build_descriptor, load_image, load_texture_generator, save_image, save_texture_generator,
                        synthesize_texture, train_texture_generator)

    height, width = args.height or args.size, args.width or args.size
    if args.generator:
        generator = load_texture_generator(args.generator)
        start = time.perf_counter()
        samples = generator.sample(height, width, args.count, seed=args.seed)
        print(f"{args.count} sample(s) of {width}x{height} in {1000 * (time.perf_counter() - start):.0f} ms")
        save_image(torch.cat(list(samples), dim=2), args.output)
        return
    if args.style is None:
        raise CnnkitError("Give the texture image (cnnkit texture STYLE -o out.png) or a trained generator "
                          "(--generator FILE.safetensors).")
    config = _style_config(args)
    style = load_image(args.style, max(args.size, args.train_size) * 2)
    descriptor = build_descriptor(args.descriptor, args.weights)
    start = time.perf_counter()
    if args.feedforward:
        generator, history = train_texture_generator(style, descriptor, args.train_iterations, args.train_size,
                                                     config=config, seed=args.seed, progress=_progress(args))
        if args.save_generator:
            save_texture_generator(generator, args.save_generator)
        image = torch.cat(list(generator.sample(height, width, args.count, seed=args.seed)), dim=2)
    else:
        image, history = synthesize_texture(style, height, width, config, descriptor, _progress(args),
                                            args.snapshots, args.snapshot_every if args.snapshots else 0)
    save_image(image, args.output)
    _write_loss_csv(history, args.loss_csv)
    print(f"{args.output}: {len(history)} iterations in {time.perf_counter() - start:.1f}s; "
          f"style loss {history[0]['loss']:.4g} -> {history[-1]['loss']:.4g}")


def _train_task(args, model, bundle, task, defaults: dict):
    from .train import TrainConfig, Trainer

    options = {**defaults, **{k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "seed")
                              if getattr(args, k) is not None}}
    options = {"optimizer": "adam", "weight_decay": 0.0, **options}
    config = TrainConfig(device=args.device, num_threads=args.threads, progress=_progress(args), **options)
    trainer = Trainer(model, bundle, config, out=args.out, task=task)
    return trainer, trainer.fit()


def _output_path(args, suffix: str) -> Path:
    return args.output or args.image.with_name(f"{args.image.stem}-{suffix}.png")


def _need_checkpoint_and_image(args, command: str) -> None:
    if args.checkpoint is None or args.image is None:
        raise CnnkitError(f"Give a run folder and an image (cnnkit {command} RUN_DIR IMAGE -o out.png), or train one "
                          f"with 'cnnkit {command} --train --data ...'.")


def cmd_denoise(args) -> None:
    import torch

    from .data import load_dataset
    from .data.formats import read_image
    from .denoise import DenoisingTask, add_noise, denoise_image, denoising_report
    from .models.registry import create_model
    from .style import save_image

    if args.train:
        claim_out(args, None)  # an explicit --out is checked before the data is read
        bundle = _apply_subsets(load_dataset(args.data or "mnist"), args, args.seed or 0)
        torch.manual_seed(args.seed or 0)
        model = create_model("conv_autoencoder", in_channels=bundle.image_shape[0],
                             bottleneck_channels=args.bottleneck)
        args.out = claim_out(args, Path("runs") / f"denoise-{bundle.name}-{args.noise}-b{args.bottleneck}")
        _train_task(args, model, bundle, DenoisingTask(args.noise, args.level),
                    DENOISE_TRAINING)
        report = denoising_report(model, bundle.test.images, args.noise, args.level)
        (args.out / "denoising.json").write_text(json.dumps(report, indent=2))
        print(f"test set, {args.noise} noise {args.level}: PSNR {report['noisy_psnr']:.2f} -> "
              f"{report['denoised_psnr']:.2f} dB ({report['psnr_gain_db']:+.2f} dB), SSIM {report['noisy_ssim']:.3f} "
              f"-> {report['denoised_ssim']:.3f}; {args.out / 'denoising.json'}")
        return
    _need_checkpoint_and_image(args, "denoise")
    model, meta = _load_task_checkpoint(args.checkpoint, "denoising", "a denoising autoencoder", "denoise")
    image = read_image(args.image, meta["image_shape"][0])
    if args.add_noise:
        kind, _, level = args.add_noise.partition(":")
        try:
            noisy = add_noise(image.float()[None] / 255, kind, float(level or 0.3),
                              torch.Generator().manual_seed(args.seed or 0))[0]
        except ValueError:
            raise CnnkitError(f"--add-noise {args.add_noise!r}: expected KIND:LEVEL, e.g. gaussian:0.3") from None
        save_image(noisy.expand(3, -1, -1), _output_path(args, "noisy").with_name(f"{args.image.stem}-noisy.png"))
        image = (noisy * 255).round().to(torch.uint8)
    out = save_image(denoise_image(model, image).expand(3, -1, -1), _output_path(args, "denoised"))
    print(f"{out}")


def _load_task_checkpoint(path, task: str, what: str, command: str):
    """(model, meta) of a run trained for ``task``; another task's checkpoint is refused with the fix."""
    from .train.checkpoint import load_model_checkpoint

    model, meta = load_model_checkpoint(path)
    found = meta.get("task", {}).get("name", "classification")
    if found != task:
        raise CnnkitError(f"{path} holds a {found} model, not {what}; train one with 'cnnkit {command} --train'.")
    return model, meta


def cmd_segment(args) -> None:
    import torch

    from .data.formats import read_image
    from .models.registry import create_model
    from .segment import SegmentationTask, load_segmentation_data, predict_mask, write_overlay
    from .style import resize_longer_side

    if args.train:
        claim_out(args, None)  # an explicit --out is checked before the data is read
        bundle = load_segmentation_data(args.data or "shapes", args.image_size, args.num_train, args.num_test)
        torch.manual_seed(args.seed or 0)
        model = create_model("unet", num_classes=len(bundle.classes), in_channels=bundle.image_shape[0],
                             padding=True, base_channels=args.base_channels, batch_norm=True)
        args.out = claim_out(args, Path("runs") / f"unet-{bundle.name.split(':')[0].split('(')[0]}")
        trainer, summary = _train_task(args, model, bundle, SegmentationTask(len(bundle.classes), args.dice_weight),
                                       SEGMENT_TRAINING)
        for index in range(min(8, len(bundle.test))):
            image = bundle.test.images[index]
            mask = predict_mask(model.cpu(), image, trainer.preprocess.mean, trainer.preprocess.std)
            write_overlay(image, mask, args.out / "overlays" / f"test{index:02d}.png", class_names=bundle.classes)
        print(f"test mIoU {summary['test_miou']:.4f}, Dice {summary['test_dice']:.4f}; overlays in "
              f"{args.out / 'overlays'}")
        return
    _need_checkpoint_and_image(args, "segment")
    model, meta = _load_task_checkpoint(args.checkpoint, "segmentation", "a segmenter", "segment")
    image = read_image(args.image, meta["image_shape"][0])
    if args.size:
        image = (resize_longer_side(image.float() / 255, args.size) * 255).round().to(torch.uint8)
    mask = predict_mask(model, image, meta["preprocess"]["mean"], meta["preprocess"]["std"])
    # The overlay keeps the image's size (a data product beside --mask-out); its legend goes to the terminal.
    out = write_overlay(image, mask, _output_path(args, "overlay"))
    from .segment import PALETTE

    print("colours: " + ", ".join(f"{name} rgb{tuple(int(v) for v in PALETTE[i % len(PALETTE)].tolist())}"
                                  if i else f"{name} untinted" for i, name in enumerate(meta["classes"])))
    if args.mask_out:
        from PIL import Image

        args.mask_out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.to(torch.uint8).numpy()).save(args.mask_out)
    counts = torch.bincount(mask.flatten(), minlength=len(meta["classes"]))
    shares = ", ".join(f"{c} {100 * n / mask.numel():.1f}%" for c, n in zip(meta["classes"], counts.tolist()) if n)
    print(f"{out}: {shares}")


def cmd_translate(args) -> None:
    import torch

    from .style import save_image
    from .translate import (PIX2PIX_TRAINING, Pix2PixTask, create_translator, load_translation_data,
                            read_translation_input, translate_batch)

    if args.train:
        claim_out(args, None)  # an explicit --out is checked before the data is read
        bundle = _apply_subsets(load_translation_data(args.kind, args.data), args, args.seed or 0)
        torch.manual_seed(args.seed or 0)
        model = create_translator(args.kind, bundle.image_shape[0], args.base_channels)
        variant = "l1" if args.l1_only else "p2p"
        args.out = claim_out(args, Path("runs") / f"{variant}-{args.kind}-{bundle.name}")
        task = Pix2PixTask(args.kind, args.l1_weight, 0.0 if args.l1_only else 1.0)
        _, summary = _train_task(args, model, bundle, task, {**PIX2PIX_TRAINING, "epochs": TASK_EPOCHS})
        print(f"test L1 {summary['test_l1']:.4f}, PSNR {summary['test_psnr']:.2f} dB, SSIM {summary['test_ssim']:.3f}; "
              f"{args.out}")
        return
    _need_checkpoint_and_image(args, "translate")
    model, meta = _load_task_checkpoint(args.checkpoint, "pix2pix", "a pix2pix translator", "translate")
    inputs, _ = read_translation_input(args.image, meta, args.make_input, args.seed or 0)
    if args.make_input:
        save_image(inputs[0].expand(3, -1, -1), _output_path(args, "input").with_name(f"{args.image.stem}-input.png"))
    output = translate_batch(model, inputs, args.seed or 0)[0]
    print(save_image(output.expand(3, -1, -1), _output_path(args, "translated")))


def cmd_gan(args) -> None:
    import torch

    from .gan import GAN_TRAINING, GANTask, sample_grid

    if args.train:
        from .data import load_dataset
        from .models.registry import create_model

        claim_out(args, None)  # an explicit --out is checked before the data is read
        bundle = _apply_subsets(load_dataset(args.data), args, args.seed or 0)
        torch.manual_seed(args.seed or 0)
        channels, size, _ = bundle.image_shape
        model = create_model("dcgan", in_channels=channels, image_size=size, generator_width=args.width,
                             discriminator_width=args.width)
        args.out = claim_out(args, Path("runs") / f"dcgan-{bundle.name}")
        trainer, _ = _train_task(args, model, bundle, GANTask(fid_samples=args.fid_samples),
                                 {**GAN_TRAINING, "epochs": TASK_EPOCHS})
        scores = ", ".join(f"{m['val_fid']:.2f}" for m in trainer.history if "val_fid" in m)
        print((f"Fréchet feature distance by epoch: {scores}; " if scores else "")
              + f"samples in {args.out / 'samples'}")
        return
    if args.checkpoint is None:
        raise CnnkitError("Give a run folder (cnnkit gan RUN_DIR -o samples.png), or train one with "
                          "'cnnkit gan --train --data mnist'.")
    model, _ = _load_task_checkpoint(args.checkpoint, "gan", "a GAN", "gan")
    print(sample_grid(model, args.output, args.count, args.seed or 0))


def cmd_serve(args) -> None:
    try:
        import uvicorn

        from .serve import create_app
    except ImportError as exc:
        raise CnnkitError(f"'cnnkit serve' needs the serve extra ({exc.name} is missing); run: "
                          "pip install 'cnnkit[serve]'") from None
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach this address can use the playground, "
              "including starting training runs; it has no login.", file=sys.stderr)
    try:
        args.checkpoints.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CnnkitError(f"--checkpoints {args.checkpoints}: cannot create that folder ({exc.strerror or exc}); "
                          "give a folder you can write to.") from None
    print(f"cnnkit playground on http://{args.host}:{args.port}  (checkpoints: {args.checkpoints.resolve()}; "
          "Ctrl-C stops it)", flush=True)
    app = create_app(args.checkpoints, host=args.host, port=args.port, allowed_hosts=tuple(args.allow_host))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")

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
    import torch

    from .data import load_dataset
    from .train import TrainConfig
    from .transfer import finetune, format_probe_table

    default_out = None  # the linear probe keeps no model; a fine-tuned one is kept, as train keeps its runs
    if args.strategy != "linear":
        source = Path(args.source).name.replace(":", "-")
        data = args.data.replace(":", "_").replace("/", "_")
        default_out = Path("runs") / f"finetune-{source}-{data}-{args.strategy}"
    args.out = args.run_dir = claim_out(args, default_out)  # before the backbone and the data are loaded
    torch.manual_seed(args.seed)
    model = _load_source(args)
    pretrained = getattr(model, "pretrained_config", None) or {}
    size = args.input_size or pretrained.get("crop") or model.default_config["input_size"][-1]
    bundle = load_dataset(args.data, image_size=size, channels=model.cnnkit_config["in_channels"])
    bundle = _apply_subsets(bundle, args, args.seed)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, input_size=args.input_size,
                         seed=args.seed, device=args.device, num_threads=args.num_threads,
                         num_workers=args.num_workers, channels_last=True,
                         augment={"flip": True} if bundle.image_shape[0] == 3 else {},
                         progress=not args.no_progress)
    result = finetune(model, bundle, args.strategy, config, top_stages=args.top_stages, lr_factor=args.lr_factor,
                      head_epochs=args.head_epochs, stage=args.stage, lr_decay=args.lr_decay,
                      new_head=not args.keep_head, channel_mode=args.channels, out=args.out)
    if args.strategy == "linear":
        print(format_probe_table(result["probes"]))
    print(f"{args.strategy}: test accuracy {result['test_acc']:.2f}% on {bundle.describe()}"
          + (f"; model in {args.out}" if args.out else ""))


_DISK_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv:  # a bare `cnnkit` is asking what there is
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            args.func(args)
    except CnnkitError as exc:
        print(f"cnnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        # A full or read-only disk met by a writer other than the run folder's own (which say so themselves).
        print(f"cnnkit {args.command}: error: could not write {exc.filename or 'a file'}: {exc.strerror}; free some "
              "disk space or write somewhere else.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnkit {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    return 0


def _resume_hint(args) -> str:
    """What an interrupted command left behind, naming the real run folder."""
    from .train.checkpoint import STATE_FILE

    run_dir = getattr(args, "run_dir", None) or getattr(args, "out", None)
    if run_dir is None or not isinstance(run_dir, Path):
        return "."
    if not (run_dir / STATE_FILE).is_file():
        return f" before the first epoch of {run_dir} finished; nothing to resume."
    if args.command == "train":
        return f"; 'cnnkit train --resume {run_dir}' continues it from its last completed epoch."
    return f"; {run_dir} holds the model of the last completed epoch."


if __name__ == "__main__":
    sys.exit(main())
