"""A short training smoke test per model family, through the one training loop: every architecture must
train (finite loss, weights that move) on small inputs, not only build."""

import pytest
import torch

from cnnkit import TrainConfig, Trainer, create_model
from helpers import bar_dataset

FAMILIES = [
    # model, channels, data size, TrainConfig extras
    ("fashion_cnn", 1, 28, {}),
    ("mnist_fast_cnn", 1, 28, {}),
    ("cifar_fast_cnn", 3, 32, {}),  # whitening filters set from the data before the first step
    ("alexnet_owt", 3, 32, {"input_size": 64}),  # needs >= 63 px: the Trainer resizes
    ("vgg11_bn", 3, 32, {}),
    ("googlenet", 3, 32, {}),  # auxiliary classifiers take part in the loss
    ("resnet18", 3, 32, {}),
    ("resnet20", 3, 32, {}),
    ("plain20", 3, 32, {}),
    ("xception", 3, 32, {}),
    ("efficientnet_lite0", 3, 32, {}),
]


@pytest.mark.parametrize("name,channels,size,extra", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_family_trains(name, channels, size, extra):
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_channels=channels)
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    data = bar_dataset(n_train=16, n_test=8, size=size, channels=channels)
    config = TrainConfig(epochs=1, batch_size=8, lr=0.01, optimizer="sgd", progress=False, eval_batch_size=8,
                         schedule="constant", **extra)
    summary = Trainer(model, data, config).fit()
    assert torch.isfinite(torch.tensor(summary["test_loss"]))
    moved = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert len(moved) > len(before) // 2, f"only {len(moved)} of {len(before)} tensors changed"


def test_mnist_fast_cnn_is_the_documented_size():
    model = create_model("mnist_fast_cnn")
    assert sum(p.numel() for p in model.parameters()) == 18426
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_cifar_fast_cnn_is_the_documented_size():
    model = create_model("cifar_fast_cnn")
    assert sum(p.numel() for p in model.parameters()) == 1972792
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == 288 + 1152  # whitening, BN scales
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
