"""benchmarks/degradation.py (He et al.'s Fig. 1/6 on CIFAR-10): the networks have the depths their names say,
a run writes one training-error and one test-error row per epoch, and the plot is drawn from the rows alone."""

import json
import math

import pytest
import torch
from helpers import bar_dataset, load_benchmark
from torch import nn

from cnnkit.models import create_model
from cnnkit.viz import plot_error_curves, read_metrics


def _benchmark():
    return load_benchmark("degradation")


def _weight_layers(model: nn.Module) -> tuple[int, int]:
    return (sum(isinstance(m, nn.Conv2d) for m in model.modules()),
            sum(isinstance(m, nn.Linear) for m in model.modules()))


@pytest.mark.parametrize("name, convs", [("plain20", 19), ("resnet20", 19), ("plain56", 55), ("resnet56", 55)])
def test_the_networks_have_the_depth_of_their_names(name, convs):
    # 6n+1 3x3 convolutions and one fc layer; option-A shortcuts add no convolution, so residual and plain
    # networks of a depth have the same weight layers.
    assert _weight_layers(create_model(name, num_classes=10)) == (convs, 1)


def test_plain_and_residual_differ_only_by_the_shortcuts():
    torch.manual_seed(0)
    resnet, plain = create_model("resnet20", num_classes=10).eval(), create_model("plain20", num_classes=10).eval()
    plain.load_state_dict(resnet.state_dict())  # the same parameters, name for name
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(resnet(x), plain(x), atol=1e-4)  # identity shortcuts change what they compute


def test_a_run_writes_a_train_and_a_test_error_row_per_epoch(tmp_path):
    bench = _benchmark()
    results = tmp_path / "results.jsonl"
    args = bench.parse_args(["--network", "resnet20", "--epochs", "2", "--batch-size", "20", "--train-images", "40",
                             "--test-images", "20", "--results", str(results), "--out", str(tmp_path / "runs")])
    summaries = bench.run(args, bar_dataset(n_train=40, n_test=20, channels=3))
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["epoch"], r["metric"]) for r in rows] == [(1, "train_error"), (1, "test_error"),
                                                       (2, "train_error"), (2, "test_error")]
    assert {r["variant"] for r in rows} == {"resnet20, " + bench.setting(args)}
    assert len({r["run_started"] for r in rows}) == 1 and all(r["train_images"] == 40 for r in rows)
    # The rows are the run's own per-epoch figures (its metrics.csv), as errors.
    metrics = read_metrics(tmp_path / "runs" / "resnet20")
    assert [r["value"] for r in rows if r["metric"] == "train_error"] == pytest.approx(100 - metrics["train_acc"],
                                                                                   abs=0.01)
    assert [r["value"] for r in rows if r["metric"] == "test_error"] == pytest.approx(100 - metrics["val_acc"],
                                                                                  abs=0.01)
    assert rows[-1]["value"] == pytest.approx(100 - summaries["resnet20"]["test_acc"], abs=0.01)
    # The plot mode reads those rows back.
    curves = bench.curves_from_rows(rows, bench.setting(args))
    assert list(curves) == ["resnet20"] and curves["resnet20"]["epoch"] == [1, 2]


def _row(network, epoch, metric, value, started, setting="s"):
    return {"benchmark": "degradation", "variant": f"{network}, {setting}", "metric": metric, "value": value,
            "epoch": epoch, "run_started": started}


def test_the_plot_takes_each_networks_latest_run_and_draws_it(tmp_path):
    bench = _benchmark()
    old = [_row("plain20", e, m, 50.0, "t1") for e in (1, 2, 3) for m in ("train_error", "test_error")]
    new = [_row("plain20", 1, "train_error", 40.0, "t2"), _row("plain20", 1, "test_error", 45.0, "t2"),
           _row("plain20", 2, "train_error", 30.0, "t2")]  # interrupted before its second validation
    other = [_row("plain56", 1, "train_error", 60.0, "t1"), _row("resnet20", 1, "train_error", 1.0, "t1", "other")]
    curves = bench.curves_from_rows(old + new + other, "s")
    assert list(curves) == ["plain20", "plain56"]  # resnet20's row has another setting
    assert curves["plain20"]["epoch"] == [1, 2] and curves["plain20"]["train_error"] == [40.0, 30.0]
    assert curves["plain20"]["test_error"][0] == 45.0 and math.isnan(curves["plain20"]["test_error"][1])

    results = tmp_path / "results.jsonl"
    args = bench.parse_args(["--plot", "--results", str(results), "--picture", str(tmp_path / "d.png")])
    setting = bench.setting(args)
    rows = [_row(n, e, m, 90.0 - 10 * e, "t1", setting) for n in bench.NETWORKS for e in (1, 2, 3)
            for m in ("train_error", "test_error")]
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    picture = bench.plot(args)
    assert picture == tmp_path / "d.png" and picture.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="no 'degradation' rows"):
        bench.plot(bench.parse_args(["--plot", "--epochs", "99", "--results", str(results)]))


def test_plot_error_curves_refuses_mismatched_curves(tmp_path):
    with pytest.raises(ValueError, match="one value per epoch"):
        plot_error_curves({"p": {"a": {"epoch": [1, 2], "train_error": [3.0]}}}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one panel"):
        plot_error_curves({}, tmp_path / "x.png")
    out = plot_error_curves({"p": {"a": {"epoch": [1, 2], "test_error": [3.0, 2.0]}}}, tmp_path / "x.png")
    assert out.stat().st_size > 5_000


def test_augment_trains_as_he_et_al_and_is_part_of_the_setting(tmp_path):
    bench = _benchmark()
    common = ["--network", "plain20", "--epochs", "1", "--batch-size", "20", "--train-images", "40", "--test-images",
              "20", "--no-record", "--out", str(tmp_path / "runs")]
    plain, augmented = bench.parse_args(common), bench.parse_args(common + ["--augment"])
    # Rows of the two recipes are separate lines of the plot: the variant carries the augmentation.
    assert bench.setting(augmented) == bench.setting(plain) + ", flip + 4 px crop"
    bench.run(augmented, bar_dataset(n_train=40, n_test=20, channels=3))
    config = json.loads((tmp_path / "runs" / "plain20" / "config.json").read_text())["config"]
    assert config["augment"] == {"crop": 4, "flip": True}
