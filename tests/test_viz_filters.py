"""First-layer filters: the smoothness statistic and the filter picture."""

import math

import pytest
import torch
import torch.nn as nn

from cnnkit.errors import CheckpointError, UnknownNameError
from cnnkit.models.registry import create_model
from cnnkit.viz import conv_weights, plot_filters, spatial_autocorrelation
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401


def gabor_filters(count: int, size: int = 5) -> torch.Tensor:
    """Smooth oriented filters like those a CNN learns in its first layer: (count, 3, size, size)."""
    coordinates = torch.linspace(-1, 1, size)
    y, x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    filters = []
    for index in range(count):
        angle = math.pi * index / count
        along = x * math.cos(angle) + y * math.sin(angle)
        kernel = torch.exp(-(x**2 + y**2) / 0.8) * torch.cos(2.0 * along + index)
        filters.append(torch.stack([kernel, 0.5 * kernel, -kernel]))
    return torch.stack(filters)


def test_smooth_filters_are_more_autocorrelated_than_random_ones():
    smooth = spatial_autocorrelation(gabor_filters(16))
    random = spatial_autocorrelation(nn.Conv2d(3, 16, 5).weight.detach())
    assert smooth.shape == random.shape == (16,)
    assert smooth.mean() > 0.5
    assert random.mean() < 0.2
    assert smooth.min() > random.max()


def test_autocorrelation_reference_values():
    constant_rows = torch.arange(5.0).view(1, 1, 5, 1).expand(1, 1, 5, 5)  # a ramp: smooth vertically only
    checkerboard = ((torch.arange(5).view(-1, 1) + torch.arange(5)) % 2).float().view(1, 1, 5, 5)
    assert spatial_autocorrelation(checkerboard).item() == pytest.approx(-1.0, abs=0.05)
    assert 0.3 < spatial_autocorrelation(constant_rows).item() < 1.0


def test_plot_filters_before_and_after(tmp_path):
    torch.manual_seed(0)
    before = create_model("lenet5_relu", in_channels=3)
    after = create_model("lenet5_relu", in_channels=3)
    with torch.no_grad():
        after.features[0].weight.copy_(gabor_filters(6))
    result = plot_filters(after, before=before.state_dict(), png=tmp_path / "filters.png")
    assert torch.equal(result["weights"], gabor_filters(6))
    assert result["autocorrelation"].mean() > result["autocorrelation_before"].mean()
    assert (tmp_path / "filters.png").stat().st_size > 0
    # Deeper layers are drawn per input channel.
    deeper = plot_filters(after, layer="features.3", png=tmp_path / "deeper.png")
    assert deeper["weights"].shape == (16, 6, 5, 5)


def test_filters_reject_layers_without_kernels():
    model = create_model("lenet5_relu")
    with pytest.raises(UnknownNameError, match="no 4-D convolution weight"):
        conv_weights(model, "features.1")
    with pytest.raises(UnknownNameError, match="Valid names"):
        conv_weights(model, "conv1")
    with pytest.raises(CheckpointError, match="same architecture"):
        plot_filters(model, before=create_model("lenet5_relu", in_channels=3))
