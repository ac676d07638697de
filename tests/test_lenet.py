import pytest
import torch

from cnnkit.layers import LENET_C3_TABLE, RBFOutput, ScaledTanh, digit_prototypes
from cnnkit.models import create_model, list_models


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_lenet5_parameter_counts_are_the_papers():
    model = create_model("lenet5")
    f, c = model.features, model.classifier
    assert [count(f.c1), count(f.s2), count(f.c3), count(f.s4), count(f.c5), count(c.f6)] == \
        [156, 12, 1516, 32, 48120, 10164]
    assert c.output.centres.numel() == 840 and count(c.output) == 0  # fixed RBF centres
    assert count(model) == 60000


def test_c3_connection_table():
    assert sum(len(row) for row in LENET_C3_TABLE) == 60
    assert [len(row) for row in LENET_C3_TABLE] == [3] * 6 + [4] * 9 + [6]
    dense = create_model("lenet5").features.c3.dense_weight()
    connected = dense.abs().sum((2, 3)) > 0
    for out_map, row in enumerate(LENET_C3_TABLE):
        assert set(torch.nonzero(connected[out_map]).flatten().tolist()) == set(row)


def test_shapes_and_variants():
    x = torch.randn(3, 1, 32, 32)
    assert create_model("lenet5")(x).shape == (3, 10)
    assert create_model("lenet5", output="linear", num_classes=4)(x).shape == (3, 4)
    relu = create_model("lenet5_relu", in_channels=3)
    assert relu(torch.randn(2, 3, 32, 32)).shape == (2, 10) and count(relu) == 61706 + 2 * 150
    assert {"lenet5", "lenet5_relu"} <= set(list_models())


def test_scaled_tanh_and_rbf():
    f = ScaledTanh()
    assert f(torch.tensor([1.0])).item() == pytest.approx(1.0, abs=2e-4)
    protos = digit_prototypes(12)
    assert protos.shape == (12, 84) and set(protos.unique().tolist()) == {-1.0, 1.0}
    rbf = RBFOutput(84, 10)
    logits = rbf(rbf.centres[3:4].clone())
    assert logits.argmax().item() == 3 and logits[0, 3].item() == pytest.approx(0.0, abs=1e-4)
