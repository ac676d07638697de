"""Guided backpropagation and deconvnet reconstructions (cnnkit.viz.backprojection) on networks whose answer is
known by hand: a two-layer perceptron whose modified backward pass can be written out, and a conv-ReLU-pool net
with hand-set edge filters whose deconvnet projection must give back the filter."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnkit.errors import CnnkitError
from cnnkit.viz.backprojection import (
    as_picture, deconvnet, guided_backprop, relu_backward_rule, strongest_channel, support_box, unit_projection,
)
from cnnkit.viz.hooks import UnitOutOfRangeError
from viz_support import single_thread, single_thread_for_module_fixtures  # noqa: F401


class Perceptron(nn.Module):
    """x -> hidden = W1 x -> rectifier -> scores = W2 hidden, with the rectifier spelled ``flavour``."""

    def __init__(self, flavour: str):
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.out = nn.Linear(6, 8), nn.Linear(8, 3)
        self.flavour = flavour
        self.rectifier = {"module": nn.ReLU(), "inplace": nn.ReLU(inplace=True), "relu6": nn.ReLU6(inplace=True)
                          }.get(flavour)

    def forward(self, x):
        h = self.hidden(x)
        if self.rectifier is not None:
            h = self.rectifier(h)
        elif self.flavour == "functional":
            h = F.relu(h, inplace=True)
        elif self.flavour == "torch":
            h = torch.relu(h)
        else:
            h = h.relu()
        return self.out(h)


def by_hand(model: Perceptron, x: torch.Tensor, target: int, rule: str) -> torch.Tensor:
    """The rule written out: the score's gradient reaching the hidden units is W2[target]; the deconvnet keeps
    its positive part, guided backprop also zeroes the units whose input was negative."""
    pre = model.hidden(x)
    reaching = model.out.weight[target].clamp_min(0).expand_as(pre)
    if rule == "guided":
        reaching = reaching * (pre > 0)
    return (reaching @ model.hidden.weight).detach()


@pytest.mark.parametrize("flavour", ["module", "inplace", "relu6", "functional", "torch", "method"])
def test_every_spelling_of_relu_follows_the_rule(flavour):
    model = Perceptron(flavour)
    x = torch.randn(5, 6)  # hidden values stay well below 6, where ReLU6 is a ReLU
    assert torch.allclose(guided_backprop(model, x, target=1), by_hand(model, x, 1, "guided"), atol=1e-6)
    assert torch.allclose(deconvnet(model, x, target=1), by_hand(model, x, 1, "deconvnet"), atol=1e-6)
    # Outside the block the ordinary gradient is back.
    x.requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x)[:, 1].sum(), x)
    pre = model.hidden(x)
    expected = (model.out.weight[1] * (pre > 0)) @ model.hidden.weight
    assert torch.allclose(plain, expected.detach(), atol=1e-6)


def test_relu6_passes_nothing_back_where_it_clipped_at_six():
    model = Perceptron("relu6")
    x = torch.randn(5, 6) * 20  # drives some hidden units past 6
    clipped = model.hidden(x) >= 6
    assert clipped.any()
    reaching = model.out.weight[0].clamp_min(0) * (model.hidden(x) > 0) * ~clipped
    assert torch.allclose(guided_backprop(model, x, 0), (reaching @ model.hidden.weight).detach(), atol=1e-5)


def test_unknown_rule_is_reported():
    with pytest.raises(CnnkitError, match="guided, deconvnet"):
        with relu_backward_rule("zeiler"):
            pass


SIDE = 16
EDGES = {  # 3x3 kernels: a vertical edge (dark to bright, left to right), a horizontal one, a diagonal
    "vertical": [[-1.0, 0.0, 1.0]] * 3,
    "horizontal": [[-1.0] * 3, [0.0] * 3, [1.0] * 3],
    "diagonal": [[0.0, 1.0, 1.0], [-1.0, 0.0, 1.0], [-1.0, -1.0, 0.0]],
}


@pytest.fixture
def edge_net():
    """Conv (three hand-set edge kernels) -> ReLU (in place) -> 2x2 max pool -> a random classifier."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.ReLU(inplace=True), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3 * 7 * 7, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(list(EDGES.values())).unsqueeze(1))
    return model.eval()


def step_image() -> torch.Tensor:
    """A dark square with a bright right half in its lower part: a vertical edge at column 10 (rows 9 to 15),
    a horizontal one at row 8 (columns 10 to 15), plus faint noise."""
    image = 0.02 * torch.rand(1, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(1))
    image[..., 9:, 10:] += 1.0
    return image


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@pytest.mark.parametrize("channel, name", list(enumerate(EDGES)))
def test_deconvnet_of_an_edge_filter_recovers_its_pattern(edge_net, channel, name):
    projection = deconvnet(edge_net, step_image(), layer="2", channel=channel)[0, 0]
    top, bottom, left, right = support_box(projection[None])
    patch = projection[top:bottom, left:right]
    assert patch.shape == (3, 3)  # one unit of the first layer sees a 3x3 receptive field
    kernel = torch.tensor(EDGES[name])
    assert correlation(patch, kernel) > 0.99
    others = [correlation(patch, torch.tensor(other)) for key, other in EDGES.items() if key != name]
    assert max(others) < 0.7  # the kernels themselves correlate up to 2/3 (the diagonal with the other two)


def test_deconvnet_finds_the_vertical_edge_where_it_is(edge_net):
    projection = deconvnet(edge_net, step_image(), layer="2", channel=0)[0]
    top, bottom, left, right = support_box(projection)
    assert top >= 8 and left <= 10 < right  # on the vertical edge, below the horizontal one
    assert strongest_channel(edge_net, step_image(), "0") in (0, 1)  # an edge filter, not the diagonal


def test_deconvnet_reports_bad_units(edge_net):
    with pytest.raises(UnitOutOfRangeError, match="channel from 0 to 2"):
        deconvnet(edge_net, step_image(), layer="2", channel=3)
    with pytest.raises(CnnkitError, match="channel"):
        deconvnet(edge_net, step_image(), layer="2")


def test_pictures_put_zero_at_grey():
    projection = torch.tensor([[[[-2.0, 0.0, 1.0, 2.0]]]])
    picture = as_picture(projection, percentile=100)
    assert torch.allclose(picture, torch.tensor([[[[0.0, 0.5, 0.75, 1.0]]]]))


def test_without_max_pooling_the_deconvnet_ignores_the_image_and_guided_backprop_does_not():
    # Two 5x5 convolutions with a ReLU between them and one output position: the deconvnet's backward pass
    # reads nothing of the forward pass (no switches), so two images give the same projection up to the top
    # activation's value; guided backpropagation keeps the forward ReLU mask, which differs.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.Conv2d(4, 2, 5), nn.ReLU()).eval()
    with torch.no_grad():
        model[2].bias += 10  # switched on by any image
    images = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(2))
    flat = {rule: unit_projection(model, images, "3", 1, rule).flatten(1) for rule in ("deconvnet", "guided")}
    assert correlation(flat["deconvnet"][0], flat["deconvnet"][1]) > 0.9999
    assert correlation(flat["guided"][0], flat["guided"][1]) < 0.9
