"""Gaussian denoising on BSD68 (68 full grey images) at sigma 15/25/50: a DnCNN and the notes' denoising
autoencoder trained on Train400 through the one loop, beside BM3D and a Gaussian filter measured in the same run,
and the published figures.

    CNNKIT_DATA=../shared/datasets python benchmarks/bsd68_denoising.py --bm3d-processes 2
        # DnCNN depth 17, width 32 (the paper's depth, half its width), 100 epochs per sigma in bf16 with
        # channels_last (~50 min a sigma on one core), the autoencoder alike (~4 min), then BSD68
    python benchmarks/bsd68_denoising.py --sigmas 25,50 --train-only dncnn    # training only, in lanes
    python benchmarks/bsd68_denoising.py --epochs 8 --depth 10 --precision fp32 --no-channels-last  # stop 44's

Protocol (Zhang et al. 2017, Table 2, and the authors' test code): additive white Gaussian noise of sigma/255,
not clipped, one fixed noise draw (seed 1234) shared by every method; estimates saved as 8-bit images before PSNR
and SSIM against the clean image; means over the 68 images. One DnCNN per sigma (DnCNN-S, known noise level),
trained on random 40x40 patches of Train400 in the 8 symmetries of the square (Adam, lr 1e-3, cosine), 64 a step.

Training is resumable: each sigma's run folder (runs/bsd68/dncnn-dDwW-sS[-bf16], autoencoder-bB-sS[-bf16]) keeps
its last epoch, and a later call with a larger --epochs continues it, the cosine schedule stretched to the new
length from where it stands (``--train-only`` trains and stops). The Gaussian filter's blur is tuned per sigma on
8 Train400 images. BM3D (``bm3d.bm3d(noisy, sigma_psd)``, single-threaded) takes 6-9 s per image here;
--bm3d-processes spreads the images over that many processes.

Writes docs/images/bsd68_denoising.png (noisy / Gaussian filter / BM3D / the notes' autoencoder / DnCNN / clean
on one BSD68 image at sigma 25) and appends every figure to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # BM3D's numpy/scipy: one thread, before numpy loads

import torch  # noqa: E402

from cnnkit import TrainConfig, Trainer, create_model  # noqa: E402
from cnnkit.data.photo_sets import load_photo_set, load_denoising_data  # noqa: E402
from cnnkit.denoise import (DenoisingTask, denoise_full_images, gaussian_filter_images, noisy_test_images,  # noqa: E402
                            score_estimates, to_8bit_levels, tune_gaussian_filter)

from record import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = {  # Zhang et al. 2017, Table 2: BSD68 PSNR (dB)
    "DnCNN-S": {15: 31.73, 25: 29.23, 50: 26.23},
    "BM3D": {15: 31.07, 25: 28.57, 50: 25.62},
}
AUTOENCODER = "the notes' autoencoder"
PICTURE_IMAGE, PICTURE_SIGMA = 2, 25  # test003 (index 2), the figure's example


def train_denoiser(model_name: str, model_args: dict, folder: str, epochs: int, sigma: float, args,
                   bundle) -> tuple[torch.nn.Module, dict]:
    """Train (or continue) one denoiser for ``sigma`` through the one loop, in runs/bsd68/FOLDER-sS; returns the
    model and its run's figures."""
    suffix = "" if args.precision == "fp32" else f"-{args.precision}"  # a resume never mixes precisions
    out = REPO / args.runs / f"{folder}-s{sigma:g}{suffix}"
    resume = (out / "last.safetensors").exists()
    torch.manual_seed(0)
    model = create_model(model_name, **model_args)
    config = TrainConfig(epochs=epochs, batch_size=args.batch_images, optimizer="adam", lr=1e-3,
                         weight_decay=0.0, schedule="cosine", num_threads=args.threads, progress=False,
                         precision=args.precision, channels_last=args.channels_last)
    task = DenoisingTask("gaussian", sigma / 255, "mse", clip=False, patch_size=args.patch_size,
                         patches_per_image=args.patches_per_image, augment=True)
    trainer = Trainer(model, bundle, config, out=out, task=task)
    trainer.fit(resume=resume)
    seconds = sum(m["seconds"] for m in trainer.history)
    steps = trainer.epoch * trainer.steps_per_epoch
    return model.cpu().eval(), {"train_seconds": round(seconds, 1), "epochs": trainer.epoch, "steps": steps,
                                "patches": steps * args.batch_images * args.patches_per_image, "run": str(out),
                                "precision": args.precision}


def bm3d_one(image, sigma: float):
    """One image through BM3D, and the seconds it took (its own, whatever the other workers do)."""
    import bm3d

    start = time.perf_counter()
    return bm3d.bm3d(image, sigma_psd=sigma / 255), time.perf_counter() - start


def bm3d_images(noisy: list[torch.Tensor], sigma: float, processes: int = 1) -> tuple[list[torch.Tensor], float]:
    """BM3D on each image; with processes > 1 the images are shared among that many worker processes (BM3D is
    single-threaded numpy, ~9 s an image here, so two cores halve the wait). Also returns the mean seconds an
    image."""
    arrays = [image[0].double().numpy() for image in noisy]
    if processes > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            outputs = list(pool.map(bm3d_one, arrays, [sigma] * len(arrays)))
    else:
        outputs = [bm3d_one(array, sigma) for array in arrays]
    seconds = sum(took for _, took in outputs) / len(outputs)
    return [torch.from_numpy(output).float()[None] for output, _ in outputs], seconds


def figure(panels: list[tuple[str, torch.Tensor]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.viz import plots

    # Two rows of three for six panels; each panel as wide as its image's aspect asks (BSD68 has portrait and
    # landscape photographs), with room for its title.
    rows = 2 if len(panels) > 4 else 1
    columns = math.ceil(len(panels) / rows)
    height, width = panels[0][1].shape[-2:]
    panel_height = 3.4
    panel_width = max(panel_height * width / height, 2.8)
    fig, axes = plt.subplots(rows, columns, figsize=(panel_width * columns, (panel_height + 0.4) * rows),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for ax, (title, image) in zip(axes.flat, panels):
        ax.imshow(to_8bit_levels(image)[0].numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    plots.save(fig, path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sigmas", default="15,25,50")
    parser.add_argument("--depth", type=int, default=17, help="DnCNN's convolution layers (17: the paper's)")
    parser.add_argument("--width", type=int, default=32, help="DnCNN's feature maps (the paper's 64 trains 3.6x "
                                                              "slower here)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of 400 images x --patches-per-image patches")
    parser.add_argument("--autoencoder-epochs", type=int,
                        help="epochs of the notes' conv_autoencoder beside the DnCNN (default: --epochs, the same "
                             "patches; 0: leave it out)")
    parser.add_argument("--bottleneck", type=int, default=16, help="the autoencoder's bottleneck channels")
    parser.add_argument("--batch-images", type=int, default=8)
    parser.add_argument("--patches-per-image", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"),
                        help="training precision (bf16 autocast: 1.9x the patches a second on this CPU, measured)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="channels_last layout (1.15x here, measured)")
    parser.add_argument("--bm3d-processes", type=int, default=1, help="worker processes for BM3D (one core each)")
    parser.add_argument("--runs", default="runs/bsd68", help="folder of the per-sigma run folders")
    parser.add_argument("--bm3d-images", type=int, default=68, help="BM3D on the first N test images (68: all)")
    parser.add_argument("--train-only", nargs="?", const="both", choices=("both", "dncnn", "autoencoder"),
                        help="train (or continue) the models (or only the DnCNNs or the autoencoders: two processes "
                             "can train them side by side), then stop")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sigmas = [float(s) for s in args.sigmas.split(",")]
    if args.autoencoder_epochs is None:
        args.autoencoder_epochs = args.epochs
    bundle = load_denoising_data("bsd-train400", "bsd68")
    models = {sigma: train_denoiser("dncnn", {"depth": args.depth, "width": args.width},
                                    f"dncnn-d{args.depth}w{args.width}", args.epochs, sigma, args, bundle)
              for sigma in sigmas} if args.train_only != "autoencoder" else {}
    # The notes' denoising autoencoder (seeds 004), trained alike on the same patches: what a bottleneck network
    # does on natural images, beside the residual one.
    autoencoders = {sigma: train_denoiser("conv_autoencoder", {"bottleneck_channels": args.bottleneck},
                                          f"autoencoder-b{args.bottleneck}", args.autoencoder_epochs, sigma, args,
                                          bundle) for sigma in sigmas} if (
        args.autoencoder_epochs and args.train_only != "dncnn") else {}
    if args.train_only:
        return
    test = load_photo_set("bsd68")
    tuning = load_photo_set("bsd-train400")[:8]  # the blur is chosen on training images, never on the test set
    load = os.getloadavg()
    rows, panels = [], []
    for sigma in sigmas:
        model, trained = models[sigma]
        noisy = noisy_test_images(test, sigma / 255)
        results = {"noisy input": score_estimates(noisy, test)}
        blur = tune_gaussian_filter(tuning, sigma / 255)
        blurred = gaussian_filter_images(noisy, blur)
        results[f"Gaussian filter (std {blur:g} px)"] = score_estimates(blurred, test)
        start = time.perf_counter()
        denoised = denoise_full_images(model, noisy)
        dncnn_seconds = time.perf_counter() - start
        results["DnCNN"] = score_estimates(denoised, test)
        autoencoded = denoise_full_images(autoencoders[sigma][0], noisy) if sigma in autoencoders else None
        if autoencoded is not None:
            results[AUTOENCODER] = score_estimates(autoencoded, test)
        count = min(args.bm3d_images, len(test))
        bm3d_out, bm3d_seconds_per_image = bm3d_images(noisy[:count], sigma, args.bm3d_processes)
        results["BM3D"] = score_estimates(bm3d_out, test[:count])
        if count < len(test):  # the other methods on the same subset, so the comparison stays like for like
            results["DnCNN, BM3D's images"] = score_estimates(denoised[:count], test[:count])
        rows.append({"sigma": sigma, "results": results, "trained": trained, "bm3d_images": count,
                     "autoencoder_trained": autoencoders[sigma][1] if sigma in autoencoders else None,
                     "bm3d_seconds_per_image": bm3d_seconds_per_image,
                     "dncnn_seconds_per_image": dncnn_seconds / len(test)})
        if sigma == PICTURE_SIGMA:
            i = min(PICTURE_IMAGE, count - 1)

            def psnr_of(method, i=i, results=results):
                return f"{results[method]['per_image_psnr'][i]:.2f} dB"

            panels = [(f"noisy, sigma {sigma:g}: {psnr_of('noisy input')}", noisy[i]),
                      (f"Gaussian filter {blur:g} px: {psnr_of(next(k for k in results if 'Gaussian' in k))}",
                       blurred[i]),
                      (f"BM3D: {psnr_of('BM3D')}", bm3d_out[i]),
                      (f"DnCNN d{args.depth} w{args.width}: {psnr_of('DnCNN')}", denoised[i]),
                      (f"clean (bsd68 test{i + 1:03d})", test[i].float() / 255)]
            if autoencoded is not None:
                panels.insert(3, (f"notes' autoencoder: {psnr_of(AUTOENCODER)}", autoencoded[i]))
    params = sum(p.numel() for p in models[sigmas[0]][0].parameters())
    variant = f"dncnn depth {args.depth} width {args.width} ({params:,} params)"
    print(f"\nBSD68, 68 full grey images; {variant}; load average {load[0]:.2f} on a shared 2-core CPU")
    print(f"{'sigma':>5} {'method':<32} {'PSNR':>7} {'SSIM':>6}   published PSNR")
    for row in rows:
        sigma = row["sigma"]
        for method, scores in row["results"].items():
            published = PUBLISHED["DnCNN-S" if method == "DnCNN" else method].get(sigma) if method in (
                "DnCNN", "BM3D") else None
            print(f"{sigma:>5g} {method:<32} {scores['psnr']:>7.2f} {scores['ssim']:>6.3f}   "
                  + (f"{published:.2f}" if published else ""))
        trained = row["trained"]
        print(f"      DnCNN: {trained['epochs']} epochs, {trained['steps']} steps, {trained['patches']:,} patches, "
              f"{trained['train_seconds']:.0f} s training; BM3D {row['bm3d_seconds_per_image']:.1f} s/image "
              f"({row['bm3d_images']} images), DnCNN {row['dncnn_seconds_per_image']:.2f} s/image")
        if row["autoencoder_trained"]:
            trained = row["autoencoder_trained"]
            print(f"      the notes' autoencoder (bottleneck {args.bottleneck}): {trained['epochs']} epochs, "
                  f"{trained['patches']:,} patches, {trained['train_seconds']:.0f} s training")
    if panels:
        figure(panels, REPO / "docs" / "images" / "bsd68_denoising.png")
    name = "bsd68_denoising-s" + "-".join(f"{sigma:g}" for sigma in sigmas) + ".json"  # per-image figures
    (REPO / args.runs / name).write_text(json.dumps(rows, indent=1, default=str))
    if not args.no_record:
        record_rows(rows, variant, load[0], args.threads, args.bottleneck)


def record_rows(rows: list[dict], variant: str, load: float, threads: int, bottleneck: int) -> None:
    """One results.jsonl line per (method, sigma, metric): the DnCNN on all 68 images and on BM3D's images
    (baseline BM3D), BM3D, the notes' autoencoder, the Gaussian filter and the noisy input."""
    for row in rows:
        sigma, results, trained, count = row["sigma"], row["results"], row["trained"], row["bm3d_images"]
        common = dict(sigma=sigma, load_average=round(load, 2), threads=threads, runs=1)
        all_images, bm3d_subset = "bsd68 (68 full grey images)", f"bsd68 (the first {count} of the 68 images)"
        training = dict(train_seconds=trained["train_seconds"], epochs=trained["epochs"], patches=trained["patches"],
                        precision=trained["precision"])
        for metric in ("psnr", "ssim"):
            bm3d_value = round(results["BM3D"][metric], 3)
            published = {name: PUBLISHED[name][sigma] if metric == "psnr" and sigma in PUBLISHED[name] else None
                         for name in PUBLISHED}
            record("bsd68_denoising", f"{variant}, sigma {sigma:g}", metric, round(results["DnCNN"][metric], 3),
                   data=all_images, published=published["DnCNN-S"], **training, **common)
            subset = results.get("DnCNN, BM3D's images", results["DnCNN"])
            record("bsd68_denoising", f"{variant}, sigma {sigma:g}, BM3D's images", metric,
                   round(subset[metric], 3), baseline="BM3D", baseline_value=bm3d_value, data=bm3d_subset,
                   behind_baseline=round(results["BM3D"][metric] - subset[metric], 3), **training, **common)
            record("bsd68_denoising", f"BM3D, sigma {sigma:g}", metric, bm3d_value, data=bm3d_subset,
                   seconds_per_image=round(row["bm3d_seconds_per_image"], 2), published=published["BM3D"], **common)
            for method, scores in results.items():
                if method.startswith(("Gaussian", "noisy")):
                    record("bsd68_denoising", f"{method}, sigma {sigma:g}", metric, round(scores[metric], 3),
                           data=all_images, **common)
            if AUTOENCODER in results:
                auto = row["autoencoder_trained"]
                record("bsd68_denoising", f"conv_autoencoder bottleneck {bottleneck} (the notes'), sigma {sigma:g}",
                       metric, round(results[AUTOENCODER][metric], 3), data=all_images,
                       train_seconds=auto["train_seconds"], epochs=auto["epochs"], patches=auto["patches"],
                       precision=auto["precision"], **common)


if __name__ == "__main__":
    main()
