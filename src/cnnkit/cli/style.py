"""``cnnkit stylize`` and ``cnnkit texture``: Gatys style transfer and texture synthesis."""

from __future__ import annotations

from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from .common import progress
from .options import add_command, comma_floats, comma_names

EXAMPLES = {
    "stylize": """examples:
  cnnkit stylize photo.jpg starry_night.jpg -o out.png                  # EfficientNet-Lite0, offline, 384 px
  cnnkit stylize photo.jpg starry.jpg scream.jpg --style-weights 0.7,0.3 -o mix.png --preserve-color
  cnnkit stylize photo.jpg starry.jpg --descriptor vgg19 --weights vgg19-dcbb9e9d.pth -o out.png
  cnnkit stylize photo.jpg starry.jpg --optimizer adam --lr 0.02 --init noise --snapshots snaps/ -o out.png""",
    "texture": """examples:
  cnnkit texture starry_night.jpg -o texture.png --size 256                      # optimise from noise
  cnnkit texture starry_night.jpg --feedforward --save-generator starry.safetensors -o sample.png
  cnnkit texture --generator starry.safetensors --height 512 --width 1024 --count 4 -o samples.png""",
}


def add_parser(sub) -> None:
    p = add_command(sub, "stylize",
                    "Gatys neural style transfer: a content image painted in the style of others", EXAMPLES)
    p.add_argument("content", type=Path)
    p.add_argument("styles", nargs="+", type=Path, help="one or more style images")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--style-weights", type=comma_floats, help="one weight per style image, e.g. 0.7,0.3")
    style_options(p, iterations=150, size=384)
    p.add_argument("--content-layers", type=comma_names)
    p.add_argument("--content-weight", type=float, help="alpha (default: the descriptor's)")
    p.add_argument("--init", choices=["content", "noise"], default="content")
    p.add_argument("--preserve-color", action="store_true", help="transfer luminance only, keep the photo's colours")
    p.set_defaults(func=cmd_stylize)

    p = add_command(sub, "texture",
                    "texture synthesis: optimise noise, or train a feed-forward generator and sample it", EXAMPLES)
    p.add_argument("style", nargs="?", type=Path, help="the texture image (not needed with --generator)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--height", type=positive_int, help="output height (default --size)")
    p.add_argument("--width", type=positive_int, help="output width (default --size)")
    style_options(p, iterations=150, size=256)
    p.add_argument("--feedforward", action="store_true", help="train a texture network (Ulyanov et al. 2016)")
    p.add_argument("--train-size", type=positive_int, default=128, help="generator training crops (pixels)")
    p.add_argument("--train-iterations", type=positive_int, default=300)
    p.add_argument("--generator-norm", choices=["instance", "batch"], default="instance",
                   help="the generator's normalisation: instance (Ulyanov et al. 2017, better) or batch (2016)")
    p.add_argument("--save-generator", type=Path, metavar="FILE.safetensors")
    p.add_argument("--generator", type=Path, metavar="FILE.safetensors", help="sample a trained generator")
    p.add_argument("--count", type=positive_int, default=1, help="samples side by side (with a generator)")
    p.set_defaults(func=cmd_texture)


def style_options(p, iterations: int, size: int) -> None:
    p.add_argument("--descriptor", default="efficientnet_lite0", choices=["efficientnet_lite0", "vgg19", "vgg16"])
    p.add_argument("--weights", type=Path, help="descriptor checkpoint (torchvision layout for VGG)")
    p.add_argument("--style-layers", type=comma_names, help="comma-separated layer names (default: the descriptor's)")
    p.add_argument("--layer-weights", type=comma_floats, help="w_l, one per style layer")
    p.add_argument("--style-weight", type=float, help="beta (default: the descriptor's)")
    p.add_argument("--tv-weight", type=float, default=1.0, help="total-variation regularisation")
    p.add_argument("--smoothing", choices=["none", "softmax", "tanh"], help="activation smoothing (default: "
                   "tanh for EfficientNet, none for VGG)")
    p.add_argument("--smoothing-scale", type=float, default=0.3, help="tanh scale / softmax temperature as a "
                   "fraction of each layer's activation std (0.3)")
    p.add_argument("--optimizer", choices=["lbfgs", "adam"], default="lbfgs")
    p.add_argument("--lr", type=float, help="L-BFGS step (1) or Adam pixel step (0.02)")
    p.add_argument("--size", type=positive_int, default=size, help=f"longer side of the output in pixels ({size})")
    p.add_argument("--scales", type=comma_floats, default=[0.5, 1.0], help="coarse-to-fine fractions of --size")
    p.add_argument("--iterations", type=positive_int, default=iterations, help="loss evaluations over all scales")
    p.add_argument("--snapshots", type=Path, metavar="DIR", help="write intermediate images here")
    p.add_argument("--snapshot-every", type=positive_int, default=25)
    p.add_argument("--loss-csv", type=Path, help="write the loss per iteration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")


def _style_config(args, **extra):
    import torch

    from ..style import StyleConfig

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



def cmd_stylize(args) -> None:
    import time

    from ..data.image_io import load_image, save_image
    from ..style import build_descriptor, stylize

    config = _style_config(args, content_layers=args.content_layers, content_weight=args.content_weight,
                           init=args.init, preserve_color=args.preserve_color)
    content = load_image(args.content, max(args.size * 2, 512))  # read once, rescaled per pass
    styles = [load_image(path, max(args.size * 2, 512)) for path in args.styles]
    descriptor = build_descriptor(args.descriptor, args.weights)
    start = time.perf_counter()
    image, history = stylize(content, styles, config, descriptor, args.style_weights, progress(args),
                             args.snapshots, args.snapshot_every if args.snapshots else 0)
    save_image(image, args.output)
    _write_loss_csv(history, args.loss_csv)
    print(f"{args.output}: {image.shape[2]}x{image.shape[1]}, {len(history)} iterations in "
          f"{time.perf_counter() - start:.1f}s; loss {history[0]['loss']:.4g} -> {history[-1]['loss']:.4g} "
          f"(content {history[-1]['content']:.4g}, style {history[-1]['style']:.4g})")


def cmd_texture(args) -> None:
    import time

    import torch

    from ..data.image_io import load_image, save_image
    from ..style import build_descriptor, synthesize_texture
    from ..texture import load_texture_generator, save_texture_generator, train_texture_generator

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
                                                     config=config, seed=args.seed, progress=progress(args),
                                                     norm=args.generator_norm)
        if args.save_generator:
            save_texture_generator(generator, args.save_generator)
        image = torch.cat(list(generator.sample(height, width, args.count, seed=args.seed)), dim=2)
    else:
        image, history = synthesize_texture(style, height, width, config, descriptor, progress(args),
                                            args.snapshots, args.snapshot_every if args.snapshots else 0)
    save_image(image, args.output)
    _write_loss_csv(history, args.loss_csv)
    print(f"{args.output}: {len(history)} iterations in {time.perf_counter() - start:.1f}s; "
          f"style loss {history[0]['loss']:.4g} -> {history[-1]['loss']:.4g}")
