"""The commands that train a task through the one loop and apply its checkpoint: ``cnnkit denoise``,
``segment``, ``translate`` and ``gan``."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import CnnkitError
from ..schema import positive_int
from .common import load_task_checkpoint, load_task_run_for_image, output_path, seed_of, train_new_run
from ..train.recipes import TASK_RECIPES
from .options import add_command, subset_options, train_options

EXAMPLES = {
    "denoise": """examples:
  cnnkit denoise --train --data mnist --noise gaussian --level 0.3 --bottleneck 16 --out runs/dae-mnist
  cnnkit denoise --train --data fashion-mnist --noise salt-and-pepper --level 0.2 --out runs/dae-fashion
  cnnkit denoise runs/dae-mnist digit.png -o clean.png --add-noise gaussian:0.3   # corrupt, then denoise
  cnnkit denoise --train --data bsd-train400 --model dncnn --sigma 25 --depth 17 --width 32 --precision bf16 \
      --channels-last --out runs/dncnn-s25   # DnCNN on Train400's 40x40 patches, then PSNR/SSIM on all of BSD68
  cnnkit denoise runs/dncnn-s25 photo.png -o clean.png --add-noise gaussian:0.098   # sigma 25/255""",
    "segment": """examples:
  cnnkit segment --train --data shapes --epochs 12 --out runs/unet-shapes      # synthetic shapes, seed 0
  cnnkit segment --train --data segfolder:my_data --image-size 128 --out runs/unet-mine   # images/ + masks/
  cnnkit segment --train --data canvas-mnist --model fcn8s --backbone resnet18 --out runs/fcn8s-canvas
  cnnkit segment --train --resume runs/fcn8s-canvas --epochs 12     # continue (or extend) a run exactly
  cnnkit segment runs/fcn8s-canvas --eval          # test mIoU and per-class IoU (also in eval.json)
  cnnkit segment runs/unet-shapes picture.png -o overlay.png --mask-out mask.png""",
    "translate": """examples:
  cnnkit translate --train --task colorize --train-subset 5000 --out runs/p2p-colorize   # cifar10, grey -> RGB
  cnnkit translate --train --task edges --l1-only --out runs/l1-edges        # fashion-mnist, the L1-only U-Net
  cnnkit translate runs/p2p-colorize grey.png -o colour.png
  cnnkit translate runs/p2p-colorize photo.jpg -o colour.png --make-input    # grey it first, then colourise
  cnnkit translate runs/p2p-inpaint photo.png --mask hole.png -o filled.png  # white in hole.png = fill it""",
    "gan": """examples:
  cnnkit gan --train --data mnist --epochs 5 --out runs/dcgan-mnist   # samples/epoch_NNN.png, FID-like score
  cnnkit gan runs/dcgan-mnist -o samples.png --count 64 --seed 3""",
}


def add_parser(sub) -> None:
    for name, help_text in (("denoise", "train a denoising autoencoder, or denoise an image with one"),
                            ("segment", "train a U-Net or FCN segmenter, evaluate one, or write the mask overlay "
                                        "of an image")):
        p = add_command(sub, name, help_text, EXAMPLES)
        p.add_argument("checkpoint", nargs="?", type=Path, help="run folder of a trained model")
        p.add_argument("image", nargs="?", type=Path)
        p.add_argument("-o", "--output", type=Path, help="output image (default IMAGE-%s.png)" % name)
        p.add_argument("--train", action="store_true", help="train through the one training loop")
        data_help = ("mnist, fashion-mnist, or bsd-train400 (natural images: validated on BSD68 crops, "
                     "tested on the full BSD68 images)" if name == "denoise"
                     else "shapes[:SEED], canvas-mnist[:SEED], canvas-fashion-mnist[:SEED] or segfolder:PATH")
        p.add_argument("--data", help=data_help)
        train_options(p)
        if name == "denoise":
            _denoise_options(p)
        else:
            _segment_options(p)

    p = add_command(sub, "translate",
                    "train pix2pix (colorize, edges, inpaint), or translate an image with it", EXAMPLES)
    p.add_argument("checkpoint", nargs="?", type=Path, help="run folder of a trained pix2pix model")
    p.add_argument("image", nargs="?", type=Path)
    p.add_argument("-o", "--output", type=Path, help="output image (default IMAGE-translated.png)")
    p.add_argument("--make-input", action="store_true",
                   help="IMAGE is a target-style picture: derive the input as training did (grey, edges, mask)")
    p.add_argument("--mask", type=Path, help="inpaint: the hole to fill, an image of IMAGE's size (white = hole)")
    p.add_argument("--mask-size", type=positive_int, default=12,
                   help="inpaint training: side of the random square hole in pixels (12, for 32x32 images)")
    p.add_argument("--prefill", choices=["grey", "telea", "navier-stokes", "biharmonic"], default="grey",
                   help="inpaint training: what the hole holds in the generator's input, mid-grey or a classical "
                        "fill (OpenCV, scikit-image) that the generator learns to correct")
    p.add_argument("--train", action="store_true", help="train through the one training loop")
    p.add_argument("--task", choices=["colorize", "edges", "inpaint"], default="colorize", dest="kind")
    p.add_argument("--data", help="dataset (default: cifar10 for colorize and inpaint, fashion-mnist for edges)")
    p.add_argument("--l1-only", action="store_true", help="no discriminator: the paper's L1-only U-Net ablation")
    p.add_argument("--l1-weight", type=float, default=100.0, help="lambda of lambda L1 + adversarial (100)")
    p.add_argument("--base-channels", type=positive_int, default=32,
                   help="generator and discriminator width (64 in the paper)")
    subset_options(p)
    train_options(p)
    p.set_defaults(func=cmd_translate)

    p = add_command(sub, "gan", "train a DCGAN (28x28 or 32x32 images), or write a grid of its samples", EXAMPLES)
    p.add_argument("checkpoint", nargs="?", type=Path, help="run folder of a trained GAN")
    p.add_argument("-o", "--output", type=Path, default=Path("samples.png"), help="sample grid (default samples.png)")
    p.add_argument("--count", type=positive_int, default=64, help="samples in the grid")
    p.add_argument("--train", action="store_true", help="train through the one training loop")
    p.add_argument("--data", default="mnist", help="mnist, fashion-mnist or cifar10")
    p.add_argument("--width", type=positive_int, default=64, help="generator and discriminator width (64 in the paper)")
    subset_options(p)
    p.add_argument("--fid-samples", type=int, default=5000,
                   help="generated images behind each epoch's score (default 5000; 0: no score, no feature network)")
    train_options(p)
    p.set_defaults(func=cmd_gan)


def _denoise_options(p) -> None:
    """The denoiser's own flags: the noise, the model (the notes' autoencoder or DnCNN) and BSD patch training."""
    p.add_argument("--noise", choices=["gaussian", "salt-and-pepper"], default="gaussian")
    p.add_argument("--level", type=float, default=0.3, help="sigma (gaussian) or fraction (salt-and-pepper)")
    p.add_argument("--bottleneck", type=positive_int, default=16,
                   help="bottleneck channels of conv_autoencoder")
    p.add_argument("--model", choices=["conv_autoencoder", "dncnn"], default="conv_autoencoder",
                   help="the notes' autoencoder, or the DnCNN residual denoiser (Zhang et al. 2017)")
    p.add_argument("--sigma", type=float, metavar="S",
                   help="gaussian noise of std S on the 0-255 scale, not clipped (the denoising "
                        "literature's protocol; sets --level to S/255)")
    p.add_argument("--depth", type=positive_int, default=17, help="dncnn: convolution layers (17: DnCNN-S)")
    p.add_argument("--width", type=positive_int, default=64, help="dncnn: feature maps (64 in the paper)")
    p.add_argument("--patch-size", type=positive_int, default=40,
                   help="bsd-train400: side of the random training patches (40 in the paper)")
    p.add_argument("--patches-per-image", type=positive_int, default=8,
                   help="bsd-train400: patches cut from each image of a batch (batch = images x this)")
    p.add_argument("--add-noise", metavar="KIND:LEVEL", help="corrupt IMAGE first (a demonstration)")
    subset_options(p)
    p.set_defaults(func=cmd_denoise)


def _segment_options(p) -> None:
    """The segmenter's own flags: the data's size, the model (U-Net or FCN), evaluation and resuming."""
    p.add_argument("--image-size", type=positive_int, help="shapes: image size (64); folders: resize to N x N")
    p.add_argument("--num-train", type=positive_int, default=2000, help="shapes: training images")
    p.add_argument("--num-test", type=positive_int, default=400, help="shapes: test images")
    p.add_argument("--model", choices=SEGMENTERS, default="unet",
                   help="U-Net, or a fully convolutional network with 2, 1 or no skip connections")
    p.add_argument("--backbone", default="resnet18",
                   help="FCN backbone: a zoo classifier (resnet18, resnet20, vgg16, ...)")
    p.add_argument("--base-channels", type=positive_int, default=16, help="U-Net width (64 in the paper)")
    p.add_argument("--eval", action="store_true",
                   help="score RUN_DIR on its data's test split (mIoU, per-class IoU), or on --data")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="with --train: continue that run from its last completed epoch")
    p.add_argument("--dice-weight", type=float, default=1.0, help="loss = cross-entropy + w x Dice")
    p.add_argument("--mask-out", type=Path, help="also write the class-index mask (PNG)")
    p.add_argument("--size", type=positive_int, help="resize IMAGE so its longer side is N before segmenting")
    p.set_defaults(func=cmd_segment)


def task_training_defaults(command: str) -> dict:
    """The training defaults of a command that trains a task (its --help shows them; flags override them)."""
    return TASK_RECIPES.get(command, {})


def cmd_denoise(args) -> None:
    import torch

    from ..data import load_dataset
    from ..data.formats import read_image
    from ..denoise import DenoisingTask, add_noise, denoise_image, denoising_report
    from ..data.image_io import save_image

    if args.sigma is not None:
        if args.noise != "gaussian" or not 0 < args.sigma <= 255:
            raise CnnkitError(f"--sigma {args.sigma}: a gaussian noise std in (0, 255] on the 0-255 scale")
        args.level = args.sigma / 255
    if args.train and (args.data or "").startswith("bsd"):
        _train_bsd_denoiser(args)
        return
    if args.train:
        _, model, bundle, _ = train_new_run(
            args, lambda: load_dataset(args.data or "mnist"),
            lambda bundle: _denoiser(args, bundle.image_shape[0]),
            lambda bundle: f"denoise-{bundle.name}-{args.noise}-" + (
                f"b{args.bottleneck}" if args.model == "conv_autoencoder" else args.model),
            # the autoencoder's sigmoid wants cross-entropy; DnCNN's linear output, the paper's squared error
            lambda bundle: DenoisingTask(args.noise, args.level, "bce" if args.model == "conv_autoencoder"
                                         else "mse", clip=args.sigma is None), TASK_RECIPES["denoise"])
        report = denoising_report(model, bundle.test.images, args.noise, args.level)
        (args.out / "denoising.json").write_text(json.dumps(report, indent=2))
        print(f"test set, {args.noise} noise {args.level}: PSNR {report['noisy_psnr']:.2f} -> "
              f"{report['denoised_psnr']:.2f} dB ({report['psnr_gain_db']:+.2f} dB), SSIM {report['noisy_ssim']:.3f} "
              f"-> {report['denoised_ssim']:.3f}; {args.out / 'denoising.json'}")
        return
    model, meta = load_task_run_for_image(args, "denoising", "a denoising autoencoder", "denoise")
    image = read_image(args.image, meta["image_shape"][0])
    if args.add_noise:
        kind, _, level = args.add_noise.partition(":")
        try:
            noisy = add_noise(image.float()[None] / 255, kind, float(level or 0.3),
                              torch.Generator().manual_seed(seed_of(args)))[0]
        except ValueError:
            raise CnnkitError(f"--add-noise {args.add_noise!r}: expected KIND:LEVEL, e.g. gaussian:0.3") from None
        save_image(noisy.expand(3, -1, -1), output_path(args, "noisy").with_name(f"{args.image.stem}-noisy.png"))
        image = (noisy * 255).round().to(torch.uint8)
    out = save_image(denoise_image(model, image).expand(3, -1, -1), output_path(args, "denoised"))
    print(f"{out}")


def _denoiser(args, in_channels: int):
    from ..models.registry import create_model

    if args.model == "dncnn":
        return create_model("dncnn", in_channels=in_channels, depth=args.depth, width=args.width)
    return create_model("conv_autoencoder", in_channels=in_channels, bottleneck_channels=args.bottleneck)


def _train_bsd_denoiser(args) -> None:
    """Natural images: random patches of Train400 (8 symmetries), unclipped gaussian noise of known sigma, mean
    squared error; then PSNR/SSIM on the 68 full BSD68 images, as Zhang et al. 2017 measure them."""
    from ..data.photo_sets import load_photo_set, load_denoising_data
    from ..denoise import DenoisingTask, denoise_full_images, noisy_test_images, score_estimates

    if args.noise != "gaussian":
        raise CnnkitError("bsd-train400 is the gaussian-denoising benchmark; give --sigma 15, 25 or 50")
    if args.sigma is None:
        raise CnnkitError("--data bsd-train400 needs --sigma S (the noise std on the 0-255 scale, e.g. 25)")
    defaults = {**TASK_RECIPES["denoise"], "batch_size": 16, "lr": 1e-3, "epochs": 10, "schedule": "cosine"}
    _, model, _, _ = train_new_run(
        args, lambda: load_denoising_data(args.data),
        lambda bundle: _denoiser(args, bundle.image_shape[0]),
        lambda bundle: f"{args.model}-{bundle.name}-s{args.sigma:g}",
        lambda bundle: DenoisingTask("gaussian", args.level, "mse", clip=False, patch_size=args.patch_size,
                                     patches_per_image=args.patches_per_image, augment=True), defaults)
    test = load_photo_set("bsd68")[:args.test_subset or None]  # --test-subset N: the first N, for a quick look
    noisy = noisy_test_images(test, args.level)
    noisy_scores = score_estimates(noisy, test)
    scores = score_estimates(denoise_full_images(model.cpu(), noisy), test)
    report = {"test_set": f"bsd68 ({len(test)} full grey images)", "sigma": args.sigma,
              "noisy_psnr": noisy_scores["psnr"], "noisy_ssim": noisy_scores["ssim"], "denoised_psnr": scores["psnr"],
              "denoised_ssim": scores["ssim"], "per_image_psnr": scores["per_image_psnr"]}
    (args.out / "denoising.json").write_text(json.dumps(report, indent=2))
    print(f"BSD68 ({len(test)} images), sigma {args.sigma:g}: PSNR {report['noisy_psnr']:.2f} -> "
          f"{report['denoised_psnr']:.2f} dB, SSIM {report['noisy_ssim']:.3f} -> {report['denoised_ssim']:.3f}; "
          f"{args.out / 'denoising.json'}")


def cmd_segment(args) -> None:
    import torch

    from ..data.formats import read_image
    from ..segment import SegmentationTask, load_segmentation_data, predict_mask, write_overlay
    from ..data.image_io import resize_longer_side

    if args.resume and not args.train:
        raise CnnkitError("--resume continues training: give it with --train (cnnkit segment --train --resume RUN).")
    if args.train and args.resume:
        trainer, model, bundle, summary = _resume_segmenter(args)
    elif args.train:
        data = {"name": args.data or "shapes", "image_size": args.image_size, "num_train": args.num_train,
                "num_test": args.num_test}
        # Digits and letters are not mirror-symmetric: a flipped '2' is no '2', so canvases are never flipped.
        defaults = {**TASK_RECIPES["segment"], **({"augment": {}} if data["name"].startswith("canvas-") else {})}
        trainer, model, bundle, summary = train_new_run(
            args, lambda: load_segmentation_data(**data),
            lambda bundle: _build_segmenter(args, len(bundle.classes), bundle.image_shape[0]),
            lambda bundle: f"{args.model}-{bundle.name.split(':')[0].split('(')[0]}",
            lambda bundle: SegmentationTask(len(bundle.classes), args.dice_weight, data), defaults)
    if args.train:
        for index in range(min(8, len(bundle.test))):
            image = bundle.test.images[index]
            mask = predict_mask(model.cpu(), image, trainer.preprocess.mean, trainer.preprocess.std)
            write_overlay(image, mask, args.out / "overlays" / f"test{index:02d}.png", class_names=bundle.classes)
        print(f"test mIoU {summary['test_miou']:.4f}, Dice {summary['test_dice']:.4f}; overlays in "
              f"{args.out / 'overlays'}")
        return
    if args.eval:
        _evaluate_segmenter(args)
        return
    model, meta = load_task_run_for_image(args, "segmentation", "a segmenter", "segment")
    image = read_image(args.image, meta["image_shape"][0])
    if args.size:
        image = (resize_longer_side(image.float() / 255, args.size) * 255).round().to(torch.uint8)
    mask = predict_mask(model, image, meta["preprocess"]["mean"], meta["preprocess"]["std"])
    # The overlay keeps the image's size (a data product beside --mask-out); its legend goes to the terminal.
    out = write_overlay(image, mask, output_path(args, "overlay"))
    from ..segment import PALETTE

    print("colours: " + ", ".join(f"{name} rgb{tuple(int(v) for v in PALETTE[i % len(PALETTE)].tolist())}"
                                  if i else f"{name} untinted" for i, name in enumerate(meta["classes"])))
    if args.mask_out:
        from PIL import Image

        args.mask_out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.to(torch.uint8).numpy()).save(args.mask_out)
    counts = torch.bincount(mask.flatten(), minlength=len(meta["classes"]))
    shares = ", ".join(f"{c} {100 * n / mask.numel():.1f}%" for c, n in zip(meta["classes"], counts.tolist()) if n)
    print(f"{out}: {shares}")


SEGMENTERS = ("unet", "fcn8s", "fcn16s", "fcn32s")


def _build_segmenter(args, num_classes: int, in_channels: int):
    from ..models.registry import create_model

    if args.model == "unet":
        return create_model("unet", num_classes=num_classes, in_channels=in_channels, padding=True,
                            base_channels=args.base_channels, batch_norm=True)
    return create_model(args.model, num_classes=num_classes, in_channels=in_channels, backbone=args.backbone)


def _run_data(run_dir: Path, meta: dict) -> dict:
    """The load_segmentation_data arguments a run was trained with (its checkpoint keeps them)."""
    data = meta.get("task", {}).get("data")
    if not data:
        raise CnnkitError(f"{run_dir} does not record how its data was made (it predates that); name the data "
                          "with --data (and --image-size, --num-train, --num-test as it was trained).")
    return data


def _resume_segmenter(args):
    """Rebuild the run in --resume (its data, model and training options, from its files) and continue it."""
    import torch

    from ..models.registry import create_model
    from ..segment import SegmentationTask, load_segmentation_data
    from ..train import Trainer
    from ..train.checkpoint import read_checkpoint_meta
    from ..train.recipe import fixed_on_resume, resume_recipe
    from .train_flags import given_training_options, training_config

    if args.overwrite:
        raise CnnkitError("--resume continues a run and --overwrite replaces it; give one of them.")
    fixed = fixed_on_resume(given_training_options(args))
    if fixed:
        raise CnnkitError(f"{', '.join(fixed)} cannot change when resuming; the run's own options are read from "
                          f"{args.resume / 'config.json'} (only the epoch budget and runtime settings can).")
    recipe = resume_recipe(args.resume)
    meta = read_checkpoint_meta(args.resume)
    data = _run_data(args.resume, meta)
    bundle = load_segmentation_data(**data)
    model_name, model_args = recipe.pop("model"), recipe.pop("model_args")
    recipe.pop("data", None)
    model = create_model(model_name, num_classes=len(bundle.classes), in_channels=bundle.image_shape[0], **model_args)
    torch.manual_seed(seed_of(args))
    task = SegmentationTask(len(bundle.classes), meta["task"].get("dice_weight", 1.0), data)
    trainer = Trainer(model, bundle, training_config(args, recipe), out=args.resume, task=task)
    args.out = args.resume
    return trainer, model, bundle, trainer.fit(resume=True)


def _evaluate_segmenter(args) -> None:
    """``cnnkit segment RUN --eval``: the run's test figures, with each class's IoU, printed and in eval.json."""
    from ..segment import SegmentationTask, evaluate_segmentation, load_segmentation_data
    from ..train import Trainer
    from .train_flags import training_config

    if args.checkpoint is None:
        raise CnnkitError("Give the run folder to evaluate: cnnkit segment RUN_DIR --eval")
    model, meta = load_task_checkpoint(args.checkpoint, "segmentation", "a segmenter", "segment")
    data = ({"name": args.data, "image_size": args.image_size, "num_train": args.num_train,
             "num_test": args.num_test} if args.data else _run_data(args.checkpoint, meta))
    bundle = load_segmentation_data(**data)
    if list(bundle.classes) != list(meta["classes"]):
        raise CnnkitError(f"{args.checkpoint} segments {len(meta['classes'])} classes ({', '.join(meta['classes'])}); "
                          f"{bundle.name} has {', '.join(bundle.classes)}.")
    trainer = Trainer(model, bundle, training_config(args, {"progress": False}),
                      task=SegmentationTask(len(bundle.classes), meta["task"].get("dice_weight", 1.0)))
    trainer.preprocess.mean, trainer.preprocess.std = meta["preprocess"]["mean"], meta["preprocess"]["std"]
    result = evaluate_segmentation(trainer)
    print(f"{meta['model']['name']} on {bundle.name} test ({result['images']:,} images): mIoU {result['miou']:.4f} "
          f"(over the classes present in truth or prediction), Dice {result['dice']:.4f}, pixel accuracy "
          f"{result['pixel_acc']:.4f}")
    for name, iou in result["iou_per_class"].items():
        print(f"  {name:<14} " + ("absent" if iou is None else f"IoU {iou:.4f}"))
    out = Path(args.checkpoint) / "eval.json"
    out.write_text(json.dumps({"data": data, **{k: v for k, v in result.items()}}, indent=2))
    print(out)


def cmd_translate(args) -> None:

    from ..data.image_io import save_image
    from ..translate import (Pix2PixTask, create_translator, load_translation_data,
                            read_translation_input, translate_batch)

    if args.train:
        variant = "l1" if args.l1_only else "p2p"
        *_, summary = train_new_run(
            args, lambda: load_translation_data(args.kind, args.data),
            lambda bundle: create_translator(args.kind, bundle.image_shape[0], args.base_channels),
            lambda bundle: f"{variant}-{args.kind}-{bundle.name}",
            lambda bundle: Pix2PixTask(args.kind, args.l1_weight, 0.0 if args.l1_only else 1.0, args.mask_size,
                                       prefill=args.prefill),
            TASK_RECIPES["translate"])
        print(f"test L1 {summary['test_l1']:.4f}, PSNR {summary['test_psnr']:.2f} dB, SSIM {summary['test_ssim']:.3f}; "
              f"{args.out}")
        return
    model, meta = load_task_run_for_image(args, "pix2pix", "a pix2pix translator", "translate")
    inputs, _ = read_translation_input(args.image, meta, args.make_input, seed_of(args), args.mask)
    if args.make_input:
        shown = inputs[0, :-1] if meta["task"]["kind"] == "inpaint" else inputs[0]  # not the mask channel
        save_image(shown.expand(3, -1, -1), output_path(args, "input").with_name(f"{args.image.stem}-input.png"))
    output = translate_batch(model, inputs, seed_of(args))[0]
    print(save_image(output.expand(3, -1, -1), output_path(args, "translated")))


def cmd_gan(args) -> None:

    from ..gan import GANTask, sample_grid

    if args.train:
        from ..data import load_dataset
        from ..models.registry import create_model

        trainer, *_ = train_new_run(
            args, lambda: load_dataset(args.data),
            lambda bundle: create_model("dcgan", in_channels=bundle.image_shape[0], image_size=bundle.image_shape[1],
                                        generator_width=args.width, discriminator_width=args.width),
            lambda bundle: f"dcgan-{bundle.name}",
            lambda bundle: GANTask(fid_samples=args.fid_samples), TASK_RECIPES["gan"])
        scores = ", ".join(f"{m['val_fid']:.2f}" for m in trainer.history if "val_fid" in m)
        print((f"Fréchet feature distance by epoch: {scores}; " if scores else "")
              + f"samples in {args.out / 'samples'}")
        return
    if args.checkpoint is None:
        raise CnnkitError("Give a run folder (cnnkit gan RUN_DIR -o samples.png), or train one with "
                          "'cnnkit gan --train --data mnist'.")
    model, _ = load_task_checkpoint(args.checkpoint, "gan", "a GAN", "gan")
    print(sample_grid(model, args.output, args.count, seed_of(args)))
