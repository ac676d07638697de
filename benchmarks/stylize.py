"""Time of a 384-px Gatys stylisation with the default settings (EfficientNet-Lite0, activation smoothing,
L-BFGS, 0.5 -> 1.0 multi-resolution), its loss curve, and the pictures of the README: the same stylisation
without smoothing (before) and with it (after), plus a texture from noise and a feed-forward texture sample.

    python benchmarks/stylize.py [--content tubingen.jpg --style starry_night.jpg --threads 1 --skip-pictures]

Prints the figures, appends them to benchmarks/results.jsonl and writes docs/images/style_*.jpg|png.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from cnnkit.data.image_io import load_image, resize_longer_side
from cnnkit.style import StyleConfig, build_descriptor, stylize, synthesize_texture
from cnnkit.texture import train_texture_generator

from record import record

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "images"
DOCS = REPO / "docs" / "images"


def save_jpeg(image: torch.Tensor, path: Path, quality: int = 82) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path, quality=quality)


def loss_curve(history: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cnnkit.viz import plots

    fig, ax = plt.subplots(figsize=(6, 3.4))
    steps = [row["iteration"] for row in history]
    for key in ("loss", "content", "style"):
        ax.plot(steps, [row[key] for row in history], label=key if key != "loss" else "total")
    top = max(row["loss"] for row in history)
    for size in sorted({row["size"] for row in history}):
        first = next(row["iteration"] for row in history if row["size"] == size)
        ax.axvline(first, color="grey", ls=":", lw=1)
        ax.text(first, top, f" {size} px", va="top", fontsize=8)
    ax.set(yscale="log", xlabel="loss evaluation", ylabel="loss (log)", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    plots.save(fig, path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--content", type=Path, default=IMAGES / "content" / "tubingen.jpg")
    parser.add_argument("--style", type=Path, default=IMAGES / "style" / "starry_night.jpg")
    parser.add_argument("--threads", type=int, default=1)  # 2 oversubscribes when the cores are shared
    parser.add_argument("--skip-pictures", action="store_true", help="only the timed run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    descriptor = build_descriptor("efficientnet_lite0")
    content, style = load_image(args.content, 768), load_image(args.style, 768)
    config = StyleConfig()  # the defaults: 384 px, 150 evaluations, scales 0.5 and 1
    start = time.perf_counter()
    image, history = stylize(content, style, config, descriptor)
    seconds = time.perf_counter() - start
    print(f"384-px stylisation: {seconds:.1f} s, {len(history)} loss evaluations, loss {history[0]['loss']:.4g} -> "
          f"{history[-1]['loss']:.4g} (content {history[-1]['content']:.4g}, style {history[-1]['style']:.4g})")
    data = f"{args.content.name} + {args.style.name}, {image.shape[2]}x{image.shape[1]}"
    variant = f"efficientnet_lite0, smoothing {config.resolved(descriptor).smoothing}, lbfgs, scales 0.5/1, " \
              f"{config.iterations} evaluations, {args.threads} threads"
    record("stylize_384px", variant, "seconds", round(seconds, 1), data=data, runs=1,
           final_loss=round(history[-1]["loss"], 4), first_loss=round(history[0]["loss"], 4))
    DOCS.mkdir(parents=True, exist_ok=True)
    save_jpeg(image, DOCS / "style_after_smoothing.jpg")
    loss_curve(history, DOCS / "style_loss_curve.png", f"384-px stylisation, {seconds:.0f} s on this CPU")
    with open(DOCS.parent / "style_loss_curve.csv", "w") as f:
        f.write("iteration,size,loss,content,style,tv,seconds\n")
        f.writelines(f"{r['iteration']},{r['size']},{r['loss']:.6g},{r['content']:.6g},{r['style']:.6g},"
                     f"{r['tv']:.6g},{r['seconds']}\n" for r in history)
    if args.skip_pictures:
        return

    # Before: the same run without activation smoothing.
    before, _ = stylize(content, style, dataclasses.replace(config, smoothing="none"), descriptor)
    save_jpeg(before, DOCS / "style_before_smoothing.jpg")
    save_jpeg(resize_longer_side(content, 384), DOCS / "style_content.jpg")
    save_jpeg(resize_longer_side(style, 384), DOCS / "style_style.jpg")
    coloured, _ = stylize(content, style, dataclasses.replace(config, preserve_color=True), descriptor)
    save_jpeg(coloured, DOCS / "style_preserve_color.jpg")

    texture, _ = synthesize_texture(style, 192, 192, StyleConfig(iterations=100), descriptor)
    save_jpeg(texture, DOCS / "texture_optimised.jpg")
    start = time.perf_counter()
    generator, train_history = train_texture_generator(style, descriptor, iterations=200, size=128)
    train_seconds = time.perf_counter() - start
    generator.sample(192, 384, seed=0)  # warm-up: the first call pays for allocations and kernel selection
    start = time.perf_counter()
    sample = generator.sample(192, 384, seed=1)[0]
    sample_ms = 1000 * (time.perf_counter() - start)
    save_jpeg(sample, DOCS / "texture_feedforward.jpg")
    print(f"texture generator: trained in {train_seconds:.0f} s (style loss {train_history[0]['loss']:.3g} -> "
          f"{train_history[-1]['loss']:.3g}); a 384x192 sample in {sample_ms:.0f} ms")
    record("texture_generator", "ulyanov 5 scales width 8, 200 Adam steps at 128 px", "sample_ms_384x192",
           round(sample_ms, 1), data=args.style.name, train_seconds=round(train_seconds, 1), runs=1)


if __name__ == "__main__":
    main()
