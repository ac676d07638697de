"""Loss landscape: grid shape, centre, filter normalisation, no side effects, and the curvature statistic."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.viz import (
    filter_normalized_direction,
    fixed_subset,
    landscape_statistics,
    loss_along_line,
    loss_surface,
)
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401


def tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
        nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )


@pytest.fixture(scope="module")
def setup():
    model = tiny_net()
    generator = torch.Generator().manual_seed(0)
    images, labels = torch.randn(40, 3, 8, 8, generator=generator), torch.randint(0, 4, (40,), generator=generator)
    model.train()
    model(images)  # give BN non-trivial running statistics
    batches = fixed_subset([(images[:25], labels[:25]), (images[25:], labels[25:])], 40, batch_size=16)
    return model, batches, images, labels


def test_surface_shape_centre_and_no_side_effects(setup, tmp_path):
    model, batches, images, labels = setup
    model.train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    surface = loss_surface(model, batches, resolution=5, span=0.5, points_per_pass=6, png=tmp_path / "surface.png")
    assert surface.losses.shape == (5, 5)
    assert torch.all(torch.isfinite(surface.losses))
    with torch.no_grad():
        expected = F.cross_entropy(model.eval()(images), labels)
    model.train()
    assert surface.losses[2, 2].item() == pytest.approx(expected.item(), rel=1e-5)
    assert surface.losses.min() < surface.losses.max()  # the directions do move the loss
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert model.training  # the mode is restored
    assert set(surface.statistics) == {"nonconvex_fraction", "mean_eigenvalue_ratio", "mean_abs_laplacian"}
    assert (tmp_path / "surface.png").stat().st_size > 0


def test_vectorised_grid_matches_point_by_point_evaluation(setup):
    model, batches, _, _ = setup
    batched = loss_surface(model, batches, resolution=3, points_per_pass=9, seed=3)
    one_at_a_time = loss_surface(model, batches, resolution=3, points_per_pass=1, seed=3)
    assert torch.allclose(batched.losses, one_at_a_time.losses, rtol=1e-5)


def test_filter_normalised_direction_matches_each_filters_norm(setup):
    model, _, _, _ = setup
    parameters = dict(model.named_parameters())
    direction = filter_normalized_direction(parameters, torch.Generator().manual_seed(1))
    for name, weight in parameters.items():
        if weight.ndim > 1:
            assert torch.allclose(direction[name].flatten(1).norm(dim=1), weight.detach().flatten(1).norm(dim=1),
                                  rtol=1e-5)
            assert not torch.allclose(direction[name], weight.detach())  # a random direction, not the weight
        else:  # biases and BN scale/shift stay put
            assert torch.count_nonzero(direction[name]) == 0


def test_line_between_checkpoints_passes_through_both(setup, tmp_path):
    model, batches, images, labels = setup
    trained = {name: value.clone() for name, value in model.state_dict().items()}
    other = tiny_net(seed=1)
    other.train()
    other(images)
    start = other.state_dict()
    # The live state dict, as the CLI passes it: its buffers are the ones the walk moves and restores.
    ts, losses = loss_along_line(model, start, model.state_dict(), batches, steps=5, margin=0.0,
                                 png=tmp_path / "line.png")
    assert torch.allclose(ts, torch.linspace(0, 1, 5))
    with torch.no_grad():
        at_start = F.cross_entropy(other.eval()(images), labels)
        at_end = F.cross_entropy(model.eval()(images), labels)
    assert losses[0].item() == pytest.approx(at_start.item(), rel=1e-5)
    assert losses[-1].item() == pytest.approx(at_end.item(), rel=1e-5)
    assert at_start.item() != pytest.approx(at_end.item(), rel=1e-3)  # two different points
    assert all(torch.equal(trained[name], value) for name, value in model.state_dict().items())


def test_curvature_statistic_separates_a_bowl_from_an_egg_crate():
    axis = torch.linspace(-1, 1, 21)
    x, y = torch.meshgrid(axis, axis, indexing="ij")
    step = float(axis[1] - axis[0])
    bowl = landscape_statistics(x**2 + 2 * y**2, step)
    crate = landscape_statistics(x**2 + y**2 + 0.3 * torch.sin(8 * x) * torch.sin(8 * y), step)
    assert bowl["nonconvex_fraction"] == 0.0 and bowl["mean_eigenvalue_ratio"] == pytest.approx(0.0, abs=1e-9)
    assert bowl["mean_abs_laplacian"] == pytest.approx(6.0, rel=1e-6)
    assert crate["nonconvex_fraction"] > 0.5
    assert crate["mean_eigenvalue_ratio"] > 0.3
    assert crate["mean_abs_laplacian"] > bowl["mean_abs_laplacian"]
