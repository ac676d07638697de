"""``cnnkit finetune``: transfer a pretrained model or a run to a dataset (:mod:`cnnkit.transfer`)."""

from __future__ import annotations

from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from .common import apply_subsets, claim_out
from .options import add_command, overwrite_option, subset_options
from .train_flags import training_config

EXAMPLES = {
    "finetune": """examples:
  cnnkit finetune --from efficientnet_lite0:imagenet --data cifar10 --strategy linear --train-subset 1000
  cnnkit finetune --from efficientnet_lite0:imagenet --data cifar10 --strategy two-phase --top-stages 2 \\
      --train-subset 1000 --epochs 5 --lr 0.05 --out runs/lite0-cifar10
  cnnkit finetune --from runs/lenet5_relu-mnist --data fashion-mnist --strategy full --train-subset 1000
  cnnkit finetune --from resnet50-0676ba61.pth --model resnet50 --data imagefolder:photos --strategy head""",
}


def add_parser(sub) -> None:
    p = add_command(sub, "finetune",
                    "transfer a pretrained model or checkpoint to a dataset (cnnkit.transfer)", EXAMPLES)
    p.add_argument("--from", dest="source", required=True, metavar="PRETRAINED|CHECKPOINT",
                   help="MODEL:TAG (efficientnet_lite0:imagenet), a cnnkit run folder, or a weights file with --model")
    p.add_argument("--model", help="model to build for a weights file or a bare tag")
    p.add_argument("--data", required=True, help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--strategy", choices=["linear", "head", "two-phase", "full"], default="two-phase")
    p.add_argument("--stage", action="append", help="--strategy linear: a stage to probe (repeatable; default all)")
    p.add_argument("--top-stages", type=int, default=2, help="two-phase: stages unfrozen in phase 2 (default 2)")
    subset_options(p)
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
    p.add_argument("-o", "--out", type=Path, help="run folder for the fine-tuned checkpoint (default "
                   "runs/finetune-SOURCE-DATA-STRATEGY; the linear probe saves no model)")
    overwrite_option(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_finetune)


def _load_source(args):
    """The model named by ``finetune --from``: MODEL:TAG, a cnnkit run folder, or a weights file (--model)."""
    from ..models.registry import create_model
    from ..train.checkpoint import load_model_checkpoint

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


def cmd_finetune(args) -> None:
    import torch

    from ..card import architecture_card, build_record, card_of
    from ..data import load_dataset
    from ..transfer import finetune, format_probe_table

    default_out = None  # the linear probe keeps no model; a fine-tuned one is kept, as train keeps its runs
    if args.strategy != "linear":
        source = Path(args.source).name.replace(":", "-")
        data = args.data.replace(":", "_").replace("/", "_")
        default_out = Path("runs") / f"finetune-{source}-{data}-{args.strategy}"
    args.out = args.run_dir = claim_out(args, default_out)  # before the backbone and the data are loaded
    torch.manual_seed(args.seed)
    model = _load_source(args)
    card = card_of(model)  # pretrained weights read their own crop; other models their paper's input size
    size = args.input_size or (card if card.source.startswith("pretrained:") else architecture_card(model)).crop
    bundle = load_dataset(args.data, image_size=size, channels=build_record(model)["in_channels"])
    bundle = apply_subsets(bundle, args, args.seed)
    config = training_config(args, channels_last=True, augment={"flip": True} if bundle.image_shape[0] == 3 else {})
    result = finetune(model, bundle, args.strategy, config, top_stages=args.top_stages, lr_factor=args.lr_factor,
                      head_epochs=args.head_epochs, stage=args.stage, lr_decay=args.lr_decay,
                      new_head=not args.keep_head, channel_mode=args.channels, out=args.out)
    if args.strategy == "linear":
        print(format_probe_table(result["probes"]))
    print(f"{args.strategy}: test accuracy {result['test_acc']:.2f}% on {bundle.describe()}"
          + (f"; model in {args.out}" if args.out else ""))
