"""``cnnkit compress`` and ``cnnkit decompress``: argument parsing over :mod:`cnnkit.compress`."""

from __future__ import annotations

from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from ..train.recipes import TASK_RECIPES
from .common import load_task_checkpoint, train_new_run
from .options import add_command, subset_options, train_options

CODECS = {"factorized": "compress_factorized", "hyperprior": "compress_hyperprior"}
PHOTO_CROP = 256  # Ballé et al.'s training crops

EXAMPLES = {
    "compress": """examples:
  cnnkit compress --train --data cifar10 --lambda 0.01 --out runs/compress-cifar10   # train a codec
  cnnkit compress --train --model hyperprior --data cbsd432 --crop 128 --epochs 20 --out runs/hp
  cnnkit compress --train --resume runs/hp --epochs 60                              # extend its budget
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
    p.add_argument("--data", help="training data: cifar10 (default), mnist, fashion-mnist, imagefolder:PATH, or "
                                  "cbsd432 (432 colour photographs, trained on random crops; validated on CBSD68)")
    p.add_argument("--model", choices=tuple(CODECS), default="factorized",
                   help="factorized: Ballé 2017 / the 2018 factorized prior; hyperprior: Ballé 2018's scale hyperprior")
    p.add_argument("--crop", type=positive_int,
                   help=f"train on random CROPxCROP windows of the images, mirrored at random (default {PHOTO_CROP} "
                        "for photo sets, none otherwise)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue a compression run from its last completed epoch, with the data, model, lambda and "
                        "crop it was started with; --epochs sets the new total (a longer budget)")
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


def _load_training_data(name: str):
    """A dataset by catalog name, or a set of photographs (cbsd432) that the task crops."""
    from ..compress.photos import TEST_SET, load_photos
    from ..data import load_dataset

    return load_photos(name) if name in TEST_SET else load_dataset(name)


def _train(args) -> None:
    from ..compress import CompressionTask
    from ..compress.photos import TEST_SET
    from ..models.registry import create_model

    if args.resume:
        return _resume(args)
    data = args.data or "cifar10"
    crop = args.crop or (PHOTO_CROP if data in TEST_SET else None)
    *_, summary = train_new_run(
        args, lambda: _load_training_data(data),
        lambda bundle: create_model(CODECS[args.model], in_channels=bundle.image_shape[0],
                                    channels=args.channels, latent_channels=args.latent_channels),
        lambda bundle: f"compress-{bundle.name.split(':')[0].split('+')[0]}"
                       f"{'' if args.model == 'factorized' else '-' + args.model}-lambda{args.lmbda:g}",
        lambda bundle: CompressionTask(args.lmbda, crop), TASK_RECIPES["compress"])
    _report(summary, args.out)


def _resume(args) -> None:
    """Continue a compression run: everything but the epoch budget and runtime settings is the run's own."""
    from ..compress import CompressionTask
    from ..runs import read_checkpoint_meta
    from ..train import TrainConfig, Trainer
    from ..train.recipe import fixed_on_resume, resume_recipe
    from .train_flags import given_training_options

    if args.out is not None or args.overwrite:
        raise CnnkitError("--resume continues the run in its own folder; leave out --out and --overwrite.")
    given = given_training_options(args)
    fixed = fixed_on_resume(given)
    changed = [flag for flag, default in (("--lambda", 0.01), ("--channels", 64), ("--latent-channels", 96),
                                          ("--model", "factorized")) if getattr(args, _dest(flag)) != default]
    changed += [f"--{name}" for name in ("data", "crop") if getattr(args, name) is not None] + \
        [f"--{name.replace('_', '-')}" for name in fixed]
    if changed:
        raise CnnkitError(f"--resume continues {args.resume} as it was started; {', '.join(changed)} cannot change "
                          "(only --epochs, --threads, --device and --no-progress). Start a new run instead.")
    recipe = resume_recipe(args.resume)
    meta = read_checkpoint_meta(args.resume)
    task = meta.get("task", {})
    if task.get("name") != "compression":
        raise CnnkitError(f"{args.resume} holds a {task.get('name', 'classification')} run, not a compressor; "
                          "'cnnkit train --resume' continues it.")
    bundle = _load_training_data(recipe["data"].split(":")[0].split("+")[0])
    model, _ = _load_compressor(args.resume)  # the architecture; the Trainer restores the last epoch's weights
    names = {field for field in TrainConfig.__dataclass_fields__}
    config = TrainConfig.from_dict({**{k: v for k, v in recipe.items() if k in names}, **given})
    if config.epochs <= meta.get("epoch", 0):
        raise CnnkitError(f"{args.resume} has already trained for {meta['epoch']} epochs; give --epochs above that "
                          "to extend its budget.")
    trainer = Trainer(model, bundle, config, out=args.resume, task=CompressionTask(task["lmbda"], task.get("crop")))
    _report(trainer.fit(resume=True), args.resume)


def _dest(flag: str) -> str:
    return {"--lambda": "lmbda"}.get(flag, flag[2:].replace("-", "_"))


def _report(summary: dict, out) -> None:
    print(f"test set: {summary['test_bpp']:.3f} bpp (estimated), PSNR {summary['test_psnr']:.2f} dB; "
          f"'cnnkit compress {out} IMAGE' writes a file")
