"""The figures README.md and the recipe headers quote are benchmarks/results.jsonl's: the generated ones are the
latest lines' (benchmarks/report.py writes them), and every other measured figure they quote is found in some
line, or is derived from lines here, or is listed below as not a measurement. A stale or unrecorded claim fails.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from helpers import load_benchmark

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.jsonl"
# A figure with a unit that a benchmark measures: accuracy and other percentages, seconds, images per second,
# decibels, bits per pixel, speed-up factors, GFLOP/s, minutes ("16.7k img/s" is 16,700).
FIGURE = re.compile(r"(?<![\w.\-])(\d[\d,]*(?:\.\d+)?)(k?)\s?(%|s\b|img/s|dB\b|bpp\b|x\b|GFLOP/s|min\b)")
GENERATED = re.compile(r"<!-- results\.jsonl: [\w-]+ -->.*?<!-- end -->", re.S)
# Figures that no benchmark line holds, each with the reason (figure as quoted -> why): targets, papers' results
# and settings, and one one-off timing quoted from a docstring, named as such where the README quotes it.
NOT_MEASURED = {
    "90.6 %": "the issue's target for CIFAR-10 (recipes/cifar10_fast.yaml)",
    "90.7 %": "airbench94_muon's published accuracy on the CIFAR-10 JPEG copy, the GPU check's target (issue 28)",
    "1.76 s": "airbench94_muon's published time a run on one H100, the GPU check's target (issue 28)",
    "64x": "a setting of recipes/cifar10_fast.yaml (BatchNorm shifts at 64x the learning rate)",
    "4 s": "issue 28's target for MNIST (README, speed)",
    "60x": "issue 28's target for MNIST against PyTorch's example (README, speed)",
    "45 s": "issue 28's target for Fashion-MNIST (README, speed)",
    "400 s": "a setting: the time cap of the Fashion-MNIST benchmark's standard way (README, speed)",
    "3.7x": "a one-off timing of the crop (37 ms against 10 ms) quoted in cnnkit/data/augment.py",
    "91.25 %": "He et al.'s ResNet-20 figure on the official CIFAR-10 (recipes/resnet20_cifar10.yaml)",
    "98 %": "what tests/test_mnist_real.py asserts after one epoch",
    "10x": "how much times vary with the load (docs/applications.md), not a figure of a run",
    "23.6 %": "Wu & He 2018, Fig. 1: batch norm's ImageNet error at 32 images a GPU (README, normalisation)",
    "34.7 %": "Wu & He 2018, Fig. 1: batch norm's ImageNet error at 2 images a GPU",
    "24.1 %": "Wu & He 2018, Fig. 1: group norm's ImageNet error at 2 images a GPU",
}
# Documentation pages that say their figures are results.jsonl's, checked like README.md.
DOCS = ["docs/applications.md", "docs/zoo.md", "docs/looking_inside/README.md", "docs/kernels.md", "docs/libraries.md"]


def _rows() -> list[dict]:
    return [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]


def _row(rows, benchmark, variant, metric) -> dict:
    return [r for r in rows if (r["benchmark"], r.get("variant"), r.get("metric")) == (benchmark, variant, metric)][-1]


def _derived(rows) -> dict[str, float]:
    """Figures the README computes from several lines: figure as quoted -> its value from the lines."""
    def throughput(variant):
        return _row(rows, "throughput", variant, "train_images_per_second")["value"]

    # The seven seeds of the default full fine-tuning (seeds 1-4 were run twice; the latest line of each counts).
    seeds = list({r["full_seed"]: r["value"] for r in rows
                  if r["benchmark"] == "transfer_cifar10_1000" and "full_seed" in r}.values())
    assert len(seeds) == 7

    def batch2_seeds(norm):  # the three seeds of the zero-init group-norm sweep at batch 2 (README, normalisation)
        found = {r["seed"]: r["value"] for r in rows if r["benchmark"] == "norm_batch_size"
                 and r["variant"] == f"resnet20 {norm} norm, batch 2, cifar10-jpeg, 10 epochs, zero-init residual"}
        assert sorted(found) == [0, 1, 2]
        return list(found.values())

    return {
        "0.98 %": statistics.stdev(batch2_seeds("batch")), "1.27 %": statistics.stdev(batch2_seeds("group")),
        "1.52x": throughput("plain5-w16-bf16-NCHW") / throughput("plain5-w16-fp32-NCHW"),
        "1.39x": throughput("plain5-w16-bf16-channels_last") / throughput("plain5-w16-fp32-channels_last"),
        "1.6x": throughput("resnet20-bf16") / throughput("resnet20-fp32"),
        "0.23%": statistics.stdev(seeds), "0.23 %": statistics.stdev(seeds),
    }


def _approximate(rows) -> dict[str, tuple[float, float]]:
    """Figures quoted with '~' for a mean of several lines: figure as quoted -> (value, tolerance)."""
    seconds = list({r["full_seed"]: r["seconds"] for r in rows
                    if r["benchmark"] == "transfer_cifar10_1000" and "full_seed" in r}.values())
    return {"1,700 s": (statistics.mean(seconds), 50)}


def _report():
    return load_benchmark("report")


def _kind(name: str) -> str:
    """What a number in results.jsonl measures, from its key (or, for value/baseline_value, its metric)."""
    if "images_per_second" in name:
        return "img/s"
    if "second" in name:
        return "s"
    if "ratio" in name or "speedup" in name:
        return "x"
    return "other"


# Which kinds of recorded numbers a quoted unit may match: seconds only seconds, and so on, so that a figure is
# not "found" in an unrelated column by chance.
UNIT_KINDS = {"s": {"s"}, "min": {"s"}, "img/s": {"img/s"}, "x": {"x"}, "%": {"other"}, "dB": {"other"},
              "bpp": {"other"}, "GFLOP/s": {"other"}}


def _values(rows) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"img/s": [], "s": [], "x": [], "other": []}

    def walk(x, kind):
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)):
            found[kind].append(float(x))
        elif isinstance(x, list):
            for value in x:
                walk(value, kind)
        elif isinstance(x, dict):
            for key, value in x.items():
                walk(value, kind if key in ("value", "baseline_value") else _kind(key))

    for row in rows:
        for key, value in row.items():
            walk(value, _kind(str(row.get("metric", ""))) if key in ("value", "baseline_value") else _kind(key))
    return found


def quoted_figures(text: str, comments_only: bool = False):
    """(line number, figure as quoted, unit, value, half a unit of its last digit) outside generated blocks."""
    text = GENERATED.sub("", text)
    for number, line in enumerate(text.splitlines(), 1):
        if comments_only and not line.startswith("#"):
            continue
        for match in FIGURE.finditer(line):
            digits, thousands = match[1].replace(",", ""), 1000 if match[2] else 1
            decimals = len(digits.split(".")[1]) if "." in digits else 0
            scale = thousands * (60 if match[3] == "min" else 1)
            yield number, match[0], match[3], float(digits) * scale, 0.5 * 10 ** -decimals * scale + 1e-9


def unrecorded(text: str, rows, comments_only: bool = False) -> list[str]:
    values, derived, approximate = _values(rows), _derived(rows), _approximate(rows)
    missing = []
    for line, quoted, unit, value, half in quoted_figures(text, comments_only):
        if quoted in NOT_MEASURED:
            continue
        if quoted in approximate:
            mean, tolerance = approximate[quoted]
            if abs(mean - value) > tolerance:
                missing.append(f"line {line}: {quoted} (the lines give {mean:.4g})")
            continue
        if quoted in derived:
            if abs(derived[quoted] - value) > half:
                missing.append(f"line {line}: {quoted} (the lines give {derived[quoted]:.4g})")
            continue
        # A fraction in results.jsonl (0.92 scaling efficiency) may be quoted as a percentage (92 %).
        candidates = [v for kind in UNIT_KINDS[unit] for v in values[kind]]
        if not any(abs(v - value) <= half or unit == "%" and abs(100 * v - value) <= half for v in candidates):
            missing.append(f"line {line}: {quoted}")
    return missing


def test_generated_figures_are_the_latest_results():
    stale = [path.name for path, text in _report().quoted_files(REPO).items() if path.read_text() != text]
    assert not stale, f"{stale}: figures differ from results.jsonl's latest lines; run python benchmarks/report.py"


def test_a_new_measurement_makes_the_quoted_figure_stale(tmp_path):
    report = _report()
    rows = _rows()
    latest = report.latest_rows(RESULTS)
    readme = (REPO / "README.md").read_text()
    assert report.render_readme(readme, latest) == readme
    remeasured = {**_row(rows, "mnist_lenet5_demo", "cnnkit lenet5 recipes/lenet5_mnist.yaml (make demo)",
                         "seconds"), "value": 108.8, "date": "2026-12-05", "commit": "abc1234"}
    (tmp_path / "results.jsonl").write_text(RESULTS.read_text() + json.dumps(remeasured) + "\n")
    updated = report.render_readme(readme, report.latest_rows(tmp_path / "results.jsonl"))
    assert updated != readme and "in 109 s of training" in updated and "commit abc1234" in updated
    with pytest.raises(KeyError, match="unknown figure 'nonesuch'"):
        report.render_readme("<!-- results.jsonl: nonesuch -->1 s<!-- end -->", latest)


def test_every_figure_the_readme_quotes_is_in_results_jsonl():
    missing = unrecorded((REPO / "README.md").read_text(), _rows())
    assert not missing, "README.md quotes figures no line of benchmarks/results.jsonl has:\n" + "\n".join(missing)


@pytest.mark.parametrize("page", DOCS)
def test_every_figure_a_documentation_page_quotes_is_in_results_jsonl(page):
    missing = unrecorded((REPO / page).read_text(), _rows())
    assert not missing, f"{page} quotes figures no line of benchmarks/results.jsonl has:\n" + "\n".join(missing)


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "recipes").glob("*.yaml")))
def test_every_figure_a_recipe_header_quotes_is_in_results_jsonl(recipe):
    text = (REPO / "recipes" / recipe).read_text()
    # The '# Measured' paragraph is generated (test_generated_figures_are_the_latest_results checks it).
    text = re.sub(r"^# Measured .*?(?=^[^#])", "", text, flags=re.S | re.M)
    missing = unrecorded(text, _rows(), comments_only=True)
    assert not missing, f"recipes/{recipe} quotes figures no line of results.jsonl has:\n" + "\n".join(missing)


def test_a_figure_nobody_measured_is_caught():
    rows = _rows()
    assert unrecorded("It reaches 97.137 % in 12.345 s at 3.217k img/s.", rows) == [
        "line 1: 97.137 %", "line 1: 12.345 s", "line 1: 3.217k img/s"]
    # Quoted with less precision than recorded, as a percentage of a fraction, or with thousands separators.
    assert unrecorded("99.18 % in 65 s, 41.8x, 92 % efficiency, 1,342 img/s", rows) == []
    assert unrecorded("# 0.23 % sd\nnot a comment: 97.137 %", rows, comments_only=True) == []
