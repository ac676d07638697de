import math

import pytest
import torch

from cnnkit.errors import UnknownNameError
from cnnkit.train.optim import build_optimizer, build_schedule


def lrs(schedule_name, epochs=4, steps=10, **kw):
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, "sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = build_schedule(opt, schedule_name, epochs, steps, **kw)
    per_step = []
    for _epoch in range(epochs):
        for _ in range(steps):
            per_step.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step_batch()
        sched.step_epoch({"val_loss": 1.0})
    return per_step


def test_step_schedule_divides_by_ten_at_milestones():
    values = lrs("step", milestones=(2, 3))
    assert values[0] == pytest.approx(0.1) and values[19] == pytest.approx(0.1)
    assert values[20] == pytest.approx(0.01) and values[30] == pytest.approx(0.001)


def test_onecycle_peaks_at_its_fraction_and_ends_near_zero():
    values = lrs("onecycle", onecycle_pct=0.25)
    peak = max(range(len(values)), key=values.__getitem__)
    assert abs(peak - 10) <= 1 and values[peak] == pytest.approx(0.1, rel=1e-3)
    assert values[0] == pytest.approx(0.1 / 25) and values[-1] < 0.05 * values[peak] and min(values) > 0


def test_cosine_with_linear_warmup():
    values = lrs("cosine", warmup_epochs=1)
    assert values[0] == pytest.approx(0.01) and values[5] == pytest.approx(0.055)  # 0.01 -> 0.1 in 10 steps
    assert values[10] == pytest.approx(0.1)
    assert values[25] == pytest.approx(0.1 * (1 + math.cos(math.pi * 15 / 30)) / 2, rel=1e-6)


def test_plateau_drops_when_the_metric_stalls():
    values = lrs("plateau", epochs=6, plateau_patience=1, plateau_factor=0.1)
    assert values[0] == pytest.approx(0.1) and values[-1] < 0.01


def test_no_weight_decay_on_biases():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=5e-4)
    decays = {len(g["params"]): g["weight_decay"] for g in opt.param_groups}
    assert decays == {1: 5e-4, 3: 0.0}


def test_unknown_names():
    with pytest.raises(UnknownNameError, match="Did you mean adam"):
        build_optimizer(torch.nn.Linear(1, 1), "adma", lr=0.1)
    opt = build_optimizer(torch.nn.Linear(1, 1), "sgd", lr=0.1)
    with pytest.raises(UnknownNameError, match="Valid names"):
        build_schedule(opt, "exponential", 1, 1)


@pytest.mark.parametrize("steps", range(1, 11))
def test_onecycle_survives_very_short_runs(steps):
    values = lrs("onecycle", epochs=1, steps=steps)
    assert len(values) == steps and all(0 < v <= 0.1 + 1e-9 for v in values)


def test_nadam_is_torchs_nadam_with_the_recipe_rate_and_no_decay_on_biases():
    # The notes' Fashion-MNIST network is trained with Keras' "nadam" (recipes/fashion_cnn_notes.yaml).
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, "nadam", lr=1e-3, weight_decay=1e-4, betas=(0.9, 0.999))
    assert isinstance(opt, torch.optim.NAdam)
    decays = {tuple(p.shape): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert decays == {(2, 3): 1e-4, (2,): 0.0}
    assert all(g["lr"] == 1e-3 and g["betas"] == (0.9, 0.999) for g in opt.param_groups)
    # one step moves every weight against its gradient's sign by about the rate (Adam-like normalisation)
    before = model.weight.detach().clone()
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    step = model.weight.detach() - before
    assert torch.all(step < 0) and torch.allclose(step.abs(), torch.full_like(step, step.abs().mean()), rtol=1e-3)
