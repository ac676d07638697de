"""Rate-distortion on Kodak24 of the learned codecs (compress_factorized, compress_hyperprior) beside JPEG and WebP.

    CNNKIT_DATA=../shared/datasets python benchmarks/kodak_rd.py                    # train (a fixed budget) + measure
    CNNKIT_DATA=../shared/datasets python benchmarks/kodak_rd.py --resume --minutes 30   # extend every run's budget
    CNNKIT_DATA=../shared/datasets python benchmarks/kodak_rd.py --stage eval        # measure the runs as they are

Training: each (model, lambda) is trained through the one loop (CompressionTask with random --crop x --crop
windows of the 432 CBSD432 photographs, mirrored at random, held as one uint8 tensor) for --minutes of wall
time, checked after every epoch (one epoch = one crop of each photo), with a constant learning rate, so the
checkpoint after a budget is exactly where a longer run would stand at that point: --resume continues every run
folder (runs/kodak-MODEL-lambdaL) for another --minutes, and budget.json in it adds the time up.

Measurement: all 24 Kodak images at full size (768x512 or 512x768), each written as a real .cnk file and decoded;
bits per pixel from the file sizes (headers included), PSNR on RGB over the 8-bit images, averaged over the 24;
encode and decode seconds per image. JPEG (Pillow, 4:2:0, optimize=True) and WebP (Pillow's libwebp, method 6)
are swept over their quality settings on the same images. BD-rate (Bjøntegaard) of each learned codec against
JPEG, piecewise cubic (and Bjøntegaard's single cubic beside it, recorded as single_cubic_value), with the PSNR
range both curves share, and PSNR at 0.25/0.5/1.0 bpp interpolated on each curve, beside CompressAI's published
figures for the factorized prior (bmshj2018-factorized) and JPEG. Prints a table, writes docs/images/kodak_rd.png
and appends every figure to benchmarks/results.jsonl.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from record import record

REPO = Path(__file__).resolve().parents[1]
MODELS = {"factorized": "compress_factorized", "hyperprior": "compress_hyperprior"}
JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90)
WEBP_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)
RATES = (0.25, 0.5, 1.0)
# CompressAI's published Kodak results (compressai/results/image/kodak/*.json, PSNR-RGB), read at these rates.
PUBLISHED = {"bmshj2018-factorized (CompressAI, trained for days)": (29.15, 31.83, 35.58),
             "JPEG (CompressAI's table)": (24.66, 28.95, 32.59)}


def run_folder(model: str, lmbda: float) -> Path:
    return REPO / "runs" / f"kodak-{model}-lambda{lmbda:g}"


class WallBudget:
    """A Trainer callback: ask the loop to stop after the first epoch that ends past ``seconds`` of wall time."""

    def __init__(self, seconds: float):
        self.seconds, self.start = seconds, time.perf_counter()

    def __call__(self, trainer, metrics) -> None:
        if time.perf_counter() - self.start >= self.seconds:
            trainer.stop_requested = True


def train(model_key: str, lmbda: float, bundle, args) -> dict:
    """Train (or with --resume continue) one codec for --minutes; returns its budget.json (cumulative)."""
    from cnnkit import TrainConfig, Trainer, create_model
    from cnnkit.compress import CompressionTask

    out = run_folder(model_key, lmbda)
    budget_file = out / "budget.json"
    resume = (out / "last.safetensors").is_file()
    if resume and not args.resume:
        print(f"{out} holds a run: measuring it as it is (--resume trains it for another {args.minutes:g} min)")
        return json.loads(budget_file.read_text())
    if resume:
        # The optimiser's state, its learning rate included, comes back from the checkpoint: another --lr (or
        # size) would be recorded in budget.json without being used.
        saved = json.loads(budget_file.read_text())
        changed = [f"--{name.replace('_', '-')} {saved[name]:g} (not {getattr(args, name):g})"
                   for name in ("lr", "crop", "batch_size", "channels", "latent_channels")
                   if saved.get(name, getattr(args, name)) != getattr(args, name)]
        if changed:
            raise SystemExit(f"{out} was trained with {', '.join(changed)}; resume it with the same settings.")
    torch.manual_seed(0)
    model = create_model(MODELS[model_key], channels=args.channels, latent_channels=args.latent_channels)
    config = TrainConfig(epochs=100000, batch_size=args.batch_size, optimizer="adam", lr=args.lr, weight_decay=0.0,
                         grad_clip=1.0, schedule="constant", eval_batch_size=2, progress=False,
                         num_threads=args.threads)
    trainer = Trainer(model, bundle, config, out=out, task=CompressionTask(lmbda, crop=args.crop),
                      callbacks=[WallBudget(60 * args.minutes)])
    wall, cpu = time.perf_counter(), time.process_time()
    epochs_before = json.loads(budget_file.read_text())["epochs"] if resume else 0
    trainer.fit(resume=resume)
    previous = json.loads(budget_file.read_text()) if resume else {"wall_seconds": 0.0, "cpu_seconds": 0.0,
                                                                    "sessions": 0}
    budget = {"wall_seconds": previous["wall_seconds"] + time.perf_counter() - wall,
              "budget_seconds": previous.get("budget_seconds", 0) + 60 * args.minutes,
              "cpu_seconds": previous["cpu_seconds"] + time.process_time() - cpu,
              "sessions": previous["sessions"] + 1, "epochs": trainer.epoch,
              "steps": trainer.epoch * trainer.steps_per_epoch, "crop": args.crop, "batch_size": args.batch_size,
              "lr": args.lr, "channels": args.channels, "latent_channels": args.latent_channels,
              "load_average": os.getloadavg()}
    budget_file.write_text(json.dumps(budget, indent=1))
    print(f"{out}: epochs {epochs_before} -> {trainer.epoch}, {budget['wall_seconds'] / 60:.1f} min in all")
    return budget


def psnr_uint8(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean().item()
    return 10 * np.log10(255**2 / max(mse, 1e-12))


def pillow_codec(image: torch.Tensor, fmt: str, quality: int) -> tuple[int, torch.Tensor]:
    """(file bytes, decoded image) of Pillow's JPEG (optimised Huffman tables, 4:2:0) or WebP (method 6)."""
    from PIL import Image

    buffer = io.BytesIO()
    options = {"optimize": True} if fmt == "JPEG" else {"method": 6}
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, fmt, quality=quality, **options)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return buffer.tell(), torch.from_numpy(decoded.copy()).permute(2, 0, 1)


def measure_classical(images, fmt: str, qualities) -> list[dict]:
    """Mean bpp and PSNR of Pillow's codec at each quality; kept in runs/kodak-FMT.json (Pillow's output for a
    quality does not change between runs of one installation)."""
    from PIL import __version__ as pillow

    cache = REPO / "runs" / f"kodak-{fmt.lower()}.json"
    key = {"qualities": list(qualities), "images": len(images), "pillow": pillow}
    if cache.is_file() and json.loads(cache.read_text())["key"] == key:
        return json.loads(cache.read_text())["rows"]
    rows = []
    for quality in qualities:
        sizes, psnrs = [], []
        for image in images:
            size, decoded = pillow_codec(image, fmt, quality)
            sizes.append(8 * size / (image.shape[1] * image.shape[2]))
            psnrs.append(psnr_uint8(decoded, image))
        rows.append({"quality": quality, "bpp": float(np.mean(sizes)), "psnr": float(np.mean(psnrs))})
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps({"key": key, "rows": rows}, indent=1))
    return rows


def measure_learned(model_key: str, lmbda: float, images, budget: dict, threads: int) -> dict:
    """Every Kodak image through a real .cnk file: bpp of the files, PSNR, seconds to encode and to decode. Kept in
    the run folder (kodak.json) for the epoch it measured, so a report reruns only what training changed."""
    from cnnkit.compress import compress_image, decompress
    from cnnkit.compress.model import pad_to_multiple
    from cnnkit.runs import load_model_checkpoint

    out = run_folder(model_key, lmbda)
    cache = out / "kodak.json"
    if cache.is_file() and json.loads(cache.read_text())["epochs"] == budget["epochs"]:
        return json.loads(cache.read_text())
    model, _ = load_model_checkpoint(out)
    model.eval()
    tables = model.entropy_model.coding_tables()
    bpps, psnrs, encode, decode, encode_cpu, decode_cpu, exact = [], [], [], [], [], [], True
    for index, image in enumerate(images):
        # Wall and CPU time: on a shared machine the wall time mostly measures the other processes.
        start, start_cpu = time.perf_counter(), time.process_time()
        data = compress_image(model, image, tables)
        middle, middle_cpu = time.perf_counter(), time.process_time()
        decoded = decompress(model, data, tables)
        encode.append(middle - start)
        decode.append(time.perf_counter() - middle)
        encode_cpu.append(middle_cpu - start_cpu)
        decode_cpu.append(time.process_time() - middle_cpu)
        bpps.append(8 * len(data) / (image.shape[1] * image.shape[2]))
        psnrs.append(psnr_uint8(decoded, image))
        if index == 0:  # the file decodes to exactly the model's own quantised reconstruction
            with torch.no_grad():
                x = image.float()[None] / 255
                direct = model(pad_to_multiple(x, model.downsampling)).reconstruction
                direct = (direct[0, :, :image.shape[1], :image.shape[2]].clamp(0, 1) * 255).round().to(torch.uint8)
            exact = bool(torch.equal(direct, decoded))
    result = {"model": MODELS[model_key], "lmbda": lmbda, "epochs": budget["epochs"], "steps": budget["steps"],
              "bpp": float(np.mean(bpps)), "psnr": float(np.mean(psnrs)), "encode_seconds": float(np.mean(encode)),
              "decode_seconds": float(np.mean(decode)), "encode_cpu_seconds": float(np.mean(encode_cpu)),
              "decode_cpu_seconds": float(np.mean(decode_cpu)), "exact_round_trip": exact, "threads": threads,
              "load_average": os.getloadavg()}
    cache.write_text(json.dumps(result, indent=1))
    print(f"{MODELS[model_key]} λ={lmbda:g}: {result['bpp']:.3f} bpp, {result['psnr']:.2f} dB, encode "
          f"{result['encode_seconds']:.2f} s, decode {result['decode_seconds']:.2f} s per image")
    return result


def at_rates(name: str, rows: list[dict]) -> list[float | None]:
    """PSNR at RATES, interpolated linearly in log(bpp) along a curve; None outside its measured range, and
    None everywhere (said on the console) for points whose PSNR does not rise with the rate, as the BD figures."""
    from cnnkit.compress.bdrate import check_rises
    from cnnkit.errors import CnnkitError

    try:
        check_rises(name, [r["bpp"] for r in rows], [r["psnr"] for r in rows])
    except CnnkitError as exc:
        print(f"{name}: no PSNR at fixed rates: {exc}")
        return [None] * len(RATES)
    bpp = np.log([r["bpp"] for r in rows])
    psnr = np.array([r["psnr"] for r in rows])
    order = np.argsort(bpp)
    return [float(np.interp(np.log(rate), bpp[order], psnr[order])) if bpp.min() <= np.log(rate) <= bpp.max()
            else None for rate in RATES]


def evaluate(models: list[str], lambdas: list[float], args) -> None:
    from cnnkit.compress import load_photo_folder
    from cnnkit.compress.bdrate import bd_psnr, bd_rate

    images = load_photo_folder("kodak24")
    curves = {}
    for model_key in models:
        rows = []
        for lmbda in lambdas:
            budget_file = run_folder(model_key, lmbda) / "budget.json"
            if not budget_file.is_file():
                print(f"no trained run in {run_folder(model_key, lmbda)}; train it first (--stage train)")
                continue
            budget = json.loads(budget_file.read_text())
            rows.append({**measure_learned(model_key, lmbda, images, budget, args.threads), "budget": budget})
        if rows:
            curves[MODELS[model_key]] = sorted(rows, key=lambda r: r["bpp"])
    if args.skip_report:
        return
    jpeg = measure_classical(images, "JPEG", JPEG_QUALITIES)
    from PIL import features

    webp = measure_classical(images, "WEBP", WEBP_QUALITIES) if features.check("webp") else []
    anchors = {"JPEG (Pillow, optimize=True)": jpeg, **({"WebP (Pillow, method 6)": webp} if webp else {})}
    load = os.getloadavg()
    common = dict(data="kodak24", eval_images=len(images), runs=1, load_average=round(load[0], 2))

    print(f"\nKodak24, {len(images)} full-size images, PSNR-RGB averaged, bpp from whole files")
    print(f"{'codec':<44} {'bpp':>6} {'PSNR':>6} {'JPEG@bpp':>8} {'gap':>6} {'enc s':>6} {'dec s':>6} {'train':>12}")
    jpeg_bpp = np.log([r["bpp"] for r in jpeg])
    jpeg_psnr = np.array([r["psnr"] for r in jpeg])
    for name, rows in curves.items():
        for r in rows:
            at_jpeg = float(np.interp(np.log(r["bpp"]), jpeg_bpp, jpeg_psnr))
            b = r["budget"]
            print(f"{name + ' λ=' + format(r['lmbda'], 'g'):<44} {r['bpp']:>6.3f} {r['psnr']:>6.2f} {at_jpeg:>8.2f} "
                  f"{r['psnr'] - at_jpeg:>+6.2f} {r['encode_seconds']:>6.2f} {r['decode_seconds']:>6.2f} "
                  f"{b['wall_seconds'] / 60:>5.1f} min {b['steps']:>4} st")
            variant = (f"{name} N={b['channels']} M={b['latent_channels']} lambda={r['lmbda']:g} "
                       f"crop={b['crop']} {b['wall_seconds'] / 60:.0f}min")
            train = dict(train_seconds=round(b["wall_seconds"], 1), train_cpu_seconds=round(b["cpu_seconds"], 1),
                         train_budget_seconds=b.get("budget_seconds"),
                         train_steps=b["steps"], batch_size=b["batch_size"], crop=b["crop"], train_data="cbsd432")
            record("kodak_rd", variant, "psnr_db", round(r["psnr"], 3), bpp=round(r["bpp"], 4),
                   baseline="jpeg-pillow optimize=True at the same bpp", baseline_value=round(at_jpeg, 3),
                   jpeg_ahead_db=round(at_jpeg - r["psnr"], 2), **train, **common)
            timing = {**common, "threads": r["threads"], "load_average": round(r["load_average"][0], 2)}
            for step in ("encode", "decode"):
                cpu = r.get(f"{step}_cpu_seconds")
                record("kodak_rd", variant, f"{step}_seconds", round(r[f"{step}_seconds"], 3),
                       **({"cpu_seconds": round(cpu, 3)} if cpu is not None else {}),
                       **({"exact_round_trip": r["exact_round_trip"]} if step == "decode" else {}), **timing)
    for label, rows in anchors.items():
        for r in rows:
            print(f"{label + ' q' + str(r['quality']):<44} {r['bpp']:>6.3f} {r['psnr']:>6.2f}")
            record("kodak_rd", f"{label.split(' ')[0].lower()}-pillow quality {r['quality']}", "psnr_db",
                   round(r["psnr"], 3), bpp=round(r["bpp"], 4), **common)

    print(f"\nPSNR (dB) at {', '.join(f'{r:g}' for r in RATES)} bpp (interpolated in log-rate; - outside the curve)")
    table = {name: at_rates(name, rows) for name, rows in {**curves, **anchors}.items()}
    for name, values in {**table, **{k + " [published]": v for k, v in PUBLISHED.items()}}.items():
        print(f"{name:<58} " + "  ".join("   -  " if v is None else f"{v:6.2f}" for v in values))
    for name, values in table.items():
        for rate, value in zip(RATES, values):
            if value is not None:
                record("kodak_rd", name, f"psnr_db_at_{rate:g}bpp", round(value, 3), **common)
    for name, values in PUBLISHED.items():  # quoted beside ours, so the README's comparison has its source
        for rate, value in zip(RATES, values):
            record("kodak_rd", name, f"psnr_db_at_{rate:g}bpp", value, data="kodak24", runs=0,
                   source="published: CompressAI's results/image/kodak (not measured here)")

    print("\nBjøntegaard deltas against JPEG (negative BD-rate: fewer bits for the same PSNR), piecewise cubic "
          "(pchip) as JVET computes them; Bjøntegaard's single cubic beside, for comparison")
    from cnnkit.compress.bdrate import overlap

    for name, rows in {**curves, **({"WebP (Pillow, method 6)": webp} if webp else {})}.items():
        rate, psnr = [r["bpp"] for r in rows], [r["psnr"] for r in rows]
        for metric, function, unit in (("bd_rate_vs_jpeg_percent", bd_rate, "%"), ("bd_psnr_vs_jpeg_db", bd_psnr,
                                                                                    "dB")):
            try:
                delta = function([r["bpp"] for r in jpeg], jpeg_psnr, rate, psnr)
                cubic = function([r["bpp"] for r in jpeg], jpeg_psnr, rate, psnr, method="cubic")
            except Exception as exc:  # noqa: BLE001 -- too few points or no overlap: say so, keep the rest
                print(f"{name:<44} {metric}: {exc}")
                continue
            shared = (overlap(jpeg_psnr, psnr) if metric.startswith("bd_rate")
                      else tuple(np.exp(overlap(jpeg_bpp, np.log(rate)))))
            print(f"{name:<44} {metric}: {delta:+.2f} {unit} (single cubic: {cubic:+.2f} {unit}) over "
                  f"{shared[0]:.3g}..{shared[1]:.3g} {'dB' if metric.startswith('bd_rate') else 'bpp'}")
            # Gaps as positive figures too, so a sentence can quote "x % fewer bits" or "JPEG x dB ahead".
            saved = {"fewer_bits_percent": round(-delta, 2)} if metric.startswith("bd_rate") and delta < 0 else {}
            saved |= {"jpeg_ahead_db": round(-delta, 2)} if metric.startswith("bd_psnr") and delta < 0 else {}
            saved |= ({"single_cubic_fewer_bits_percent": round(-cubic, 2)} if metric.startswith("bd_rate")
                      and cubic < 0 else {})
            record("kodak_rd", name, metric, round(delta, 3), **saved, method="pchip",
                   single_cubic_value=round(cubic, 3), overlap=[round(v, 3) for v in shared], **common)
    figure(curves, anchors, REPO / "docs" / "images" / "kodak_rd.png", load)


def figure(curves: dict, anchors: dict, path: Path, load) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.viz import plots

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for (label, rows), style in zip(anchors.items(), ("s-", "^-")):
        ax.plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], style, color="grey" if "JPEG" in label
                else "C2", label=label)
    for (label, rows), colour in zip(curves.items(), ("C0", "C3")):
        budget = rows[0]["budget"]
        # Runs extended one at a time (--resume on one λ) have budgets of their own: each point says its own.
        walls = sorted({round(r["budget"]["wall_seconds"] / 60) for r in rows})
        wall = f"~{walls[0]}" if len(walls) == 1 else f"{walls[0]}-{walls[-1]}"
        steps = sorted({r["steps"] for r in rows})
        ax.plot([r["bpp"] for r in rows], [r["psnr"] for r in rows], "o-", color=colour,
                label=f"{label} (N={budget['channels']}, M={budget['latent_channels']}; per λ {wall} min wall, "
                      f"{steps[0]}-{steps[-1]} steps)")
        for r in rows:
            ax.annotate(f"λ={r['lmbda']:g}" + (f", {r['budget']['wall_seconds'] / 60:.0f} min" if len(walls) > 1
                                                else ""), (r["bpp"], r["psnr"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, color=colour)
    for (label, values), style in zip(PUBLISHED.items(), ("P:", "X:")):
        ax.plot(RATES, values, style, color="black", alpha=0.6, label=label + ", published")
    ax.set(xlabel="bits per pixel (whole files, headers included)", ylabel="PSNR-RGB (dB), mean of 24 images",
           title=f"Kodak24, full size; training on a shared 2-core CPU (load {load[0]:.1f})", xlim=(0, 2.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    plots.save(fig, path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="factorized,hyperprior")
    parser.add_argument("--lambdas", default="0.004,0.015,0.05")
    parser.add_argument("--stage", choices=("all", "train", "eval"), default="all")
    parser.add_argument("--minutes", type=float, default=7.0, help="training wall time per codec (per session)")
    parser.add_argument("--resume", action="store_true", help="continue existing runs for another --minutes")
    parser.add_argument("--crop", type=int, default=128, help="training crop (256 in the papers)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--channels", type=int, default=64, help="N (128 in the paper)")
    parser.add_argument("--latent-channels", type=int, default=96, help="M (192 in the paper)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-report", action="store_true",
                        help="measure the learned codecs (kept in their run folders) without the report")
    parser.add_argument("--val-images", type=int, default=6, help="CBSD68 photos validated on after each epoch")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",")]
    lambdas = [float(v) for v in args.lambdas.split(",")]
    if args.stage in ("all", "train"):
        from cnnkit.compress import load_photos

        bundle = load_photos("cbsd432")
        bundle.test = bundle.test.subset(range(args.val_images))
        for model_key in models:
            for lmbda in lambdas:
                train(model_key, lmbda, bundle, args)
    if args.stage in ("all", "eval"):
        evaluate(models, lambdas, args)


if __name__ == "__main__":
    main()
