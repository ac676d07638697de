"""ReLU against tanh and dying ReLUs (issue 26, item 6): the dead-unit measurement on layers whose answer is
known by hand, the four-layer CIFAR network of Krizhevsky et al.'s Fig. 1 with each activation, and the
time-to-target bookkeeping of the benchmark (benchmarks/relu_tanh.py, benchmarks/dying_relu.py)."""

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError, ShapeError
from cnnkit.layers import make_activation
from cnnkit.models import create_model
from cnnkit.train import StopAtTarget, TrainConfig, Trainer, time_to_target
from cnnkit.viz import dead_unit_fraction, dead_unit_fractions
from helpers import bar_dataset


def _linear(weight, bias) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    return layer


def _two_layers(activation: str) -> nn.Sequential:
    # Inputs x in [0, 1]. Layer 1: x - 5 (always negative: dead), x + 0.5 (alive), -x - 0.5 (dead).
    # Layer 2 reads h = act(layer 1): +h1 (alive) and -h1 (dead wherever h1 > 0, i.e. always).
    return nn.Sequential(_linear([[1.0], [1.0], [-1.0]], [-5.0, 0.5, -0.5]), make_activation(activation),
                         _linear([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]], [0.0, 0.0]), make_activation(activation))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "elu"])
def test_dead_units_of_layers_with_known_negative_biases(activation):
    inputs = torch.linspace(0, 1, 50).reshape(50, 1)
    layers = dead_unit_fractions(_two_layers(activation), inputs, batch_size=7)  # several batches
    assert {name: (layer.dead, layer.units) for name, layer in layers.items()} == {"1": (2, 3), "3": (1, 2)}
    assert layers["1"].fraction == pytest.approx(2 / 3)
    assert dead_unit_fraction(_two_layers(activation), inputs) == pytest.approx(3 / 5)


def test_one_input_that_fires_keeps_a_unit_alive_and_zero_is_dead():
    model = nn.Sequential(_linear([[1.0], [1.0]], [0.0, -1.0]), nn.ReLU(inplace=True))
    # Unit 0 is x: zero at x = 0 (dead, ReLU outputs zero), alive once one input is positive.
    assert dead_unit_fraction(model, torch.zeros(4, 1)) == 1.0
    assert dead_unit_fraction(model, torch.tensor([[0.0], [0.0], [0.5], [0.0]])) == 0.5
    assert dead_unit_fraction(model, torch.tensor([[0.0], [2.0]])) == 0.0
    assert model[0].bias.tolist() == [0.0, -1.0]  # measuring changes nothing


def test_a_convolutional_unit_is_a_feature_map_alive_if_it_fires_anywhere():
    conv = nn.Conv2d(1, 3, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1))
        conv.bias.copy_(torch.tensor([0.0, 0.0, -0.1]))
    model = nn.Sequential(conv, nn.ReLU())
    images = torch.rand(4, 1, 5, 5) + 0.1  # positive: map 0 fires, map 1 is -x < 0, map 2 is -0.1
    assert {k: (v.dead, v.units) for k, v in dead_unit_fractions(model, images).items()} == {"1": (2, 3)}
    images[2, 0, 3, 1] = -1.0  # one negative pixel of one image: map 1 fires there
    assert dead_unit_fraction(model, images) == pytest.approx(1 / 3)


def test_dead_units_of_a_zoo_network_shrink_as_its_biases_grow():
    torch.manual_seed(0)
    model = create_model("cifar_convnet4")
    images = torch.randn(16, 3, 32, 32)
    assert set(dead_unit_fractions(model, images)) == {"features.1", "features.4", "features.7"}
    with torch.no_grad():
        for layer in (model.features[0], model.features[3], model.features[6]):
            layer.bias.fill_(-1e3)  # every map negative everywhere
    assert dead_unit_fraction(model, images) == 1.0
    with torch.no_grad():
        for layer in (model.features[0], model.features[3], model.features[6]):
            layer.bias.fill_(1e3)
    assert dead_unit_fraction(model, images) == 0.0


def test_dead_units_refuse_what_they_cannot_measure():
    with pytest.raises(CnnkitError, match="no activation layers"):
        dead_unit_fraction(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), torch.zeros(3, 2))
    with pytest.raises(CnnkitError, match="float batch"):
        dead_unit_fraction(_two_layers("relu"), torch.zeros(3, 1, dtype=torch.uint8))
    shared = nn.ReLU()
    with pytest.raises(CnnkitError, match="its own activation module"):
        dead_unit_fraction(nn.Sequential(nn.Linear(2, 3), shared, nn.Linear(3, 4), shared), torch.ones(2, 2))


# conv1 3*5*5*32 + 32, conv2 32*5*5*32 + 32, conv3 32*5*5*64 + 64, fc (64 maps of 4x4) * 10 + 10
CONVNET4_PARAMETERS = (3 * 25 * 32 + 32) + (32 * 25 * 32 + 32) + (32 * 25 * 64 + 64) + (64 * 4 * 4 * 10 + 10)


@pytest.mark.parametrize("activation, kind", [("relu", nn.ReLU), ("tanh", nn.Tanh), ("leaky_relu", nn.LeakyReLU),
                                              ("elu", nn.ELU), ("sigmoid", nn.Sigmoid)])
def test_the_four_layer_network_builds_with_each_activation(activation, kind):
    model = create_model("cifar_convnet4", activation=activation)
    assert sum(p.numel() for p in model.parameters()) == CONVNET4_PARAMETERS == 89_578
    assert [type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Sigmoid))
            ] == [kind] * 3
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 3
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_the_four_layer_network_refuses_other_sizes_and_activations():
    with pytest.raises(ShapeError, match="image_size=28"):
        create_model("cifar_convnet4")(torch.zeros(1, 3, 28, 28))
    assert create_model("cifar_convnet4", image_size=28)(torch.zeros(1, 3, 28, 28)).shape == (1, 10)
    with pytest.raises(ValueError, match="relu, leaky_relu, elu, sigmoid, tanh"):
        create_model("cifar_convnet4", activation="swish")


HISTORY = [{"epoch": 1, "train_acc": 40.0, "seconds": 2.0}, {"epoch": 2, "train_acc": 74.99, "seconds": 3.0},
           {"epoch": 3, "train_acc": 75.0, "seconds": 4.0}, {"epoch": 4, "train_acc": 90.0, "seconds": 5.0}]


def test_time_to_target_is_the_first_epoch_there_and_the_seconds_up_to_it():
    assert time_to_target(HISTORY, "train_acc", 75.0) == (3, 9.0)  # exactly at the target counts
    assert time_to_target(HISTORY, "train_acc", 30.0) == (1, 2.0)
    assert time_to_target(HISTORY, "train_acc", 95.0) is None
    errors = [{"epoch": r["epoch"], "error": 100 - r["train_acc"], "seconds": r["seconds"]} for r in HISTORY]
    assert time_to_target(errors, "error", 25.0, higher_is_better=False) == (3, 9.0)
    assert time_to_target([], "train_acc", 1.0) is None
    with pytest.raises(KeyError, match="val_acc"):
        time_to_target(HISTORY, "val_acc", 50.0)


def test_stop_at_target_ends_training_after_the_epoch_that_reaches_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(1), nn.Linear(16 * 16, 2))
    config = TrainConfig(epochs=6, batch_size=16, lr=0.01, schedule="constant", progress=False, num_workers=0,
                         validate_every=0)
    trainer = Trainer(model, bar_dataset(n_train=32, n_test=8, size=16), config,
                      callbacks=[StopAtTarget("train_loss", 1e9, higher_is_better=False)])
    trainer.fit()
    assert len(trainer.history) == 1
    with pytest.raises(CnnkitError, match="nonesuch"):
        Trainer(nn.Sequential(nn.Flatten(1), nn.Linear(16 * 16, 2)), bar_dataset(n_train=16, n_test=8, size=16),
                config, callbacks=[StopAtTarget("nonesuch", 1.0)]).fit()
