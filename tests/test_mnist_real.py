"""One real-data run: an epoch of the faithful LeNet-5 on the real MNIST files from CNNKIT_DATA."""

import torch

from cnnkit import TrainConfig, Trainer, create_model, load_dataset


def test_one_epoch_of_lenet5_on_mnist_reaches_98_percent(shared_data, monkeypatch, tmp_path):
    monkeypatch.setenv("CNNKIT_DATA", str(shared_data))
    bundle = load_dataset("mnist")
    assert (len(bundle.train), len(bundle.test)) == (60000, 10000)
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=64, optimizer="adam", lr=0.002, weight_decay=0.0,
                         schedule="onecycle", progress=False)
    summary = Trainer(create_model("lenet5"), bundle, config, out=tmp_path / "run").fit()
    assert summary["test_acc"] >= 98.0, summary["test_acc"]
