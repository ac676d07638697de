"""The notes' toy example (002, X or O, here X / O / "/" / "\\"): a network with one layer of four 3x3 filters
learns the glyphs through the one Trainer; each learned filter is matched to the hand-designed 3x3 kernel it
correlates with best (the notes' "\\", "/" and "x" features, Sobel and Prewitt edges).

Prints, per seed, the test accuracy, the training time and each filter's best match with its correlation; appends
them to benchmarks/results.jsonl; draws the first seed's filters beside their matches (docs/images/glyph_filters.png,
not a chosen seed).

    python benchmarks/glyph_filters.py                  # seeds 0, 1, 2; seconds each
    python benchmarks/glyph_filters.py --seeds 0 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from record import record  # noqa: E402

from cnnkit.viz.glyphs import glyph_filter_figure, match_filters, train_glyph_network  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--filters", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "glyph_filters.png")
    parser.add_argument("--no-record", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args()
    for seed in args.seeds:
        load_before = os.getloadavg()[0]
        result = train_glyph_network(args.filters, args.epochs, seed=seed)
        matches = match_filters(result.filters)
        best = ", ".join(f"{m.learned}: {m.kernel} r={m.correlation:.2f}" for m in matches)
        print(f"seed {seed}: test accuracy {result.test_acc:.2f}% after {args.epochs} epochs in {result.seconds:.1f} s "
              f"(load {load_before:.1f}); best matches {best}")
        if seed == args.seeds[0]:
            print(f"figure: {glyph_filter_figure(result, matches, args.out)}")
        if not args.no_record:
            record("glyph_filters", f"{args.filters}x3x3-seed{seed}", "accuracy", round(result.test_acc, 2),
                   seconds=round(result.seconds, 1), epochs=args.epochs, train_images=2000, test_images=500,
                   data="glyphs (cnnkit.data.glyphs, 12x12, noise 0.03)",
                   best_matches=[{"filter": m.learned, "kernel": m.kernel, "correlation": round(m.correlation, 3)}
                                 for m in matches],
                   max_correlation=round(max(m.correlation for m in matches), 3),
                   load_average=[round(load_before, 2), round(os.getloadavg()[0], 2)],
                   note="1 thread; 2-core machine shared with other jobs", runs=1)


if __name__ == "__main__":
    main()
