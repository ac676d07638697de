"""TensorBoard logging (TrainConfig(tensorboard=True), `cnnkit train --tensorboard`): what the event files hold
is read back with TensorBoard's own reader and checked against the run's metrics.csv and the batches seen."""

import csv
import io
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import cnnkit.data
from cnnkit.cli import main
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig, Trainer
from cnnkit.train.callbacks import Callback
from helpers import bar_dataset

FAST = dict(batch_size=32, lr=0.01, optimizer="adam", weight_decay=0.0, progress=False, eval_batch_size=64)


def fresh_model():
    torch.manual_seed(0)
    return create_model("lenet5_relu", num_classes=2)


def read_events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def as_float32(value) -> float:
    """What TensorBoard stores of a number: a 32-bit float."""
    return float(np.float32(value))


class BatchRecorder(Callback):
    def __init__(self):
        self.losses, self.lrs = [], []

    def on_batch_end(self, trainer, batch):
        self.losses.append(float(batch.loss))
        self.lrs.append(trainer.current_lr())


def test_the_event_file_holds_the_metrics_csv_and_every_batch(tmp_path):
    recorder = BatchRecorder()
    # validate_every=2 over 3 epochs: epoch 1 is not validated, and its empty cells are no TensorBoard points.
    config = TrainConfig(epochs=3, validate_every=2, tensorboard=True, tensorboard_steps=1, **FAST)
    trainer = Trainer(fresh_model(), bar_dataset(n_train=64, n_test=32), config, out=tmp_path, callbacks=[recorder])
    trainer.fit()
    rows = list(csv.DictReader(io.StringIO((tmp_path / "metrics.csv").read_text())))
    columns = [name for name in rows[0] if name != "epoch"]
    events = read_events(tmp_path / "tensorboard")
    tags = events.Tags()
    assert sorted(tags["scalars"]) == sorted([f"epoch/{name}" for name in columns] + ["step/loss", "step/lr"])
    for name in columns:
        expected = [(int(row["epoch"]), as_float32(row[name])) for row in rows if row[name] != ""]
        assert scalars(events, f"epoch/{name}") == expected, name
    assert [step for step, _ in scalars(events, "epoch/val_acc")] == [2, 3]
    assert scalars(events, "epoch/train_loss") == [(m["epoch"], as_float32(m["train_loss"])) for m in trainer.history]
    steps = list(range(1, 3 * 2 + 1))  # 64 images in batches of 32, three epochs
    assert scalars(events, "step/loss") == list(zip(steps, map(as_float32, recorder.losses)))
    assert scalars(events, "step/lr") == list(zip(steps, map(as_float32, recorder.lrs)))
    assert sorted(tags["images"]) == ["curves", "first_layer_filters"]
    curves = events.Images("curves")[-1]
    with Image.open(tmp_path / "curves.png") as png:
        assert (curves.width, curves.height) == png.size
    filters = Image.open(io.BytesIO(events.Images("first_layer_filters")[-1].encoded_image_string))
    assert min(filters.size) >= 30  # lenet's six 5x5 kernels, each enlarged to 30x30


def test_a_resumed_run_continues_its_tensorboard_curves(tmp_path):
    data, config = bar_dataset(n_train=64, n_test=32), TrainConfig(epochs=2, tensorboard=True, **FAST)
    part = Trainer(fresh_model(), data, config, out=tmp_path)
    part.callbacks.append(lambda trainer, metrics: setattr(trainer, "stop_requested", metrics["epoch"] == 1))
    part.fit()
    resumed = Trainer(fresh_model(), data, config, out=tmp_path)
    resumed.fit(resume=True)
    events = read_events(tmp_path / "tensorboard")
    assert scalars(events, "epoch/val_loss") == [(m["epoch"], as_float32(m["val_loss"])) for m in resumed.history]


def test_tensorboard_without_the_package_or_a_run_folder_is_refused(tmp_path, monkeypatch):
    data = bar_dataset(n_train=32, n_test=16)
    with pytest.raises(CnnkitError, match="into the run folder: give the Trainer out=RUN_DIR"):
        Trainer(fresh_model(), data, TrainConfig(tensorboard=True, **FAST))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(CnnkitError, match=r"needs the tensorboard package: pip install 'cnnkit\[tensorboard\]'"):
        Trainer(fresh_model(), data, TrainConfig(tensorboard=True, **FAST), out=tmp_path)
    assert not (tmp_path / "tensorboard").exists()


def test_cnnkit_train_tensorboard_flags_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cnnkit.data, "load_dataset", lambda name, **kwargs: bar_dataset(n_train=32, n_test=16))
    out = tmp_path / "run"
    common = ["--batch-size", "16", "--optimizer", "adam", "--lr", "0.001", "--no-progress"]
    assert main(["train", "lenet5_relu", "--data", "bars", "--epochs", "1", "--tensorboard", "--tensorboard-steps",
                 "1", "-o", str(out), *common]) == 0
    assert "device cpu [cpu: " in capsys.readouterr().out
    assert [step for step, _ in scalars(read_events(out / "tensorboard"), "step/loss")] == [1, 2]
    # Logging is not part of what a run is: a resumed run may switch it on or off.
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-tensorboard"]) == 0
    assert [step for step, _ in scalars(read_events(out / "tensorboard"), "epoch/train_loss")] == [1]
