"""``cnnkit viz SUBCOMMAND``: argument parsing over :mod:`cnnkit.viz.commands`.

MODEL arguments are a cnnkit run folder (its checkpoint says how images were preprocessed and names the
classes), or a zoo name, optionally with a pretrained tag: ``efficientnet_lite0:imagenet``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int

EXAMPLES = """examples:
  cnnkit viz filters runs/demo-lenet5 -o viz/
  cnnkit viz maps runs/demo-lenet5 digit.png --layer features.c1 features.c3
  cnnkit viz maximize efficientnet_lite0:imagenet --target logit --unit 417 --unit 948
  cnnkit viz gradcam efficientnet_lite0:imagenet photo.jpg --class 821
  cnnkit viz saliency runs/demo-lenet5 digit.png
  cnnkit viz occlusion efficientnet_lite0:imagenet photo.jpg --window 28 --stride 14
  cnnkit viz integrated-gradients runs/demo-lenet5 digit.png --steps 50
  cnnkit viz guided-backprop efficientnet_lite0:imagenet photo.jpg
  cnnkit viz deconvnet efficientnet_lite0:imagenet photo.jpg --layer blocks.3 --channel 5
  cnnkit viz dream efficientnet_lite0:imagenet photo.jpg --layer stage3 stage6 --size 384
  cnnkit viz embed runs/demo-lenet5 --data mnist
  cnnkit viz confusion runs/demo-lenet5 --data mnist
  cnnkit viz curves runs/demo-lenet5
  cnnkit viz gradients runs/plain20-sigmoid runs/resnet20 --epoch 1 --step 1
  cnnkit viz kernels docs/images/style_content.jpg -o viz/
  cnnkit viz landscape runs/resnet20-cifar10 --data cifar10 --examples 500 --resolution 11"""


def tool_examples(name: str) -> str:
    """The examples of one tool (each tool's --help shows its own; 'cnnkit viz --help' shows them all)."""
    lines = [line for line in EXAMPLES.splitlines()[1:] if line.split()[2] == name]
    return "\n".join(["example:" if len(lines) == 1 else "examples:", *lines])


def load_for_tools(spec: str):
    """(model, info) for a run folder or ``NAME[:TAG]``; info holds classes, mean, std, size, dataset."""
    from ..card import card_of
    from ..models.registry import create_model
    from ..runs import load_model_checkpoint

    if Path(spec).exists():
        model = load_model_checkpoint(spec)[0]
    else:
        name, _, tag = spec.partition(":")
        model = create_model(name, pretrained=tag or None)
    card = card_of(model)  # the run's or the pretrained weights'; a bare architecture's says nothing here
    if card.source == "architecture":
        return model.eval(), {"classes": None, "mean": None, "std": None, "size": None, "dataset": None}
    as_list = (lambda values: list(values) if values is not None else None)  # noqa: E731
    return model.eval(), {"classes": as_list(card.classes), "mean": as_list(card.mean), "std": as_list(card.std),
                          "size": card.input_size, "dataset": card.dataset}


def test_batches(info: dict, data: str | None, limit: int, batch_size: int = 250):
    """Preprocessed (images, labels) batches of a dataset's test split, converted as the model was trained."""
    from ..data import Preprocess, load_dataset, make_loader, random_subset

    name = data or info.get("dataset")
    if not name:
        raise CnnkitError("Name the dataset with --data (mnist, fashion-mnist, cifar10, ...).")
    bundle = load_dataset(name)
    if info["classes"] is not None and list(bundle.classes) != list(info["classes"]):
        raise CnnkitError(f"The model was trained on {len(info['classes'])} other classes than {name}'s "
                          f"{len(bundle.classes)}; use the dataset it was trained on ({info.get('dataset')}).")
    preprocess = Preprocess(info["mean"] or bundle.mean, info["std"] or bundle.std, info["size"])
    test = random_subset(bundle.test, limit)  # a fixed draw: the same images on every call
    for images, labels in make_loader(test, batch_size):
        yield preprocess(images), labels


VIZ_HELP = ("look inside a CNN: filters, feature maps, activation maximisation, DeepDream, saliency, Grad-CAM, "
            "occlusion, integrated gradients, guided backprop, deconvnet, t-SNE, confusion, curves, gradient norms "
            "through depth, loss landscape")


def add_parser(sub) -> None:
    viz = sub.add_parser("viz", help=VIZ_HELP, description="Each subcommand writes PNGs into --out (default viz/).",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    tools = viz.add_subparsers(dest="tool", metavar="TOOL")
    tools.required = True

    def tool(name, help_text, model=True):
        p = tools.add_parser(name, help=help_text, description=help_text, epilog=tool_examples(name),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        if model:
            p.add_argument("model", metavar="MODEL",
                           help="run folder, or NAME[:TAG] such as efficientnet_lite0:imagenet")
        p.add_argument("-o", "--out", type=Path, default=Path("viz"), help="output folder (default viz/)")
        if name in ("maximize", "dream", "embed", "landscape"):  # the slow ones
            p.add_argument("--no-progress", action="store_true",
                           help="no progress (default: a bar on a terminal, plain lines every 30 s in a log)")
        p.set_defaults(func=run, tool=name)
        return p

    p = tool("filters", "kernels of the first convolution (or --layer) as a grid")
    p.add_argument("--layer")
    p.add_argument("--before", help="another checkpoint (e.g. the untrained model) to show beside it")
    p = tool("maps", "feature maps of chosen layers for one input")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--layer", nargs="+", dest="layers", help="layer names (default: up to 8 convolutions)")
    p = tool("maximize", "activation maximisation with natural-image priors")
    p.add_argument("--layer", help="layer whose unit to maximise (not needed for --target logit)")
    p.add_argument("--unit", type=int, action="append", required=True, help="channel, neuron or class index")
    p.add_argument("--target", choices=["channel", "neuron", "logit"], default="channel")
    p.add_argument("--steps", type=positive_int, default=200)
    p.add_argument("--parameterization", choices=["fourier", "pixel"], default="fourier")
    p.add_argument("--seed", type=int, default=0)
    _dream_options(tool("dream", "DeepDream (Inceptionism): a photo changed to excite a layer, with jitter, octaves"))
    for name in ("saliency", "gradcam"):
        p = tool(name, "vanilla gradients and SmoothGrad" if name == "saliency" else "Grad-CAM overlay")
        p.add_argument("images", nargs="+", type=Path)
        p.add_argument("--class", type=int, dest="target", help="class index to explain (default: the prediction)")
        if name == "gradcam":
            p.add_argument("--layer", help="convolution to read (default: the last with spatial output)")
    for name, text in (("occlusion", "occlusion sensitivity: the class score's drop under a sliding grey patch"),
                       ("integrated-gradients", "integrated gradients from the mean-colour (all-zero) input"),
                       ("guided-backprop", "guided backpropagation and the deconvnet projection of the class score"),
                       ("deconvnet", "deconvnet: a unit's top activation projected back to pixels")):
        p = tool(name, text)
        p.add_argument("images", nargs="+", type=Path)
        p.add_argument("--class", type=int, dest="target", help="class index to explain (default: the prediction)")
    p = tools.choices["occlusion"]
    p.add_argument("--window", type=positive_int, help="patch side in pixels (default: an eighth of the image)")
    p.add_argument("--stride", type=positive_int, help="patch step in pixels (default: half the window)")
    tools.choices["integrated-gradients"].add_argument("--steps", type=positive_int, default=50,
                                                       help="points on the path (default 50)")
    p = tools.choices["deconvnet"]
    p.add_argument("--layer", help="layer whose unit to project (default: the class score)")
    p.add_argument("--channel", type=int, help="channel of --layer (default: its strongest on these images)")
    for name, text in (("embed", "t-SNE of penultimate features of the test set"),
                       ("confusion", "confusion matrix with class names"),
                       ("landscape", "loss landscape: 2-D filter-normalised plane (and 1-D line with --start)")):
        p = tool(name, text)
        p.add_argument("--data", help="dataset (default: the one the model was trained on)")
        p.add_argument("--examples", type=positive_int, default=2000 if name != "landscape" else 1000)
        if name == "landscape":
            p.add_argument("--start", help="checkpoint at the other end of the 1-D interpolation")
            p.add_argument("--resolution", type=int, default=21)
            p.add_argument("--span", type=float, default=1.0)
    p = tool("curves", "training curves of a run folder", model=False)
    p.add_argument("run_dir", type=Path)
    p = tool("gradients", "per-layer gradient norms against depth, for runs trained with --record-gradients N",
             model=False)
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR",
                   help="run folders trained with --record-gradients N, drawn on one figure")
    p.add_argument("--epoch", type=positive_int, action="append", default=[], dest="epochs", metavar="EPOCH",
                   help="an epoch's mean to draw (repeatable; default: the first step and the last epoch)")
    p.add_argument("--step", type=positive_int, action="append", default=[], dest="steps", metavar="STEP",
                   help="a recorded optimiser step to draw (repeatable; 1 = the initial weights)")
    p.add_argument("--relative", action="store_true", help="gradient norm over the layer's weight norm")
    p = tool("kernels", "a photo filtered by hand-designed kernels: Sobel/Prewitt edges, Gaussian blur, Gabor, "
             "sharpen, the notes' diagonal detectors (no model)", model=False)
    p.add_argument("images", nargs="+", type=Path)


def _dream_options(p) -> None:
    """``cnnkit viz dream``'s options; the defaults are DreamSettings' (the authors' notebook)."""
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--layer", nargs="+", dest="layers",
                   help="stage names (e.g. stage3 stage6; see the error for a bad name) or module names; one dream "
                        "each (default: a middle stage)")
    p.add_argument("--steps", type=positive_int, default=20, help="gradient-ascent steps per octave (default 20)")
    p.add_argument("--octaves", type=positive_int, default=4, help="scales, smallest first (default 4)")
    p.add_argument("--octave-scale", type=float, default=1.4, help="size ratio between octaves (default 1.4)")
    p.add_argument("--jitter", type=int, default=32, help="largest random roll in pixels per step (default 32)")
    p.add_argument("--step-size", type=float, default=0.006,
                   help="mean change of a 0..1 pixel per step (default 0.006)")
    p.add_argument("--size", type=positive_int, help="longer side of the photo in pixels (default: the model's input)")
    p.add_argument("--seed", type=int, default=0, help="seed of the jitter's random rolls (default 0)")


# The options each newer attribution tool passes on to its cnnkit.viz.commands function.
ATTRIBUTION_OPTIONS = {"occlusion": ("window", "stride"), "integrated-gradients": ("steps",),
                       "guided-backprop": (), "deconvnet": ("layer", "channel")}


def run(args) -> None:
    from . import commands

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.tool == "curves":
        commands.curves(args.run_dir, out)
        return _done(out, "curves.png")
    if args.tool == "gradients":
        commands.gradients(args.run_dirs, out, args.epochs, args.steps, args.relative)
        return _done(out, "gradients.png")
    if args.tool == "kernels":
        from .kernels import run_kernels_tool

        run_kernels_tool(args.images, out)
        return _done(out, "kernels*.png")
    model, info = load_for_tools(args.model)
    look = {"mean": info["mean"], "std": info["std"], "size": info["size"]}
    if args.tool == "filters":
        before = load_for_tools(args.before)[0] if args.before else None
        commands.filters(model, out, args.layer, before)
        return _done(out, "filters.png")
    if args.tool == "maps":
        commands.maps(model, [str(i) for i in args.images], out, args.layers, **look)
        return _done(out, "maps*.png")
    if args.tool == "maximize":
        commands.maximize(model, args.unit, out, args.layer, args.target, args.steps, args.parameterization,
                          args.seed, class_names=info["classes"], progress=not args.no_progress, **look)
        return _done(out, "maximize.png")
    if args.tool == "dream":
        commands.dream(model, [str(i) for i in args.images], out, args.layers, args.steps, args.octaves,
                       args.octave_scale, args.jitter, args.step_size, args.seed, info["mean"], info["std"], args.size,
                       progress=not args.no_progress)
        return _done(out, "dream*.png")
    if args.tool in ("saliency", "gradcam"):
        kwargs = {"layer": args.layer} if args.tool == "gradcam" else {}
        getattr(commands, args.tool)(model, [str(i) for i in args.images], out, target=args.target,
                                     class_names=info["classes"], **kwargs, **look)
        return _done(out, f"{args.tool}.png")
    if args.tool in ATTRIBUTION_OPTIONS:
        options = {option: getattr(args, option) for option in ATTRIBUTION_OPTIONS[args.tool]}
        getattr(commands, args.tool.replace("-", "_"))(model, [str(i) for i in args.images], out, target=args.target,
                                                       class_names=info["classes"], **options, **look)
        return _done(out, f"{args.tool}.png")
    batches = list(test_batches(info, args.data, args.examples))
    if args.tool == "embed":
        commands.embed(model, batches, out, info["classes"], max_examples=args.examples,
                       progress=not args.no_progress)
    elif args.tool == "confusion":
        commands.confusion(model, batches, out, info["classes"])
    else:
        start = load_for_tools(args.start)[0].state_dict() if args.start else None
        summary = commands.landscape(model, batches, out, start, args.examples, args.resolution, args.span,
                                     progress=not args.no_progress)
        print("curvature statistics:", summary["statistics"])
    _done(out, f"{args.tool}.png")


def _done(out: Path, pattern: str) -> None:
    print("wrote " + ", ".join(str(p) for p in sorted(out.glob(pattern))))
