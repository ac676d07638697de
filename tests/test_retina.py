"""retina_net (Lindsey et al. 2019) and the receptive-field tools: shapes and sizes by hand, the DoG fit on
synthetic fields, gradients of a convolution whose kernel we set."""

import math

import pytest
import torch
from torch import nn

from cnnkit.analysis import summary
from cnnkit.errors import CnnkitError, ShapeError, UnknownNameError
from cnnkit.models import create_model
from cnnkit.viz import (
    UnitOutOfRangeError,
    center_surround_index,
    difference_of_gaussians,
    fit_difference_of_gaussians,
    plot_receptive_fields,
    receptive_fields,
)


def gabor(size: int, theta: float, sigma: float, frequency: float, phase: float) -> torch.Tensor:
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    along = x * math.cos(theta) + y * math.sin(theta)
    envelope = torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
    return (envelope * torch.cos(2 * math.pi * frequency * along + phase)).float()


def test_retina_net_shapes_and_parameter_count_match_the_table():
    with torch.device("meta"):  # shapes only: the dense layer's 33 M weights are never initialised
        model = create_model("retina_net", bottleneck=2, vvs_depth=1)
    by_hand = {
        "retina.conv1": 1 * 32 * 9 * 9 + 32,
        "retina.conv2": 32 * 2 * 9 * 9 + 2,  # the bottleneck: N_BN = 2 channels
        "vvs.conv1": 2 * 32 * 9 * 9 + 32,
        "fc": 32 * 32 * 32 * 1024 + 1024,  # no pooling: the dense layer reads the full 32x32x32 maps
        "out": 1024 * 10 + 10,
    }
    modules = dict(model.named_modules())
    for name, count in by_hand.items():
        assert sum(p.numel() for p in modules[name].parameters()) == count, name
    assert sum(p.numel() for p in model.parameters()) == sum(by_hand.values()) == 33_578_732
    assert model(torch.empty(3, 1, 32, 32, device="meta")).shape == (3, 10)
    assert model.vvs(model.retina(torch.empty(3, 1, 32, 32, device="meta"))).shape == (3, 32, 32, 32)  # 'same'

    torch.manual_seed(0)
    shallow = create_model("retina_net", bottleneck=4, vvs_depth=0)  # the classifier reads the retina directly
    assert shallow.fc.in_features == 4 * 32 * 32 and len(shallow.vvs) == 0
    with torch.no_grad():
        logits = shallow(torch.randn(3, 1, 32, 32))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
    rows = {row.name: row for row in summary("retina_net", bottleneck=1, vvs_depth=2).rows}
    assert (rows["retina.conv2"].receptive_field, rows["vvs.conv1"].receptive_field) == (17, 25)


def test_retina_net_refuses_bad_arguments_and_sizes():
    with pytest.raises(CnnkitError, match="bottleneck must be an integer of at least 1, got 0"):
        create_model("retina_net", bottleneck=0)
    with pytest.raises(CnnkitError, match="vvs_depth"):
        create_model("retina_net", vvs_depth=-1)
    with pytest.raises(CnnkitError, match="init must be 'glorot'"):
        create_model("retina_net", init="uniform")
    with pytest.raises(ShapeError, match="reads 32x32 images"):
        create_model("retina_net", bottleneck=1, vvs_depth=0)(torch.zeros(1, 1, 31, 31))


def test_dog_fit_recovers_a_difference_of_gaussians():
    field = difference_of_gaussians((17, 17), center=(8.3, 7.6), sigmas=(1.5, 4.0), amplitudes=(1.0, 0.4), offset=0.05)
    fitted, parameters = fit_difference_of_gaussians(field, return_parameters=True)
    assert fitted.shape == field.shape
    assert torch.allclose(fitted, field, atol=1e-3)
    assert torch.allclose(parameters["center"], torch.tensor([8.3, 7.6]), atol=0.02)
    assert torch.allclose(parameters["sigmas"], torch.tensor([1.5, 4.0]), atol=0.05)
    assert torch.allclose(parameters["amplitudes"], torch.tensor([1.0, 0.4]), atol=0.02)
    assert center_surround_index(field).item() > 0.999
    off_centre = -3 * field + 0.01 * torch.randn(17, 17, generator=torch.Generator().manual_seed(0))
    assert center_surround_index(off_centre).item() > 0.99  # sign and scale do not matter


def test_center_surround_index_is_low_for_oriented_fields_and_nan_for_flat_ones():
    fields = torch.stack([gabor(17, theta, 3.0, 0.2, phase) for theta, phase in ((0.3, 0.0), (1.2, math.pi / 2))])
    index = center_surround_index(fields)
    assert index.shape == (2,)
    assert (index < 0.6).all(), index
    assert torch.isnan(center_surround_index(torch.zeros(9, 9)))


def test_receptive_field_of_a_convolution_is_its_kernel():
    # torch's convolution is a cross-correlation, out(i, j) = sum_uv k(u, v) x(i + u - 2, j + v - 2), so the
    # gradient of the centre output with respect to the input is the kernel itself, not flipped.
    conv = nn.Conv2d(1, 2, 5, padding=2)
    with torch.no_grad():
        conv.weight.copy_(torch.arange(50, dtype=torch.float32).view(2, 1, 5, 5) - 20)
        conv.bias.fill_(0.3)
    model = nn.Sequential(conv, nn.ReLU())
    blank = receptive_fields(model, "0", input_size=(1, 15, 15))
    assert blank.shape == (2, 1, 5, 5)  # cropped to the theoretical 5x5 field
    assert torch.allclose(blank, conv.weight.detach())
    images = torch.randn(4, 1, 15, 15, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(receptive_fields(model, "0", images), conv.weight.detach())  # linear: any input
    assert receptive_fields(model, "0", images, crop=False).shape == (2, 1, 15, 15)


def test_receptive_fields_of_retina_net_and_errors():
    torch.manual_seed(0)
    model = create_model("retina_net", bottleneck=3, vvs_depth=1)
    images = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    assert receptive_fields(model, "retina.conv2", images).shape == (3, 1, 17, 17)
    assert receptive_fields(model, "vvs.conv1", images).shape == (32, 1, 25, 25)
    with pytest.raises(UnknownNameError, match="retina.conv2"):
        receptive_fields(model, "retina.conv3")
    with pytest.raises(UnitOutOfRangeError, match="convolutional layer"):
        receptive_fields(model, "fc", images)


def test_plot_receptive_fields_writes_a_png(tmp_path):
    fields = torch.stack([difference_of_gaussians((9, 9), (4, 4), (1, 3), (1, 0.5)), gabor(9, 0.5, 2, 0.2, 0)])
    path = plot_receptive_fields(fields[:, None], tmp_path / "fields.png", labels=["dog", "gabor"], title="t")
    assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"


def test_lgn_layer_sits_between_retina_and_vvs_with_the_bottleneck_width():
    with torch.device("meta"):
        plain = create_model("retina_net", bottleneck=2, vvs_depth=2)
        with_lgn = create_model("retina_net", bottleneck=2, vvs_depth=2, lgn_layers=1)
    names = [name for name, module in with_lgn.named_modules() if isinstance(module, nn.Conv2d)]
    assert names == ["retina.conv1", "retina.conv2", "lgn.conv1", "vvs.conv1", "vvs.conv2"]
    lgn = with_lgn.lgn.conv1
    assert (lgn.in_channels, lgn.out_channels, lgn.kernel_size) == (2, 2, (9, 9))  # a second N_BN bottleneck
    extra = sum(p.numel() for p in with_lgn.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 2 * 2 * 9 * 9 + 2
    assert len(plain.lgn) == 0  # the default network is the paper's Fig. 1 one, unchanged
    rows = {row.name: row for row in summary("retina_net", bottleneck=1, vvs_depth=2, lgn_layers=1).rows}
    assert (rows["lgn.conv1"].receptive_field, rows["vvs.conv1"].receptive_field) == (25, 33)
    assert rows["lgn.conv1"].output_shape == (1, 32, 32)
    with pytest.raises(CnnkitError, match="lgn_layers must be an integer of at least 0"):
        create_model("retina_net", lgn_layers=-1)
    with pytest.raises(CnnkitError, match="untied is True"):
        create_model("retina_net", untied="yes")


def test_locally_connected_layer_is_a_convolution_when_its_kernels_are_tied():
    from cnnkit.layers.conv import LocallyConnected2d

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 2, 3, padding=1, stride=2)
    local = LocallyConnected2d(3, 2, 3, (7, 6), stride=2, padding=1)
    with torch.no_grad():  # every position gets the conv's kernel and bias
        local.kernels().copy_(conv.weight.expand(*local.output_size, *conv.weight.shape))
        local.bias.copy_(conv.bias[:, None, None].expand_as(local.bias))
    x = torch.randn(4, 3, 7, 6)
    assert torch.allclose(local(x), conv(x), atol=1e-5)
    with torch.no_grad():  # untie one position: only that output moves
        local.kernels()[1, 2].add_(1.0)
    changed = (local(x) - conv(x)).abs().amax((0, 1)) > 1e-4
    assert changed.nonzero().tolist() == [[1, 2]]
    x64 = torch.randn(2, 3, 7, 6, dtype=torch.double, requires_grad=True)
    local = local.double()
    assert torch.autograd.gradcheck(lambda x, w, b: local(x), (x64, local.weight, local.bias))
    with pytest.raises(ShapeError, match="built for"):
        local(torch.zeros(1, 3, 8, 8, dtype=torch.double))


@pytest.mark.parametrize("untied", [False, True])
def test_retina_unit_fields_equal_autograd_gradients(untied):
    torch.manual_seed(0)
    model = create_model("retina_net", bottleneck=3, vvs_depth=0, untied=untied)
    with torch.no_grad():
        for parameter in model.retina.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))  # biases off zero: some hidden units are silent
    images = torch.randn(6, 1, 32, 32)
    fields = model.retina_unit_fields(images, torch.tensor([[16, 16], [10, 21]]))
    assert fields.shape == (2, 3, 17, 17)
    reference = receptive_fields(model, "retina.conv2", images, crop=False)[:, 0, 8:25, 8:25]  # the centre unit
    assert torch.allclose(fields[0], reference, atol=1e-5 * reference.abs().max())
    if untied:
        layer = model.retina.conv2
        assert sum(p.numel() for p in layer.parameters()) == 32 * 32 * 3 * 32 * 81 + 3 * 32 * 32
        with torch.no_grad():
            layer.kernels()[10, 21].zero_()  # the unit at (10, 21) loses its input weights, the centre unit not
        again = model.retina_unit_fields(images, torch.tensor([[16, 16], [10, 21]]))
        assert torch.equal(again[0], fields[0]) and again[1].abs().max() == 0
    with pytest.raises(CnnkitError, match="positions are"):
        model.retina_unit_fields(images, torch.tensor([[32, 0]]))
