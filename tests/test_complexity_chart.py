"""benchmarks/complexity_chart.py: its table is the architecture calculator's, its check can fail, its chart draws."""

import json
from pathlib import Path

from cnnkit.analysis import summary
from helpers import load_benchmark

REPO = Path(__file__).resolve().parents[1]


def _chart_module():
    return load_benchmark("complexity_chart")


def test_rows_hold_the_calculators_figures_and_every_accuracy_has_a_source():
    chart = _chart_module()
    rows = chart.build_rows(["resnet18", "googlenet", "efficientnet_lite0"])
    assert [row.published.model for row in rows] == ["googlenet", "resnet18", "efficientnet_lite0"]
    for row in rows:
        report = summary(row.published.model, (3, 224, 224), num_classes=1000, **dict(row.published.build))
        assert (row.params, row.macs) == (report.totals["params"], report.totals["macs"])
        assert row.params_ok, row
    by_name = {row.published.model: row for row in rows}
    assert by_name["resnet18"].params == 11_689_512  # torchvision's count, exactly
    assert 1.7e9 < by_name["resnet18"].macs < 1.9e9  # torchvision's card: 1.81 GFLOPS (multiply-adds)
    assert "resnet18" in chart.format_table(rows).lower().replace("-", "")
    assert all(p.top1_source and p.params_source and 50 < p.top1 < 90 for p in chart.PUBLISHED)


def test_the_parameter_check_fails_on_a_wrong_count(tmp_path):
    chart = _chart_module()
    googlenet = next(p for p in chart.PUBLISHED if p.model == "googlenet")
    with_training_heads = chart.Published(**{**googlenet.__dict__, "build": ()})  # 13.4M: the auxiliary heads
    row = chart.Row(with_training_heads, summary("googlenet", (3, 224, 224), num_classes=1000).totals["params"], 0)
    assert not row.params_ok
    out = chart.draw_chart(chart.build_rows(["resnet18", "googlenet"]), tmp_path / "chart.png")
    assert out.stat().st_size > 10_000


def test_the_recorded_lines_match_the_calculator():
    recorded = {}
    for line in (REPO / "benchmarks" / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["benchmark"] == "complexity_accuracy":
            recorded[row["variant"]] = row
    assert {"resnet50", "vgg16", "alexnet_owt", "googlenet"} <= set(recorded)
    report = summary("resnet50", (3, 224, 224), num_classes=1000)
    assert recorded["resnet50"]["params"] == report.totals["params"]
    assert recorded["resnet50"]["value"] == round(report.totals["macs"] / 1e9, 3)
