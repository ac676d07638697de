"""The Trainer's event callbacks (train/callbacks.py) and the task protocol they run beside: which events
fire, how often, in which order, and the web page's live-training callback under mixup."""

import pytest
import torch

from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer
from cnnkit.train.callbacks import BatchEnd, Callback
from cnnkit.train.tasks import ClassificationTask, Task
from helpers import bar_dataset

FAST = dict(batch_size=64, lr=0.01, optimizer="adam", weight_decay=0.0, progress=False, eval_batch_size=128)


def fresh_model():
    torch.manual_seed(0)
    return create_model("lenet5_relu", num_classes=2)


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append(("fit_start",))

    def on_epoch_start(self, trainer, epoch):
        self.events.append(("epoch_start", epoch))

    def on_batch_end(self, trainer, batch):
        assert isinstance(batch, BatchEnd) and batch.loss.ndim == 0 and not batch.loss.requires_grad
        self.events.append(("batch", batch.epoch, batch.step, batch.steps, batch.size))

    def on_epoch_end(self, trainer, metrics):
        self.events.append(("epoch_end", metrics["epoch"]))

    def on_fit_end(self, trainer, summary):
        self.events.append(("fit_end", summary["epochs_completed"]))


def test_events_fire_in_order_once_each_and_plain_functions_still_run_per_epoch(tmp_path):
    recorder, per_epoch = Recorder(), []
    trainer = Trainer(fresh_model(), bar_dataset(n_train=200), TrainConfig(epochs=2, **FAST), out=tmp_path,
                      callbacks=[recorder, lambda t, metrics: per_epoch.append(metrics["epoch"])])
    trainer.fit()
    steps = len(trainer.train_loader)  # 200 images in batches of 64: 3 full batches and one of 8
    sizes = [64, 64, 64, 8]
    expected = [("fit_start",)]
    for epoch in (1, 2):
        expected += [("epoch_start", epoch)]
        expected += [("batch", epoch, step, steps, sizes[step - 1]) for step in range(1, steps + 1)]
        expected += [("epoch_end", epoch)]
    assert recorder.events == expected + [("fit_end", 2)]
    assert per_epoch == [1, 2]


def test_a_batch_callback_can_stop_the_run_after_that_batch(tmp_path):
    class StopAfterTwo(Callback):
        def on_batch_end(self, trainer, batch):
            trainer.stop_requested = batch.step == 2

    recorder = Recorder()
    trainer = Trainer(fresh_model(), bar_dataset(n_train=256), TrainConfig(epochs=3, **FAST), out=tmp_path,
                      callbacks=[StopAfterTwo(), recorder])
    summary = trainer.fit()
    assert [e[2] for e in recorder.events if e[0] == "batch"] == [1, 2]
    assert summary["epochs_completed"] == 1 and (tmp_path / "checkpoint.safetensors").is_file()


class FakeJob:
    run_name, stop_requested = "run", False

    def __init__(self):
        self.events = []

    def publish(self, kind, data):
        self.events.append((kind, data))


@pytest.mark.parametrize("mixing", [{"mixup": 0.4}, {"cutmix": 1.0}, {}])
def test_live_training_publishes_one_event_per_batch_also_under_mixup(mixing):
    # The page's curve once came from an override of the loss, which mixup calls twice per batch.
    from cnnkit.serve.training import LiveProgress

    job = FakeJob()
    trainer = Trainer(fresh_model(), bar_dataset(n_train=200), TrainConfig(epochs=2, **FAST, **mixing),
                      callbacks=[LiveProgress(job)])
    trainer.fit()
    batches = [data for kind, data in job.events if kind == "batch"]
    steps = len(trainer.train_loader)
    assert len(batches) == 2 * steps
    assert [b["epoch"] for b in batches] == [1] * steps + [2] * steps
    assert [b["step"] for b in batches] == [round(e + s / steps, 4) for e in (0, 1) for s in range(1, steps + 1)]
    assert all(0 <= b["acc"] <= 100 and b["loss"] > 0 for b in batches)
    assert [data["epoch"] for kind, data in job.events if kind == "epoch"] == [1, 2]


def test_live_training_obeys_stop_after_the_current_batch():
    from cnnkit.serve.training import LiveProgress

    job = FakeJob()
    job.stop_requested = True
    trainer = Trainer(fresh_model(), bar_dataset(n_train=200), TrainConfig(epochs=2, **FAST),
                      callbacks=[LiveProgress(job)])
    assert trainer.fit()["epochs_completed"] == 1
    assert len([kind for kind, _ in job.events if kind == "batch"]) == 1


class MeanSquaredReconstruction(Task):
    """The smallest task: only the four required hooks; every other one is the base class's default."""

    name = "reconstruction"

    def prepare(self, trainer, images, labels, train=False, generator=None):
        x = images.float().div(255)
        return x, x.flatten(1)[:, :2]

    def loss(self, trainer, outputs, targets):
        return torch.nn.functional.mse_loss(outputs.float(), targets)

    def metrics(self, outputs, targets):
        return {"error": (outputs.detach().float() - targets).abs().mean(1).sum()}

    def summarize(self, sums, count):
        return {"error": sums["error"].item() / max(count, 1)}


def test_classification_is_a_task_and_a_task_needs_only_four_hooks(tmp_path):
    assert isinstance(ClassificationTask(), Task)
    summary = Trainer(fresh_model(), bar_dataset(n_train=128, n_test=64), TrainConfig(epochs=2, **FAST),
                      out=tmp_path, task=MeanSquaredReconstruction()).fit()
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("epoch,train_loss,train_error,val_loss,val_error,lr")
    assert summary["task"] == {"name": "reconstruction"} and summary["test_error"] >= 0
