"""Complexity against accuracy (notes 000/002, after Canziani, Paszke & Culurciello 2017, "An analysis of deep
neural network models for practical applications", Fig. 2): the zoo's ImageNet networks as bubbles, x the
multiply-accumulates of one image, y the published top-1 accuracy, bubble area the parameters.

The MACs and parameters are cnnkit's architecture calculator's (cnnkit.analysis.summary, 1000 classes), nothing
here is typed in; the accuracies are published ones, each with its source in PUBLISHED below. The script also
checks the calculator's parameter counts against the published ones and fails if one is off by more than the
stated tolerance.

    python benchmarks/complexity_chart.py                       # table, check, docs/images/complexity_accuracy.png
    python benchmarks/complexity_chart.py --models resnet18 vgg16 --no-record
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TORCHVISION = "torchvision model card (IMAGENET1K_V1 weights: resize 256, centre crop 224, one crop)"


@dataclasses.dataclass(frozen=True)
class Published:
    model: str  # cnnkit zoo name
    label: str
    input_side: int  # the side the accuracy was measured at (the calculator counts MACs there too)
    top1: float  # % on the ILSVRC-2012 validation set
    top1_source: str
    params_millions: tuple[float, float]  # the published parameter count, as a range where sources differ
    params_source: str
    build: tuple = ()  # (argument, value) pairs for the zoo builder, e.g. GoogLeNet without its training heads


PUBLISHED = [
    Published("alexnet", "AlexNet (2 towers)", 224, 59.3,
              "Krizhevsky et al. 2012, Table 2: 1 CNN, 40.7% top-1 error (10-crop testing, section 4.1)",
              (60.0, 61.0), "Krizhevsky et al. 2012, section 1: '60 million parameters'"),
    Published("alexnet_owt", "AlexNet (1 tower)", 224, 56.522, TORCHVISION, (61.1, 61.1), TORCHVISION),
    Published("vgg11", "VGG-11", 224, 69.020, TORCHVISION, (132.9, 132.9), TORCHVISION),
    Published("vgg13", "VGG-13", 224, 69.928, TORCHVISION, (133.0, 133.0), TORCHVISION),
    Published("vgg16", "VGG-16", 224, 71.592, TORCHVISION, (138.4, 138.4), TORCHVISION),
    Published("vgg19", "VGG-19", 224, 72.376, TORCHVISION, (143.7, 143.7), TORCHVISION),
    Published("googlenet", "GoogLeNet", 224, 69.778, TORCHVISION, (6.6, 7.0),
              "torchvision model card 6.6M; Szegedy et al. 2015, Table 1, its params column: ~7M (both without "
              "the auxiliary classifiers, which section 5 discards at inference)", build=(("aux_logits", False),)),
    Published("resnet18", "ResNet-18", 224, 69.758, TORCHVISION, (11.7, 11.7), TORCHVISION),
    Published("resnet34", "ResNet-34", 224, 73.314, TORCHVISION, (21.8, 21.8), TORCHVISION),
    Published("resnet50", "ResNet-50", 224, 76.130, TORCHVISION, (25.6, 25.6), TORCHVISION),
    Published("resnet101", "ResNet-101", 224, 77.374, TORCHVISION, (44.5, 44.5), TORCHVISION),
    Published("resnet152", "ResNet-152", 224, 78.312, TORCHVISION, (60.2, 60.2), TORCHVISION),
    Published("xception", "Xception (299 px)", 299, 79.0, "Chollet 2017, Table 1 (299x299, one crop)",
              (22.855952, 22.855952), "Chollet 2017, Table 3: 22,855,952"),
    Published("efficientnet_lite0", "EfficientNet-Lite0", 224, 75.1,
              "tensorflow/tpu models/official/efficientnet/lite/README.md (float checkpoint)",
              (4.7, 4.7), "tensorflow/tpu models/official/efficientnet/lite/README.md: 4.7M"),
]
# A published count given to one decimal of a million is within 0.05M; the two-decimal GoogLeNet range is wider.
PARAMS_TOLERANCE_MILLIONS = 0.051


@dataclasses.dataclass
class Row:
    published: Published
    params: int  # the calculator's
    macs: int  # the calculator's, one image at published.input_side

    @property
    def params_ok(self) -> bool:
        low, high = self.published.params_millions
        return low - PARAMS_TOLERANCE_MILLIONS <= self.params / 1e6 <= high + PARAMS_TOLERANCE_MILLIONS


def build_rows(models: list[str] | None = None) -> list[Row]:
    """The calculator's parameters and MACs of each model in PUBLISHED (or of ``models``), at the input side
    its accuracy was measured at, built for ImageNet's 1000 classes."""
    from cnnkit.analysis import summary

    entries = [p for p in PUBLISHED if models is None or p.model in models]
    unknown = set(models or ()) - {p.model for p in entries}
    if unknown:
        raise SystemExit(f"no published accuracy here for {sorted(unknown)}; known: {[p.model for p in PUBLISHED]}")
    rows = []
    for entry in entries:
        report = summary(entry.model, (3, entry.input_side, entry.input_side), num_classes=1000, **dict(entry.build))
        rows.append(Row(entry, report.totals["params"], report.totals["macs"]))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [f"{'model':<20} {'input':>5} {'GMACs':>7} {'params (M)':>10} {'published':>11} {'top-1 %':>8}  source",
             "-" * 120]
    for row in rows:
        p = row.published
        published = (f"{p.params_millions[0]:g}" if p.params_millions[0] == p.params_millions[1]
                     else f"{p.params_millions[0]:g}-{p.params_millions[1]:g}")
        lines.append(f"{p.label:<20} {p.input_side:>5} {row.macs / 1e9:>7.2f} {row.params / 1e6:>10.2f} "
                     f"{published + ('' if row.params_ok else ' !!'):>11} {p.top1:>8.2f}  {p.top1_source}")
    return "\n".join(lines)


def draw_chart(rows: list[Row], out: Path) -> Path:
    """The bubble chart: x GMACs (log scale), y top-1, bubble area proportional to the parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    figure, axis = plt.subplots(figsize=(9, 6))
    colours = plt.cm.tab20(range(len(rows)))
    placed: list[tuple[float, float]] = []
    for row, colour in zip(rows, colours):
        x, y = row.macs / 1e9, row.published.top1
        axis.scatter(x, y, s=row.params / 1e6 * 12, color=colour, alpha=0.55, edgecolors="black", linewidths=0.6)
        # Labels go above their bubble; one that would overlap a label already placed (ResNet-18 beside
        # GoogLeNet) goes to the right of it instead.
        radius = 2 + math.sqrt(row.params / 1e6 * 12) / 2
        crowded = any(abs(math.log10(x / px)) < 0.08 and abs(y - py) < 2 for px, py in placed)
        axis.annotate(row.published.label, (x, y), xytext=(radius + 2, -3) if crowded else (0, radius + 2),
                      textcoords="offset points", ha="left" if crowded else "center", fontsize=8)
        placed.append((x, y))
    for millions in (5, 25, 100):  # the legend: what a bubble's area means
        axis.scatter([], [], s=millions * 12, color="grey", alpha=0.4, label=f"{millions}M parameters")
    axis.legend(loc="lower right", labelspacing=2.2, borderpad=1.2, fontsize=8, frameon=False)
    axis.set_xscale("log")
    axis.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_xlabel("multiply-accumulates per image, GMACs (cnnkit.analysis; log scale)")
    axis.set_ylabel("published ImageNet top-1 accuracy, %")
    axis.set_title("Complexity against accuracy (after Canziani et al. 2017): the cnnkit zoo", fontsize=11)
    axis.grid(True, which="both", alpha=0.3)
    axis.set_ylim(54, 82)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", help="zoo names (default: every one in PUBLISHED)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "complexity_accuracy.png")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    rows = build_rows(args.models)
    print(format_table(rows))
    print(f"chart: {draw_chart(rows, args.out)}")
    if not args.no_record:
        for row in rows:
            p = row.published
            record("complexity_accuracy", p.model, "gmacs", round(row.macs / 1e9, 3), params=row.params,
                   input_size=p.input_side, published_top1=p.top1, top1_source=p.top1_source,
                   note="MACs and parameters from cnnkit.analysis.summary (1000 classes); top-1 is the published "
                        "figure, not measured here")
    wrong = [row for row in rows if not row.params_ok]
    if wrong:
        raise SystemExit("parameter counts off the published ones: " + ", ".join(
            f"{row.published.model} {row.params:,} (published {row.published.params_millions}M)" for row in wrong))
    print(f"all {len(rows)} parameter counts match the published ones (within {PARAMS_TOLERANCE_MILLIONS}M)")


if __name__ == "__main__":
    main()
