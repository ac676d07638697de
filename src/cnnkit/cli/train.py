"""``cnnkit train`` (one process, or several through torchrun) and ``cnnkit lr-find``."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import CnnkitError
from .common import apply_subsets, claim_out, parse_model_args
from .options import add_command, overwrite_option, subset_options
from .train_flags import OPTIMIZERS, add_training_flags, flag_of, given_training_options, training_config

EXAMPLES = {
    "train": """examples:
  cnnkit train lenet5 --data mnist --recipe recipes/lenet5_mnist.yaml --out runs/lenet5
  cnnkit train resnet20 --data cifar10 --epochs 30 --lr 0.1 --schedule onecycle --batch-size 256
  cnnkit train lenet5 --data mnist --out runs/lenet5 --resume runs/lenet5   # continue an interrupted run
  cnnkit train lenet5 --data mnist --nproc 2 --out runs/ddp     # data-parallel: 2 processes through torchrun
  torchrun --nproc-per-node 4 --max-restarts 3 -m cnnkit train resnet20 --data cifar10 --scale-lr""",
    "lr-find": "examples:\n  cnnkit lr-find lenet5 --data mnist             # plot in runs/lr-find-lenet5-mnist.png\n"
               "  cnnkit lr-find resnet20 --data cifar10 --optimizer sgd --steps 300 -o lr.png",
}


def add_parser(sub) -> None:
    p = add_command(sub, "train", "train a model with the one training loop", EXAMPLES)
    p.add_argument("model", nargs="?", help="model name (see 'cnnkit models'); may come from --recipe")
    p.add_argument("--data", help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--recipe", type=Path, help="YAML recipe with model, data and training options")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra model argument, e.g. --model-arg output=linear (YAML-parsed value)")
    p.add_argument("-o", "--out", type=Path,
                   help="run folder (default runs/MODEL-DATA, or runs/MODEL-DATA-2, ... when that holds a run)")
    overwrite_option(p)
    subset_options(p)
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last epoch (any number of processes); 'auto': "
                        "continue --out if it holds a checkpoint, else start it")
    dp = p.add_argument_group("data-parallel training (PyTorch DDP through torchrun; see README 'Scaling out')")
    dp.add_argument("--nproc", type=int, metavar="N",
                    help="start N processes on this node through torchrun (one per GPU, or CPU processes with gloo)")
    dp.add_argument("--nnodes", help="with --nproc: number of nodes (or MIN:MAX for elastic c10d rendezvous)")
    dp.add_argument("--node-rank", type=int, help="with --nproc: this node's rank (static rendezvous)")
    dp.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="with --nproc: the rendezvous every node joins")
    dp.add_argument("--max-restarts", type=int, default=0,
                    help="with --nproc: restart the workers up to this many times after a failure; each restart "
                         "continues from the run folder's last checkpoint")
    add_training_flags(p.add_argument_group("training options (each a TrainConfig field; given, it overrides the "
                                            "recipe)"),
                       groups={name: dp for name in ("sync_batchnorm", "scale_lr", "reference_batch")})
    p.set_defaults(func=cmd_train)

    p = add_command(sub, "lr-find",
                    "learning-rate range test (Smith 2015; fastai's lr_find): loss vs lr plot, suggestion", EXAMPLES)
    p.add_argument("model", help="model name (see 'cnnkit models')")
    p.add_argument("--data", required=True, help="dataset: mnist, fashion-mnist, cifar10, cifar100 or imagefolder:PATH")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), help="default: the model's default recipe's")
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


def cmd_train(args) -> None:
    from ..train import distributed

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
    from ..train import distributed

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

    from ..data import load_dataset
    from ..models.registry import create_model, get_model_entry
    from ..train import Trainer, distributed
    from ..train.checkpoint import STATE_FILE
    from ..train.recipe import fixed_on_resume, load_recipe, resume_recipe

    recipe: dict = {}
    auto_resume = args.resume is not None and str(args.resume) == "auto"
    if auto_resume:
        args.resume = None
    if args.resume:
        recipe = resume_recipe(args.resume)
        fixed = fixed_on_resume(given_training_options(args))  # only the epoch budget and runtime settings
        if fixed:
            raise CnnkitError(f"{', '.join(map(flag_of, fixed))} cannot change when resuming; the run's own "
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
    model_args = {**recipe.pop("model_args", {}), **parse_model_args(args.model_arg)}
    recipe.pop("description", None)
    config = training_config(args, recipe)
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
    bundle = apply_subsets(bundle, args, config.seed)
    torch.manual_seed(config.seed)  # the initial weights follow the seed too
    model = create_model(model_name, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0], **model_args)
    args.run_dir = Path(out)  # named by the interrupt message
    Trainer(model, bundle, config, out=out).fit(resume=resume)




def _default_recipe_options(model_name: str, data_name: str, args) -> dict:
    """The model's default recipe for this data (see cnnkit.train.recipes), said out loud with the flags that
    override its fields; the generic TrainConfig defaults where the table has no row."""
    from ..train.recipes import default_recipe

    recipe = default_recipe(model_name, data_name)
    flags = [flag_of(name) for name in given_training_options(args) if name != "progress"]
    overridden = f"; overridden by {', '.join(flags)}" if flags else ""
    if recipe is not None:
        message = recipe.describe() + overridden + " (--recipe FILE.yaml replaces it)"
    else:
        message = (f"no default recipe for {model_name} on {data_name}: the generic defaults (sgd lr 0.1, one-cycle, "
                   f"10 epochs){overridden}; 'cnnkit lr-find {model_name} --data {data_name}' suggests a learning "
                   "rate")
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process says it
        print(message, flush=True)
    if recipe is None:
        return {}
    return {**recipe.options, "model_args": recipe.model_args} if recipe.model_args else dict(recipe.options)


def cmd_lr_find(args) -> None:
    import torch

    from ..data import load_dataset
    from ..models.registry import create_model, get_model_entry
    from ..train.lr_find import lr_find
    from ..train.recipes import default_recipe

    entry = get_model_entry(args.model)
    recipe = default_recipe(args.model, args.data)
    config = training_config(args, {k: v for k, v in (recipe.options if recipe else {}).items() if k != "epochs"})
    print(f"range test with {config.optimizer}, batch {config.batch_size}"
          + (f" ({recipe.source} default recipe's settings)" if recipe else "")
          + f": learning rate {args.start_lr:g} -> {args.end_lr:g} over at most {args.steps} batches", flush=True)
    bundle = load_dataset(args.data, image_size=config.input_size or entry.input_size[-1],
                          channels=entry.input_size[0])
    torch.manual_seed(args.seed)
    model = create_model(args.model, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0],
                         **(recipe.model_args if recipe else {}))
    result = lr_find(model, bundle, config, args.start_lr, args.end_lr, args.steps)
    output = args.output or Path("runs") / f"lr-find-{args.model}-{args.data.replace(':', '_').replace('/', '_')}.png"
    result.plot(output, title=f"{args.model} on {args.data}: {config.optimizer}, batch {config.batch_size}")
    print(result.describe())
    print(f"plot: {output}; train with it: cnnkit train {args.model} --data {args.data} --lr {result.suggestion:.2g}")
