import json

import pytest
import torch

from cnnkit.errors import CheckpointError, CnnkitError, TrainingDivergedError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer, load_model_checkpoint
from cnnkit.train.checkpoint import save_model_checkpoint
from helpers import bar_dataset, checkpoint_meta, device_under_test

# The tests marked `device` train on $CNNKIT_TEST_DEVICE (the CPU by default; benchmarks/gpu_check.sh: cuda).
# One thread, fixed: the automatic count follows the machine's load (beside the other test workers it changes
# from run to run), and a different count sums in another order, which the exact-resume tests would see.
FAST = dict(batch_size=32, lr=0.01, optimizer="adam", weight_decay=1e-4, progress=False,
            augment={"crop": 2, "flip": True, "cutout": 4}, eval_batch_size=64, device=str(device_under_test()),
            num_threads=1)


def fresh_model(seed=0, name="lenet5_relu"):
    torch.manual_seed(seed)
    return create_model(name, num_classes=2)


@pytest.mark.device
def test_fit_learns_and_writes_the_run_folder(tmp_path):
    summary = Trainer(fresh_model(), bar_dataset(), TrainConfig(epochs=3, **FAST), out=tmp_path).fit()
    assert summary["test_acc"] > 90
    for name in ("metrics.csv", "curves.png", "summary.json", "checkpoint.safetensors", "checkpoint.json",
                 "last.safetensors", "config.json", "confusion.csv"):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss") and len(rows) == 4
    model, meta = load_model_checkpoint(tmp_path)
    assert meta["classes"] == ["horizontal", "vertical"] and meta["epoch"] == 3
    assert json.loads((tmp_path / "summary.json").read_text())["epochs_completed"] == 3


@pytest.mark.device
def test_resume_continues_exactly(tmp_path):
    data = bar_dataset()
    full = Trainer(fresh_model(), data, TrainConfig(epochs=3, **FAST), out=tmp_path / "full")
    full.fit()
    # An interrupted run: the same seed, stopped after 2 of 3 epochs (as if killed during epoch 3).
    part = Trainer(fresh_model(), data, TrainConfig(epochs=3, **FAST), out=tmp_path / "part")
    part.callbacks.append(lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] == 2))
    part.fit()
    assert part.epoch == 2
    resumed = Trainer(fresh_model(seed=123), data, TrainConfig(epochs=3, **FAST), out=tmp_path / "part")
    resumed.fit(resume=True)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    lines = (tmp_path / "part" / "metrics.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]


@pytest.mark.device
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = Trainer(fresh_model(), bar_dataset(), TrainConfig(epochs=3, **FAST), out=tmp_path)
    original_loss = trainer.task.loss

    def poisoned(trainer_, outputs, targets):
        loss = original_loss(trainer_, outputs, targets)
        return loss * float("nan") if trainer.epoch == 1 else loss

    trainer.task.loss = poisoned
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 1.*last.safetensors \(epoch 1\)"):
        trainer.fit()
    model, meta = load_model_checkpoint(tmp_path)
    assert meta["epoch"] == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_mismatched_checkpoint_lists_the_keys(tmp_path):
    save_model_checkpoint(tmp_path, fresh_model(), checkpoint_meta(["a", "b"]))
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    meta["model"]["name"] = "lenet5"
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="missing from the checkpoint.*features.s2.weight"):
        load_model_checkpoint(tmp_path)


def test_corrupt_checkpoint_is_detected(tmp_path):
    save_model_checkpoint(tmp_path, fresh_model(), checkpoint_meta(["a", "b"]))
    weights = tmp_path / "checkpoint.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_model_checkpoint(tmp_path)


def test_channel_mismatch_is_explained():
    with pytest.raises(Exception, match="in_channels=1"):
        Trainer(create_model("lenet5_relu", in_channels=3, num_classes=2), bar_dataset(), TrainConfig(**FAST))


@pytest.mark.device
def test_bf16_autocast_and_channels_last_train(tmp_path):
    config = TrainConfig(epochs=2, precision="bf16", channels_last=True, label_smoothing=0.1, grad_clip=1.0,
                         val_split=0.25, early_stopping=5, **FAST)
    trainer = Trainer(fresh_model(), bar_dataset(), config)
    summary = trainer.fit()
    assert summary["test_acc"] > 80 and trainer.val_source.startswith("64 images held out")
    assert next(trainer.model.parameters()).dtype == torch.float32  # autocast leaves the weights in fp32


@pytest.mark.device
def test_ema_validates_and_returns_the_moving_average_of_the_weights(tmp_path):
    decay = 0.9
    trainer = Trainer(fresh_model(), bar_dataset(), TrainConfig(epochs=2, ema=decay, **FAST), out=tmp_path)
    steps = []  # the raw weights after every optimiser step, before the average takes them in
    trainer.optimizer.register_step_post_hook(
        lambda optimizer, args, kwargs: steps.append([p.detach().clone() for p in trainer.model.parameters()]))
    trainer.fit()
    average = steps[0]  # the average starts as a copy of the weights after the first step
    for weights in steps[1:]:
        average = [decay * a + (1 - decay) * w for a, w in zip(average, weights)]
    assert len(steps) == 2 * len(trainer.train_loader)
    for expected, got in zip(average, trainer.model.parameters()):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(w, g) for w, g in zip(steps[-1], trainer.model.parameters()))
    saved, _ = load_model_checkpoint(tmp_path)  # the run's model checkpoint holds the average too
    for (name, a), b in zip(saved.state_dict().items(), trainer.model.state_dict().values()):
        assert torch.equal(a, b.cpu()), name  # the file reads back on the CPU
    assert trainer.evaluate()["acc"] == trainer.history[-1]["val_acc"]  # what was validated is what is returned


@pytest.mark.device
def test_ema_run_resumes_exactly_and_refuses_a_state_without_the_average(tmp_path):
    data, config = bar_dataset(), TrainConfig(epochs=3, ema=0.95, **FAST)
    full = Trainer(fresh_model(), data, config, out=tmp_path / "full")
    full.fit()
    part = Trainer(fresh_model(), data, config, out=tmp_path / "part")
    part.callbacks.append(lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] == 2))
    part.fit()
    resumed = Trainer(fresh_model(seed=123), data, config, out=tmp_path / "part")
    resumed.fit(resume=True)
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    plain = Trainer(fresh_model(), data, TrainConfig(epochs=1, **FAST), out=tmp_path / "plain")
    plain.fit()
    with pytest.raises(CheckpointError, match="no moving average.*ema=0"):
        Trainer(fresh_model(), data, config, out=tmp_path / "plain").fit(resume=True)
    with pytest.raises(CnnkitError, match="ema must be a number >= 0 and < 1, not 1.5"):
        Trainer(fresh_model(), data, TrainConfig(ema=1.5, **FAST))
