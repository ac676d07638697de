"""Everything the Trainer makes lives on the device it was asked for: the model, its data, each batch, the
gradients, the optimiser's state (also after resume), the moving average; what it hands back (figures, kept
logits, the run folder) reads on a machine without that device. On the CPU in CI; on a GPU under
``CNNKIT_TEST_DEVICE=cuda`` (benchmarks/gpu_check.sh), where a tensor left on the host fails these tests.

Also the GPU path's divergence check, which reads the loss in batches instead of every step (trainer.py,
FINITE_CHECK_INTERVAL): forced on here, so the CPU runs it too."""

import pytest
import torch

from cnnkit.errors import TrainingDivergedError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer, load_model_checkpoint
from cnnkit.train import trainer as trainer_module
from cnnkit.train.callbacks import Callback
from helpers import bar_dataset, device_under_test

pytestmark = pytest.mark.device
DEVICE = device_under_test()
FAST = dict(batch_size=32, lr=0.01, optimizer="adam", weight_decay=1e-4, progress=False, eval_batch_size=64,
            augment={"crop": 2, "flip": True}, device=str(DEVICE))


def on_device(tensor: torch.Tensor) -> bool:
    # cuda and cuda:0 are one GPU: compare the type, and the index where the device under test names one
    return tensor.device.type == DEVICE.type and (DEVICE.index is None or tensor.device.index == DEVICE.index)


def fresh_model(name="cifar_fast_cnn", **kwargs):
    torch.manual_seed(0)
    return create_model(name, num_classes=2, **kwargs)


class Placement(Callback):
    """Where each batch's loss and the gradients are, seen from inside the loop."""

    def __init__(self):
        self.losses, self.gradients = set(), set()

    def on_batch_end(self, trainer, batch):
        self.losses.add((batch.loss.device.type, batch.loss.device.index))

    def on_before_optimizer_step(self, trainer):
        self.gradients.update((p.grad.device.type, p.grad.device.index)
                              for p in trainer.model.parameters() if p.grad is not None)


def test_the_model_its_data_batches_gradients_and_optimiser_state_are_on_the_device(tmp_path):
    probe = Placement()
    data = bar_dataset(n_train=96, n_test=64, channels=3)
    config = TrainConfig(epochs=1, channels_last=True, ema=0.9, precision="bf16", **FAST)
    trainer = Trainer(fresh_model(widths=(8, 8, 8)), data, config, out=tmp_path, callbacks=[probe])
    assert trainer.device.type == DEVICE.type
    assert all(on_device(t) for t in [*trainer.model.parameters(), *trainer.model.buffers()])
    assert on_device(trainer.train_loader.images) and on_device(trainer.train_loader.labels)
    x = trainer.preprocess(trainer.train_loader.images[:4], train=True,
                           generator=torch.Generator(trainer.device).manual_seed(0))
    assert on_device(x) and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    summary = trainer.fit()
    assert probe.losses == {(trainer.device.type, trainer.device.index)}
    assert probe.gradients == {(trainer.device.type, trainer.device.index)}
    state = [v for s in trainer.optimizer.state.values() for k, v in s.items() if k != "step"]  # Adam's moments
    assert state and all(on_device(t) for t in state)
    assert all(on_device(p) for p in trainer.model.parameters())  # the averaged weights, copied back
    assert isinstance(summary["test_acc"], float) and isinstance(summary["test_loss"], float)
    with torch.no_grad(), trainer.autocast():
        assert trainer.model.eval()(x).dtype == torch.bfloat16  # autocast is the device's own
    # The run folder reads back on the CPU, whatever the model trained on.
    model, meta = load_model_checkpoint(tmp_path)
    assert all(p.device.type == "cpu" for p in model.parameters()) and meta["epoch"] == 1


def test_evaluation_figures_are_numbers_and_kept_logits_come_back_to_the_host():
    data = bar_dataset(n_test=70)  # 70 = 64 + 6: a short last batch
    trainer = Trainer(fresh_model("lenet5_relu"), data, TrainConfig(tta_flip=True, **FAST))
    result = trainer.evaluate(keep_logits=True, with_confusion=True)
    assert result["images"] == 70 and isinstance(result["acc"], float) and 0 <= result["acc"] <= 100
    assert result["logits"].device.type == "cpu" and result["logits"].shape == (70, 2)
    assert result["confusion"].device.type == "cpu" and int(result["confusion"].sum()) == 70
    # The figures are those of the kept logits, counted on the host.
    expected = 100.0 * (result["logits"].argmax(1) == data.test.labels).float().mean().item()
    assert result["acc"] == pytest.approx(expected)


def test_a_resumed_run_puts_the_optimiser_state_back_on_the_device(tmp_path):
    data = bar_dataset(n_train=64, n_test=32)
    config = TrainConfig(epochs=2, **FAST)
    first = Trainer(fresh_model("lenet5_relu"), data, config, out=tmp_path)
    first.callbacks.append(lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] == 1))
    first.fit()
    resumed = Trainer(fresh_model("lenet5_relu"), data, config, out=tmp_path)
    resumed.fit(resume=True)
    assert resumed.epoch == 2
    state = [v for s in resumed.optimizer.state.values() for k, v in s.items() if k != "step"]
    assert state and all(on_device(t) for t in state)


def test_the_finite_check_is_read_every_step_only_on_the_cpu():
    trainer = Trainer(fresh_model("lenet5_relu"), bar_dataset(n_train=64, n_test=32), TrainConfig(**FAST))
    assert trainer.defer_finite_check == (DEVICE.type == "cuda")


class Steps(Callback):
    """The steps run, and the learning rate the next step will use."""

    def __init__(self):
        self.seen, self.next_lr = [], {}

    def on_batch_end(self, trainer, batch):
        self.seen.append((batch.epoch, batch.step))
        self.next_lr[(batch.epoch, batch.step + 1)] = trainer.current_lr()


def poison(trainer: Trainer, at: set) -> None:
    """Make the loss NaN at the given (epoch, step) positions."""
    original = trainer.task.loss
    trainer.task.loss = lambda t, outputs, targets: (original(t, outputs, targets) * float("nan")
                                                     if trainer.batch_position[:2] in at else
                                                     original(t, outputs, targets))


def test_the_batched_finite_check_names_the_first_bad_step_and_keeps_the_last_good_checkpoint(tmp_path):
    # 96 images in batches of 32: 3 steps an epoch, fewer than FINITE_CHECK_INTERVAL, so it is read at the end
    steps = Steps()
    trainer = Trainer(fresh_model("lenet5_relu"), bar_dataset(n_train=96, n_test=32), TrainConfig(epochs=3, **FAST),
                      out=tmp_path, callbacks=[steps])
    trainer.defer_finite_check = True
    poison(trainer, {(2, 2), (2, 3)})
    with pytest.raises(TrainingDivergedError) as error:
        trainer.fit()
    lr = steps.next_lr[(2, 2)]  # the rate step 2 ran with, not the one when the check was read
    assert lr != trainer.current_lr()
    assert (f"The loss became nan at epoch 2, step 2 (learning rate {lr:.3g}). The last good checkpoint is "
            f"{tmp_path / 'last.safetensors'} (epoch 1)") in str(error.value)
    assert steps.seen[-1] == (2, 3) and trainer.epoch == 1 and load_model_checkpoint(tmp_path)[1]["epoch"] == 1


def test_the_batched_finite_check_stops_within_its_interval(monkeypatch):
    monkeypatch.setattr(trainer_module, "FINITE_CHECK_INTERVAL", 2)
    steps = Steps()
    trainer = Trainer(fresh_model("lenet5_relu"), bar_dataset(n_train=320, n_test=32), TrainConfig(epochs=1, **FAST),
                      callbacks=[steps])
    trainer.defer_finite_check = True
    poison(trainer, {(1, 3)})
    with pytest.raises(TrainingDivergedError, match="epoch 1, step 3 "):
        trainer.fit()
    assert steps.seen[-1] == (1, 4)  # read after step 4, not at the end of the 10-step epoch
