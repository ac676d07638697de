"""Activation maximisation: it must actually raise the unit, and its prior must keep the image smooth."""

import pytest
import torch
import torch.nn as nn

from cnnkit.errors import CnnkitError, UnknownNameError
from cnnkit.viz import MaximizeSettings, UnitOutOfRangeError, maximize_activation, total_variation
from cnnkit.viz.images import InputSpec
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401

SPEC = InputSpec(3, 16, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    # Bias-free, so the grey starting image sits near zero activation as in a trained net's "nothing here".
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4),
    )


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def with_prior(model):
    settings = MaximizeSettings(steps=80, learning_rate=0.1)
    return maximize_activation(model, SPEC, units=[0, 1, 2], layer="6", settings=settings)


def test_raises_the_channel_at_least_tenfold_and_beats_random_images(model, with_prior):
    assert torch.all(with_prior.start_activation > 0)
    assert torch.all(with_prior.final_activation >= 10 * with_prior.start_activation)
    # Not only relative to a near-zero start: better than any of 64 random full-contrast images.
    with torch.no_grad():
        random_images = SPEC.normalize(torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
        best_random = model[:7](random_images).mean(dim=(-2, -1)).amax(dim=0)[:3]
    assert torch.all(with_prior.final_activation > best_random)


def test_prior_keeps_total_variation_below_unregularised_ascent(model, with_prior):
    plain = maximize_activation(model, SPEC, units=[0, 1, 2], layer="6",
                                settings=MaximizeSettings.unregularized(steps=80, learning_rate=0.1))
    assert torch.all(plain.final_activation >= 10 * plain.start_activation)
    assert torch.all(total_variation(with_prior.images) < total_variation(plain.images))


def test_images_are_valid_pictures_and_the_figure_is_written(model, tmp_path):
    result = maximize_activation(model, SPEC, units=[3, 5], layer="6", target="neuron", position=(2, 3),
                                 settings=MaximizeSettings(steps=5, parameterization="pixel"), png=tmp_path / "m.png")
    assert result.images.shape == (2, 3, 16, 16)
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert (tmp_path / "m.png").stat().st_size > 0


def test_class_logit_target_raises_the_logit(model):
    result = maximize_activation(model, SPEC, units=[1], target="logit",
                                 settings=MaximizeSettings(steps=80, learning_rate=0.1))
    with torch.no_grad():
        random_images = SPEC.normalize(torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(2)))
        best_random = model(random_images)[:, 1].max()
    assert result.final_activation[0] > max(best_random, result.start_activation[0])


def test_model_parameters_and_gradients_are_untouched(model):
    before = {name: value.clone() for name, value in model.state_dict().items()}
    maximize_activation(model, SPEC, units=[0], layer="2", settings=MaximizeSettings(steps=3))
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_unit_out_of_range_names_the_valid_range(model):
    with pytest.raises(UnitOutOfRangeError, match="valid units are 0 to 5"):
        maximize_activation(model, SPEC, units=[6], layer="6", settings=MaximizeSettings(steps=1))
    with pytest.raises(UnitOutOfRangeError, match="valid units are 0 to 3"):
        maximize_activation(model, SPEC, units=[-1], target="logit", settings=MaximizeSettings(steps=1))


def test_unknown_target_and_logit_with_a_layer_are_reported(model):
    with pytest.raises(UnknownNameError, match="channel, neuron, logit"):
        maximize_activation(model, SPEC, units=[0], layer="6", target="pixel")
    with pytest.raises(CnnkitError, match="no layer is needed"):
        maximize_activation(model, SPEC, units=[0], layer="6", target="logit")
