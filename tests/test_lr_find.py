"""The learning-rate range test (issue 22: `cnnkit lr-find`): an exponential ramp through the Trainer's own
batch loop, a smoothed loss, a stop at divergence, a plot, a suggestion, and the weights left as they were."""

import math

import pytest
import torch

from cnnkit import TrainConfig, create_model
from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.train.lr_find import lr_find, suggestions
from helpers import bar_dataset


def test_range_test_suggests_a_sensible_rate_and_restores_the_weights(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet5_relu", num_classes=2)  # no batch norm: too large a rate makes it diverge
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = bar_dataset(n_train=256, n_test=8, size=32)
    config = TrainConfig(optimizer="sgd", momentum=0.9, batch_size=16, weight_decay=0.0, progress=False,
                         num_threads=1)
    result = lr_find(model, data, config, start_lr=1e-5, end_lr=100.0, steps=120)

    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # weights and batch-norm statistics restored
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:])]
    assert ratios == pytest.approx([(1e7) ** (1 / 119)] * len(ratios))  # exponential, first group's rate
    assert result.lrs[0] == pytest.approx(1e-5)
    # SGD with momentum on LeNet blows up well before lr 100: the test stops early, at divergence
    assert result.stopped in ("diverged", "non-finite loss") and len(result.lrs) < 120
    assert result.smoothed[-1] > min(result.smoothed) or not math.isfinite(result.smoothed[-1])
    # a sensible rate for SGD + momentum on LeNet (0.01-0.1 train it well), below the edge of divergence
    assert 1e-3 <= result.suggestion <= 1.0, result.describe()
    assert result.suggestion < result.lrs[-1]
    assert result.plot(tmp_path / "lr.png").stat().st_size > 10_000


def test_suggestions_on_a_known_curve():
    lrs = [10 ** (-6 + 6 * i / 99) for i in range(100)]  # 1e-6 .. 1
    # flat, then a fall steepest at 1e-3, a minimum at 1e-1, then a rise
    smoothed = [2 - math.tanh(3 * (math.log10(lr) + 3)) + max(0.0, math.log10(lr) + 1) ** 2 * 20 for lr in lrs]
    lr_min, lr_steep = suggestions(lrs, smoothed)
    assert lr_steep == pytest.approx(1e-3, rel=0.2)
    assert 1e-3 <= lr_min <= 2e-2  # the minimum, where tanh has flattened, over 10


def test_bad_ranges_are_refused():
    model = create_model("mnist_fast_cnn", num_classes=2, widths=(4, 4))
    data = bar_dataset(n_train=32, n_test=8, size=28)
    with pytest.raises(CnnkitError, match="start_lr < end_lr"):
        lr_find(model, data, start_lr=1.0, end_lr=0.1)
    with pytest.raises(CnnkitError, match="at least 2 steps"):
        lr_find(model, data, steps=1)


def test_lr_find_command_writes_the_plot_and_prints_the_suggestion(monkeypatch, tmp_path, capsys):
    import dataclasses

    import cnnkit.data

    bundle = dataclasses.replace(bar_dataset(n_train=128, n_test=8, size=28), name="mnist")
    monkeypatch.setattr(cnnkit.data, "load_dataset", lambda *args, **kwargs: bundle)
    plot = tmp_path / "lr.png"
    assert main(["lr-find", "mnist_fast_cnn", "--data", "mnist", "--steps", "30", "--batch-size", "16",
                 "--start-lr", "1e-3", "-o", str(plot), "--no-progress", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "mnist_fast_cnn default recipe's settings" in out and "suggested learning rate" in out
    assert "--lr" in out and plot.is_file()
