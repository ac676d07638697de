"""The pieces the time-to-accuracy recipes rely on: they must change speed, never results."""

import math

import pytest
import torch
import torch.nn.functional as F

from cnnkit.data import AugmentConfig, Preprocess, TensorImageDataset, random_subset
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer
from cnnkit.train.optim import param_groups
from helpers import bar_dataset

# One thread, fixed: an automatic count may differ between a run and its resumed half (tests/test_trainer.py).
FAST = dict(batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, progress=False, eval_batch_size=64,
            num_threads=1)


def test_random_subset_is_a_fixed_draw_across_classes_not_the_first_items():
    labels = torch.arange(10).repeat_interleave(100)  # sorted by class, like the CIFAR-10 JPEG copy
    data = TensorImageDataset(torch.zeros(1000, 1, 4, 4, dtype=torch.uint8), labels, [str(i) for i in range(10)])
    first, again = random_subset(data, 100, seed=3), random_subset(data, 100, seed=3)
    assert isinstance(first, TensorImageDataset) and len(first) == 100
    assert torch.equal(first.labels, again.labels)
    assert len(first.labels.unique()) >= 8  # the first 100 items would all be class 0
    assert random_subset(data, 5000) is data


def test_augmenting_uint8_gives_the_same_batch_as_augmenting_floats():
    images = torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8)
    pre = Preprocess((0.4, 0.5, 0.6), (0.2, 0.25, 0.3), augment=AugmentConfig(crop=3, flip=True))
    from_uint8 = pre(images, train=True, generator=torch.Generator().manual_seed(1))
    from_float = pre(images.float(), train=True, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(from_uint8, from_float, atol=1e-5)
    plain = pre(images)
    expected = (images.float() / 255 - torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1)) / torch.tensor(
        [0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(plain, expected, atol=1e-5)


def test_preprocess_leaves_a_float_input_untouched():
    images = torch.full((2, 1, 4, 4), 255.0)
    Preprocess((0.5,), (0.5,))(images)
    assert torch.all(images == 255.0)


def test_learning_rate_multipliers_take_prefixes_and_patterns():
    model = create_model("cifar_fast_cnn", widths=(8, 8, 8))
    groups = param_groups(model, weight_decay=0.01, lr=0.1, lr_multipliers={"*.bias": 64, "fc.": 0.5})
    by_id = {id(p): g for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["blocks.0.2.bias"])]["lr"] == pytest.approx(6.4)
    assert by_id[id(named["fc.weight"])]["lr"] == pytest.approx(0.05)
    assert by_id[id(named["blocks.1.0.weight"])]["lr"] == pytest.approx(0.1)
    assert "whiten.weight" not in {n for n, p in named.items() if id(p) in by_id}  # frozen: not optimised


def test_the_reported_learning_rate_is_the_runs_not_a_multiplied_groups():
    """cifar_fast_cnn's default recipe (lr 1, biases at 64x) printed 'lr 54.2' after epoch 1: the bias group's."""
    torch.manual_seed(0)
    config = TrainConfig(epochs=2, schedule="onecycle", lr_multipliers={"*.bias": 64}, **FAST)
    trainer = Trainer(create_model("cifar_fast_cnn", num_classes=2, widths=(8, 8, 8)),
                      bar_dataset(n_train=128, channels=3), config)
    assert trainer.optimizer.param_groups[0]["lr_multiplier"] == 64  # the multiplied group comes first here
    trainer.fit()
    assert all(0 < m["lr"] <= config.lr for m in trainer.history)


def test_validate_every_skips_intermediate_epochs_and_reuses_the_final_evaluation():
    torch.manual_seed(0)
    trainer = Trainer(create_model("lenet5_relu", num_classes=2), bar_dataset(),
                      TrainConfig(epochs=3, validate_every=0, **FAST))
    summary = trainer.fit()
    assert [math.isnan(m["val_acc"]) for m in trainer.history] == [True, True, False]
    assert summary["test_acc"] == trainer.history[-1]["val_acc"]
    with pytest.raises(CnnkitError, match="validate_every"):
        Trainer(create_model("lenet5_relu", num_classes=2), bar_dataset(),
                TrainConfig(epochs=3, validate_every=0, schedule="plateau", **FAST))


def test_flip_test_time_augmentation_averages_the_logits_of_both_views():
    torch.manual_seed(0)
    data = bar_dataset(n_test=64)
    model = create_model("lenet5_relu", num_classes=2)
    plain = Trainer(model, data, TrainConfig(**FAST)).evaluate()
    tta = Trainer(model, data, TrainConfig(tta_flip=True, **FAST))
    x = tta.preprocess(data.test.images)
    with torch.no_grad():
        model.eval()
        logits = (model(x) + model(x.flip(3))) / 2
    expected = F.cross_entropy(logits, data.test.labels).item()
    kept = tta.evaluate(keep_logits=True)
    assert kept["loss"] == pytest.approx(expected, rel=1e-5)
    assert plain["loss"] != pytest.approx(expected, rel=1e-5)
    # The kept logits are the averaged ones, one row per test image in the split's order.
    assert kept["logits"].shape == (64, 2) and torch.allclose(kept["logits"], logits, atol=1e-5)
    assert "logits" not in plain


def test_the_trainer_whitens_cifar_fast_cnn_from_the_training_data():
    torch.manual_seed(0)
    data = bar_dataset(n_train=128, channels=3)
    model = create_model("cifar_fast_cnn", num_classes=2, widths=(8, 8, 8))
    before = model.whiten.weight.clone()
    trainer = Trainer(model, data, TrainConfig(epochs=1, **FAST))
    trainer.fit()
    assert not torch.equal(before, model.whiten.weight)
    assert torch.equal(model.whiten.weight[:12], -model.whiten.weight[12:])  # both signs of each filter
    # The positive half of the filters decorrelates 2x2 patches: the top directions come out with unit variance.
    out = model.whiten(trainer.preprocess(data.train.images))[:, :12].detach()
    features = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = torch.cov(features.T)
    off_diagonal = covariance - torch.diag(torch.diag(covariance))
    assert torch.diag(covariance)[:4] == pytest.approx(torch.ones(4), abs=0.05)
    assert off_diagonal.abs().max() < 0.05


def test_mixup_and_cutmix_train_and_resume_exactly(tmp_path):
    data = bar_dataset(n_train=128, n_test=64)
    config = TrainConfig(epochs=2, mixup=0.4, cutmix=1.0, **FAST)
    torch.manual_seed(0)
    whole = Trainer(create_model("lenet5_relu", num_classes=2), data, config, out=tmp_path / "whole")
    whole.fit()
    # Mixed labels: the training accuracy counts a hit on either class in proportion, so it is not a whole count.
    assert any(round(m["train_acc"] * 128 / 100, 3) % 1 for m in whole.history)
    torch.manual_seed(0)  # the same run, interrupted after its first epoch
    first = Trainer(create_model("lenet5_relu", num_classes=2), data, config, out=tmp_path / "split")
    first.callbacks.append(lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] == 1))
    first.fit()
    torch.manual_seed(1)  # a different global seed: the mixing draws come from the run's own generator
    resumed = Trainer(create_model("lenet5_relu", num_classes=2), data, config, out=tmp_path / "split")
    resumed.fit(resume=True)
    assert resumed.history[-1]["train_loss"] == pytest.approx(whole.history[-1]["train_loss"], rel=1e-6)


def test_shifted_test_time_views_average_ten_forward_passes():
    torch.manual_seed(0)
    data = bar_dataset(n_test=32)
    model = create_model("lenet5_relu", num_classes=2).eval()
    trainer = Trainer(model, data, TrainConfig(tta_flip=True, tta_shift=3, augment={"crop": 4}, **FAST))
    x = trainer.preprocess(data.test.images)
    with torch.no_grad():
        expected = torch.zeros(32, 2)
        for image in (x, x.flip(3)):
            padded = F.pad(image, (3,) * 4)  # the training crop's zero padding
            for dy, dx in ((0, 0), (3, 0), (-3, 0), (0, 3), (0, -3)):
                expected += model(padded[..., 3 + dy:3 + dy + 32, 3 + dx:3 + dx + 32]) / 10
    assert torch.allclose(trainer.evaluate(keep_logits=True)["logits"], expected, atol=1e-5)
    with pytest.raises(CnnkitError, match="tta_shift must be a whole number >= 0, not -1"):
        Trainer(model, data, TrainConfig(tta_shift=-1, **FAST))


def test_multi_scale_test_time_views_average_the_views_at_each_input_size():
    torch.manual_seed(0)
    data = bar_dataset(n_test=32, channels=3)
    model = create_model("resnet20", num_classes=2).eval()  # global pooling: reads any input size
    config = TrainConfig(tta_flip=True, tta_sizes=[24, 40], input_size=32, resize="interpolate", **FAST)
    trainer = Trainer(model, data, config)
    with torch.no_grad():
        expected = torch.zeros(32, 2)
        for size in (32, 24, 40):
            x = trainer.preprocess(data.test.images, size=(size, size))
            assert x.shape[-2:] == (size, size)
            expected += (model(x) + model(x.flip(3))) / 6
    assert torch.allclose(trainer.evaluate(keep_logits=True)["logits"], expected, atol=1e-5)
    assert TrainConfig.from_dict({"tta_sizes": [24]}).tta_sizes == (24,)
    for wrong in ([0], [1.5]):
        with pytest.raises(CnnkitError, match=r"tta_sizes\[0\] must be a whole number >= 1"):
            Trainer(model, data, TrainConfig(tta_sizes=wrong, **FAST))
    # Refused before training: LeNet-5 reads 32x32 only, AlexNet nothing smaller than its minimum.
    with pytest.raises(CnnkitError, match=r"cannot read the test-time sizes \[40\].*fixed at 32x32"):
        Trainer(create_model("lenet5_relu", num_classes=2), bar_dataset(), TrainConfig(tta_sizes=[40], **FAST))
    with pytest.raises(CnnkitError, match=r"sizes \[32\].*at least 67 px"):
        Trainer(create_model("alexnet", num_classes=2), data, TrainConfig(tta_sizes=[32, 224], **FAST))
