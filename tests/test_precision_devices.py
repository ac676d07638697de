"""Where training runs and in what precision: --device auto's choice (cuda > mps > cpu) with the machine's
answers mocked, the start line that names it, and fp16 autocast with torch's GradScaler: it trains, a step whose
gradients overflow is skipped (not fatal), and its loss scale is saved with the run so that resume is exact."""

import json

import pytest
import torch

from cnnkit.errors import CnnkitError, TrainingDivergedError
from cnnkit.models import create_model
from cnnkit.runs import read_tensors
from cnnkit.train import TrainConfig, Trainer, distributed
from cnnkit.train import trainer as trainer_module
from cnnkit.train.callbacks import Callback
from cnnkit.train.checkpoint import STATE_FILE
from cnnkit.train.tasks import ClassificationTask
from helpers import bar_dataset, device_under_test

# 64 images in batches of 32: two optimiser steps per epoch (CPU fp16 is slow: keep the runs tiny). The tests
# marked `device` train on $CNNKIT_TEST_DEVICE: fp16 is a GPU format, and benchmarks/gpu_check.sh runs them on cuda.
FP16 = dict(batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, progress=False, eval_batch_size=64,
            precision="fp16", device=str(device_under_test()))


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return create_model("lenet5_relu", num_classes=2)


def tiny_data():
    return bar_dataset(n_train=64, n_test=32)


def mock_machine(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda, mps, world_size, expected", [
    (True, True, 1, "cuda"), (True, False, 1, "cuda"), (False, True, 1, "mps"), (False, False, 1, "cpu"),
    (False, True, 2, "cpu"),  # data-parallel processes have no MPS backend: gloo on the CPU
])
def test_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, world_size, expected):
    mock_machine(monkeypatch, cuda, mps)
    assert distributed.available_device(world_size) == expected
    if world_size == 1:
        assert distributed.device_for_this_process("auto", 1) == torch.device(expected)


def test_a_device_the_machine_lacks_or_that_does_not_exist_is_refused(monkeypatch):
    mock_machine(monkeypatch, cuda=False, mps=False)
    with pytest.raises(CnnkitError, match="no Apple MPS GPU.*--device cpu"):
        distributed.device_for_this_process("mps", 1)
    with pytest.raises(CnnkitError, match="no CUDA GPU"):
        distributed.device_for_this_process("cuda", 1)
    with pytest.raises(CnnkitError, match="'gpu' names no device: use auto, cpu, cuda, cuda:N or mps"):
        distributed.device_for_this_process("gpu", 1)
    mock_machine(monkeypatch, cuda=False, mps=True)
    with pytest.raises(CnnkitError, match="no backend for Apple's MPS"):
        distributed.device_for_this_process("mps", 2)


def test_the_start_line_names_device_precision_and_threads_once(capsys):
    config = TrainConfig(epochs=1, num_threads=1, **{**FP16, "precision": "bf16", "device": "auto"})
    Trainer(fresh_model(), tiny_data(), config).fit()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("training ")]
    assert len(lines) == 1
    assert "device cpu [cpu: " in lines[0] and "(auto: cuda > mps > cpu), bf16 autocast, 1 threads" in lines[0]


@pytest.mark.device
def test_fp16_trains_with_a_grad_scaler_and_fp32_weights(tmp_path, capsys):
    trainer = Trainer(fresh_model(), tiny_data(), TrainConfig(epochs=2, **FP16), out=tmp_path)
    trainer.fit()
    assert trainer.scaler.is_enabled() and next(trainer.model.parameters()).dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in trainer.history)
    assert "fp16 autocast with loss scaling" in capsys.readouterr().out
    with torch.no_grad(), trainer.autocast():  # the forward pass really runs in half precision
        assert trainer.model(torch.zeros(1, 1, 32, 32, device=trainer.device)).dtype == torch.float16
    header = json.loads(read_tensors(tmp_path / STATE_FILE)[1]["cnnkit_train_state"])
    assert header["grad_scaler"]["scale"] == trainer.scaler.get_scale()


def overflow_at(trainer: Trainer, epoch: int, step: int) -> None:
    """Make the gradient of one batch infinite, as an fp16 overflow does."""
    weight = next(trainer.model.parameters())
    weight.register_hook(lambda grad: torch.full_like(grad, float("inf"))
                         if trainer.batch_position[:2] == (epoch, step) else grad)


class WeightsAfterEachBatch(Callback):
    def __init__(self):
        self.weights = {}

    def on_batch_end(self, trainer, batch):
        self.weights[(batch.epoch, batch.step)] = [p.detach().clone() for p in trainer.model.parameters()]


@pytest.mark.device
def test_an_overflowing_fp16_step_is_skipped_and_training_goes_on():
    recorder = WeightsAfterEachBatch()
    trainer = Trainer(fresh_model(), bar_dataset(n_train=96, n_test=32), TrainConfig(epochs=1, grad_clip=1.0, **FP16),
                      callbacks=[recorder])  # grad_clip: the gradients are unscaled before their norm is taken
    overflow_at(trainer, 1, 2)
    scale = trainer.scaler.get_scale()
    trainer.fit()
    before, skipped, after = (recorder.weights[(1, step)] for step in (1, 2, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, skipped))  # the step was skipped, not taken
    assert not all(torch.equal(a, b) for a, b in zip(skipped, after))  # and the next one was taken
    assert trainer.skipped_steps == 1 and trainer.scaler.get_scale() == scale / 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


@pytest.mark.device
def test_an_fp16_nan_loss_is_skipped_but_a_run_of_them_is_divergence(monkeypatch):
    trainer = Trainer(fresh_model(), tiny_data(), TrainConfig(epochs=2, **FP16))
    original_loss = trainer.task.loss
    poisoned = {(1, 1)}

    def loss(trainer_, outputs, targets):
        value = original_loss(trainer_, outputs, targets)
        return value * float("nan") if trainer.batch_position[:2] in poisoned else value

    trainer.task.loss = loss
    trainer.fit()
    assert trainer.skipped_steps == 1 and trainer.history[0]["train_loss"] == trainer.history[0]["train_loss"]
    monkeypatch.setattr(trainer_module, "FP16_NONFINITE_PATIENCE", 3)
    poisoned.update({(1, 2), (2, 1), (2, 2)})
    trainer = Trainer(fresh_model(), tiny_data(), TrainConfig(epochs=2, **FP16))
    trainer.task.loss = loss
    with pytest.raises(TrainingDivergedError, match="epoch 2, step 1 \\(under fp16, 3 batches in a row\\)"):
        trainer.fit()
    fp32 = Trainer(fresh_model(), tiny_data(), TrainConfig(epochs=2, **{**FP16, "precision": "fp32"}))
    fp32.task.loss = loss
    with pytest.raises(TrainingDivergedError, match="epoch 1, step 1 \\(learning"):  # fp32 stops at the first
        fp32.fit()


@pytest.mark.device
def test_an_fp16_run_resumes_exactly_with_its_loss_scale(tmp_path):
    data, config = tiny_data(), TrainConfig(epochs=2, **FP16)
    full = Trainer(fresh_model(), data, config, out=tmp_path / "full")
    overflow_at(full, 1, 1)  # the scale halves in epoch 1, so a resumed run must read it back to match
    full.fit()
    part = Trainer(fresh_model(), data, config, out=tmp_path / "part")
    overflow_at(part, 1, 1)
    part.callbacks.append(lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] == 1))
    part.fit()

    class ScaleAtStart(Callback):
        def on_fit_start(self, trainer):
            self.scale = trainer.scaler.get_scale()

    probe = ScaleAtStart()
    resumed = Trainer(fresh_model(seed=123), data, config, out=tmp_path / "part", callbacks=[probe])
    fresh_scale = resumed.scaler.get_scale()
    resumed.fit(resume=True)
    assert probe.scale == part.scaler.get_scale() != fresh_scale  # the saved scale, not a fresh scaler's
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed.scaler.state_dict() == full.scaler.state_dict()


def test_fp16_is_refused_for_a_task_that_runs_its_own_steps():
    class OwnSteps(ClassificationTask):
        runs_own_step = True

    with pytest.raises(CnnkitError, match="without fp16's loss scaling; train it with precision fp32 or bf16"):
        Trainer(fresh_model(), tiny_data(), TrainConfig(epochs=1, **FP16), task=OwnSteps())
