"""The Train page's job: one small training run at a time, in a background thread, reported as events.

The run is cnnkit's one training loop (:class:`~cnnkit.train.Trainer`) writing an ordinary run folder into the
checkpoints folder, so the model appears in the Draw page's list after its first epoch. A small callback,
:class:`LiveProgress`, reports every batch's loss and accuracy, so the page's curve moves within an epoch.
"""

from __future__ import annotations

import datetime as _dt
import functools
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field

from ..data import load_dataset
from ..data.datasets import DatasetBundle, random_subset
from ..errors import CnnkitError
from ..models import create_model
from ..train import TrainConfig, Trainer
from ..train.callbacks import BatchEnd, Callback
from .errors import NoTrainingError, TrainingBusyError
from .inference import TRAINING_THREADS, use_threads
from .jobs import EventLog
from .pictures import filters_picture

FILTER_SNAPSHOTS_PER_EPOCH = 8
TEST_IMAGES = 1000  # validation on a fixed slice of the test set keeps an epoch's end quick


@functools.lru_cache(maxsize=2)
def cached_dataset(name: str) -> DatasetBundle:
    """A couple of seconds to read and check MNIST; kept for the next run (the training images are never
    modified: runs take subsets, which are copies)."""
    return load_dataset(name)


class TrainRequest(BaseModel):
    model: Literal["lenet5_relu", "lenet5"] = "lenet5_relu"
    dataset: Literal["mnist", "fashion-mnist"] = "mnist"
    epochs: int = Field(2, ge=1, le=20)
    lr: float = Field(0.003, gt=0, le=1)
    train_images: int = Field(5000, ge=200, le=60000)
    batch_size: int = Field(64, ge=8, le=512)
    seed: int = Field(0, ge=0)


class LiveProgress(Callback):
    """Reports every training batch (and now and then the model's filters) to a job, and obeys its Stop: one
    ``batch`` event per batch the loop trains, whatever the task does inside it (mixup, CutMix)."""

    def __init__(self, job: TrainingJob, snapshots_per_epoch: int = FILTER_SNAPSHOTS_PER_EPOCH):
        self.job, self.snapshots_per_epoch = job, snapshots_per_epoch

    def on_batch_end(self, trainer, batch: BatchEnd) -> None:
        step = trainer.epoch + batch.step / batch.steps  # in epochs, for the x axis
        # The task's hit count (mixed labels count in their mixing proportion) over the batch's images.
        correct = batch.metrics.get("correct")
        acc = 100.0 * float(correct) / batch.size if correct is not None else None
        self.job.publish("batch", {"epoch": batch.epoch, "step": round(step, 4), "loss": float(batch.loss),
                                   "acc": acc})
        if batch.step % max(1, batch.steps // self.snapshots_per_epoch) == 0:
            self.job.publish("filters", {"step": round(step, 4), **filters_picture(trainer.model)})
        if self.job.stop_requested:
            trainer.stop_requested = True  # the loop finishes this batch, evaluates and saves the checkpoint

    def on_epoch_end(self, trainer, metrics: dict) -> None:
        self.job.publish("epoch", {**metrics, "run": self.job.run_name})


class TrainingJob(EventLog):
    def __init__(self, request: TrainRequest, run_name: str):
        super().__init__()  # starting -> running -> finished | stopped | failed
        self.request, self.run_name = request, run_name
        self.stop_requested = False
        self.started = time.time()

    def describe(self) -> dict:
        return {"run": self.run_name, "state": self.state, "settings": self.request.model_dump(),
                "events": len(self.events), "stop_requested": self.stop_requested,
                "started": _dt.datetime.fromtimestamp(self.started, _dt.UTC).isoformat(timespec="seconds")}


class TrainingManager:
    def __init__(self, checkpoints_dir: Path, busy_elsewhere: Callable[[], str | None] = lambda: None):
        """``busy_elsewhere``: why another page's model work (the Teach page's fit) keeps a run from starting."""
        self.checkpoints_dir = Path(checkpoints_dir)
        self.busy_elsewhere = busy_elsewhere
        self.job: TrainingJob | None = None
        self._lock = threading.Lock()

    def start(self, request: TrainRequest) -> TrainingJob:
        with self._lock:
            if self.job is not None and not self.job.done:
                raise TrainingBusyError(f"Training run {self.job.run_name!r} is still {self.job.state}; this "
                                        "machine trains one model at a time. Wait for it to finish, or stop it.")
            reason = self.busy_elsewhere()
            if reason:
                raise TrainingBusyError(reason)
            self.job = TrainingJob(request, self._new_run_name(request))
        threading.Thread(target=self._run, args=(self.job,), name=f"train-{self.job.run_name}", daemon=True).start()
        return self.job

    def stop(self) -> TrainingJob:
        job = self.job
        if job is None or job.done:
            raise NoTrainingError("No training run is in progress; start one first.")
        job.stop_requested = True
        return job

    def _new_run_name(self, request: TrainRequest) -> str:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = f"{request.model}-{request.dataset}-{stamp}"
        name, suffix = base, 2
        while (self.checkpoints_dir / name).exists():
            name, suffix = f"{base}-{suffix}", suffix + 1
        return name

    def _run(self, job: TrainingJob) -> None:
        request = job.request
        use_threads(TRAINING_THREADS)  # the inference workers set fewer for themselves; the run keeps the default
        try:
            full = cached_dataset(request.dataset)
            order = torch.randperm(len(full.train), generator=torch.Generator().manual_seed(request.seed))
            count = min(request.train_images, len(full.train))
            data = DatasetBundle(full.name, full.train.subset(order[:count]),
                                 random_subset(full.test, TEST_IMAGES),
                                 full.classes, full.mean, full.std,
                                 note=f"{count:,} training images, {TEST_IMAGES:,} test images drawn at random")
            torch.manual_seed(request.seed)
            model = create_model(request.model, num_classes=len(data.classes), in_channels=data.image_shape[0])
            config = TrainConfig(epochs=request.epochs, lr=request.lr, batch_size=request.batch_size,
                                 optimizer="adam", weight_decay=0.0, schedule="onecycle", seed=request.seed,
                                 progress=False, num_workers=0)
            trainer = Trainer(model, data, config, out=self.checkpoints_dir / job.run_name,
                              callbacks=[LiveProgress(job)])
            job.state = "running"
            job.publish("started", {"run": job.run_name, "settings": request.model_dump(),
                                    "batches_per_epoch": len(trainer.train_loader), "data": data.describe(),
                                    **filters_picture(model)})
            if job.stop_requested:
                trainer.stop_requested = True
            summary = trainer.fit()
            saved = summary["epochs_completed"] > 0  # stopped before the first batch: nothing to keep
            job.finish("stopped" if job.stop_requested else "finished", {
                "run": job.run_name, "epochs_completed": summary["epochs_completed"], "test_acc": summary["test_acc"],
                "checkpoint": job.run_name if saved else None, **filters_picture(trainer.model)})
        except CnnkitError as exc:
            job.finish("failed", {"run": job.run_name, "error": str(exc)})
        except Exception as exc:  # the server must outlive a bug in a run; the page shows what happened
            traceback.print_exc()
            job.finish("failed", {"run": job.run_name, "error": f"internal error: {type(exc).__name__}: {exc}"})
