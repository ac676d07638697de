"""``cnnkit compress`` and ``cnnkit decompress``: argument parsing over :mod:`cnnkit.compress`."""

from __future__ import annotations

from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from ..train.recipes import TASK_RECIPES
from .common import load_task_checkpoint, train_new_run
from .options import add_command, subset_options, train_options

EXAMPLES = {
    "compress": """examples:
  cnnkit compress --train --data cifar10 --lambda 0.01 --out runs/compress-cifar10   # train a codec
  cnnkit compress runs/compress-cifar10 photo.png -o photo.cnk                      # write a .cnk file""",
    "decompress": "example:\n  cnnkit decompress runs/compress-cifar10 photo.cnk -o photo-decoded.png",
}




def add_parser(sub) -> None:
    p = add_command(sub, "compress",
                    "learned image compression (Ballé et al.): train a codec, or write an image's .cnk file", EXAMPLES)
    p.add_argument("checkpoint", nargs="?", type=Path, help="run folder of a trained compressor")
    p.add_argument("image", nargs="?", type=Path)
    p.add_argument("-o", "--output", type=Path, help="compressed file (default IMAGE.cnk)")
    p.add_argument("--train", action="store_true", help="train a compressor through the one training loop")
    p.add_argument("--data", help="training data: cifar10 (default), mnist, fashion-mnist or imagefolder:PATH")
    p.add_argument("--lambda", dest="lmbda", type=float, default=0.01,
                   help="rate-distortion trade-off: loss = lambda x 255^2 x MSE + bits per pixel (0.01)")
    p.add_argument("--channels", type=positive_int, default=64, help="N, the transforms' width (128 in the paper)")
    p.add_argument("--latent-channels", type=positive_int, default=96,
                   help="M, the latent's channels (192 in the paper)")
    train_options(p, "run folder (default runs/compress-DATA-lambdaL, or ...-2 when that holds a run)")
    subset_options(p)
    p.set_defaults(func=cmd_compress)

    p = add_command(sub, "decompress", "decode a .cnk file with the compressor that wrote it", EXAMPLES)
    p.add_argument("checkpoint", type=Path, help="run folder of the compressor")
    p.add_argument("file", type=Path, help="a .cnk file written by 'cnnkit compress'")
    p.add_argument("-o", "--output", type=Path, help="decoded image (default FILE.png)")
    p.set_defaults(func=cmd_decompress)


def _load_compressor(path: Path):
    return load_task_checkpoint(path, "compression", "a compressor", "compress")


def cmd_compress(args) -> None:
    from ..compress import compress_image

    if args.train:
        return _train(args)
    if args.checkpoint is None or args.image is None:
        raise CnnkitError("Give a run folder and an image (cnnkit compress RUN_DIR IMAGE -o out.cnk), or train a "
                          "compressor with 'cnnkit compress --train --data cifar10'.")
    from ..data.formats import read_image

    model, meta = _load_compressor(args.checkpoint)
    image = read_image(args.image, meta["image_shape"][0])
    data = compress_image(model, image)
    output = args.output or args.image.with_suffix(".cnk")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    height, width = image.shape[1:]
    print(f"{output}: {len(data):,} bytes, {8 * len(data) / (height * width):.3f} bpp ({width}x{height} image)")


def cmd_decompress(args) -> None:
    from ..compress import decompress
    from ..data.image_io import save_image

    model, _ = _load_compressor(args.checkpoint)
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise CnnkitError(f"cannot read {args.file} ({exc.strerror or exc}).") from None
    image = decompress(model, data)
    out = save_image(image.float() / 255, args.output or args.file.with_suffix(".png"))
    print(f"{out}: {image.shape[2]}x{image.shape[1]}")


def _train(args) -> None:
    from ..compress import CompressionTask
    from ..data import load_dataset
    from ..models.registry import create_model

    *_, summary = train_new_run(
        args, lambda: load_dataset(args.data or "cifar10"),
        lambda bundle: create_model("compress_factorized", in_channels=bundle.image_shape[0],
                                    channels=args.channels, latent_channels=args.latent_channels),
        lambda bundle: f"compress-{bundle.name.split(':')[0]}-lambda{args.lmbda:g}",
        lambda bundle: CompressionTask(args.lmbda), TASK_RECIPES["compress"])
    print(f"test set: {summary['test_bpp']:.3f} bpp (estimated), PSNR {summary['test_psnr']:.2f} dB; "
          f"'cnnkit compress {args.out} IMAGE' writes a file")
