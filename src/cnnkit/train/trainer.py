"""The one training loop. Recipes, the CLI and the benchmarks all call :class:`Trainer`; none writes its own.

    bundle = load_dataset("mnist")
    model = create_model("lenet5")
    Trainer(model, bundle, TrainConfig(epochs=10, lr=0.05), out="runs/lenet5").fit()

Everything random in an epoch (shuffling, augmentation, dropout) is drawn from generators seeded by
(seed, epoch). A run resumed from the checkpoint written after epoch k therefore replays epochs k+1... exactly
as the uninterrupted run would have, and ends with the same weights.

Launched by torchrun (``torchrun --nproc-per-node N -m cnnkit train ...``), the same loop runs data-parallel:
every rank trains a DistributedDataParallel copy of the model on its shard of each global batch, the metrics
are sums all-reduced over the ranks, and only rank 0 prints and writes the run folder. See ``distributed.py``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import platform
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..card import architecture_card, build_record, card_of, model_name
from ..data.augment import AugmentConfig, Preprocess, evaluation_views
from ..data.datasets import DatasetBundle, random_subset
from ..data.loader import epoch_generator, make_loader
from ..errors import CnnkitError, ConfigError, TrainingDivergedError
from ..schema import Limit, check_dataclass, short_repr
from . import checkpoint as ckpt
from .lineage import init_fingerprints
from . import distributed
from .metrics import confusion_matrix, per_class_accuracy, topk_correct
from .optim import build_optimizer, build_schedule
from .tasks import ClassificationTask, accumulate, format_task_epoch, is_classification


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    optimizer: str = "sgd"  # sgd | adam | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "onecycle"  # constant | step | plateau | cosine | onecycle
    milestones: tuple[int, ...] = ()  # epochs at which `step` multiplies the LR by `gamma`
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    onecycle_pct: float = 0.25
    plateau_metric: str = "val_loss"
    plateau_patience: int = 2
    plateau_factor: float = 0.1
    label_smoothing: float = 0.0
    mixup: float = 0.0  # Beta(a, a) of mixup, blending image pairs and their labels (Zhang et al. 2018); 0: off
    cutmix: float = 0.0  # Beta(a, a) of CutMix, pasting a box of another image (Yun et al. 2019); both: 50/50
    ema: float = 0.0  # decay of an exponential moving average of the weights, evaluated and saved (timm's
    #                   model EMA, Keras's use_ema): e.g. 0.998 averages over the last ~500 steps; 0: off
    grad_clip: float | None = None
    accumulate: int = 1  # batches whose gradients are summed before one optimiser step
    scale_lr: bool = False  # linear scaling rule: lr * global batch / reference_batch (Goyal et al. 2017)
    reference_batch: int | None = None  # the batch `lr` was tuned for; default: batch_size (one process)
    sync_batchnorm: bool = False  # under DDP, BatchNorm statistics over the global batch instead of each rank's
    precision: str = "fp32"  # fp32 | bf16 (autocast)
    channels_last: bool = False
    compile: bool = False
    seed: int = 0
    val_split: float = 0.0  # fraction of the training set held out for validation; 0: validate on the test set
    early_stopping: int | None = None  # stop after this many epochs without improving `plateau_metric`
    augment: dict = dataclasses.field(default_factory=dict)  # crop, crop_mode, flip, cutout
    validate_every: int = 1  # classification: validate after every k-th epoch and the last; 0: the last only
    tta_flip: bool = False  # evaluate on each image and its mirror image, averaging the logits
    tta_shift: int = 0  # also on each (mirror) image moved by this many input pixels up, down, left and right
    tta_sizes: tuple[int, ...] = ()  # and those views of the images resized to each of these sizes (multi-scale)
    input_size: int | None = None  # resize/pad images to this; default: native size, or the model's when too small
    resize: str = "auto"  # auto: pad smaller images (LeNet on MNIST) | interpolate: always resize (pretrained nets)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int | None = None
    num_workers: int = 2  # image-folder decoding processes
    lr_multipliers: dict = dataclasses.field(default_factory=dict)  # {"parameter prefix": factor}
    progress: bool = True

    def __post_init__(self) -> None:
        # Checked here, at the boundary, whatever built the config (recipe, flags, API, a resumed run's
        # config.json): a bad value fails now with the field's name, not as a ZeroDivisionError mid-run.
        check_dataclass(self, TRAIN_LIMITS, _describe_option)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        if not isinstance(values, dict):
            raise ConfigError(f"training options must be a mapping of option: value, not {short_repr(values)}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(str(key) for key in set(values) - names)
        if unknown:
            raise ConfigError(f"Unknown training option(s) {short_repr(unknown, 200)}. "
                              f"Valid options: {', '.join(sorted(names))}.")
        values = dict(values)
        for key in ("milestones", "betas", "tta_sizes"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The range of each numeric TrainConfig field (types come from the annotations); see cnnkit.schema.
MAX_INPUT_SIDE = 8192
TRAIN_LIMITS = {
    "epochs": Limit(1), "batch_size": Limit(1), "eval_batch_size": Limit(1), "lr": Limit(0, low_open=True),
    "momentum": Limit(0, 1), "weight_decay": Limit(0), "betas": Limit(0, 1, high_open=True), "milestones": Limit(1),
    "gamma": Limit(0, low_open=True), "warmup_epochs": Limit(0), "onecycle_pct": Limit(0, 1, low_open=True),
    "plateau_patience": Limit(0), "plateau_factor": Limit(0, 1, low_open=True, high_open=True),
    "label_smoothing": Limit(0, 1, high_open=True), "mixup": Limit(0), "cutmix": Limit(0),
    "ema": Limit(0, 1, high_open=True), "grad_clip": Limit(0, low_open=True), "accumulate": Limit(1),
    "reference_batch": Limit(1), "precision": Limit(choices=("fp32", "bf16")), "seed": Limit(0),
    "val_split": Limit(0, 1, high_open=True), "early_stopping": Limit(0), "validate_every": Limit(0),
    "tta_shift": Limit(0), "tta_sizes": Limit(1, MAX_INPUT_SIDE), "input_size": Limit(1, MAX_INPUT_SIDE),
    "resize": Limit(choices=("auto", "interpolate")), "num_threads": Limit(1), "num_workers": Limit(0),
}
_FLAG_NAMES = {"num_threads": "--threads", "num_workers": "--workers"}


def _describe_option(name: str) -> tuple[str, str]:
    flag = _FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
    return f"training option {name}", f"fix '{name}:' in the recipe or the {flag} flag"


METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "lr", "seconds",
                  "images_per_second"]


def resolve_device(name: str, world_size: int = 1) -> torch.device:
    return distributed.device_for_this_process(name, world_size)


def model_input_size(model: nn.Module, image_shape, requested: int | None) -> tuple[int, int] | None:
    """Train at the data's native size unless asked otherwise or the architecture needs another: a model with
    a fixed input (LeNet-5 reads 32x32, so MNIST's 28x28 digits are padded) gets exactly that, and one with a
    minimum (AlexNet needs ~63 px) gets its paper's size when the images are smaller."""
    if requested:
        return (requested, requested)
    smallest, paper, fixed = input_size_limits(model)
    if paper is None:
        return None
    native = tuple(image_shape[-2:])
    if (fixed and native != paper) or min(native) < smallest:
        return paper
    return None


def input_size_limits(model: nn.Module) -> tuple[int, tuple[int, int] | None, bool]:
    """The smallest input side a model reads, its paper's input size (None when unknown) and whether that is
    the only size it reads (a fixed input: its smallest side is its paper's)."""
    card = architecture_card(model)
    if card.input_size is None:
        return 1, None, False
    smallest, paper = card.min_input_size, card.input_size
    return smallest, paper, smallest >= max(paper)


class Trainer:
    def __init__(self, model: nn.Module, data: DatasetBundle, config: TrainConfig | None = None,
                 out: str | Path | None = None, callbacks: list[Callable] = (), rank: int | None = None,
                 world_size: int | None = None, task=None, overwrite: bool = False):
        """``rank`` and ``world_size`` default to the process group's; a process started by torchrun joins its
        group here if nobody has yet. Under DDP every rank constructs a Trainer and calls ``fit``. ``task``
        (see :mod:`cnnkit.train.tasks`) defaults to classification. A new run (``fit()`` without ``resume``) refuses
        an ``out`` that already holds a run, unless ``overwrite`` (which deletes that run first)."""
        self.config = config = config or TrainConfig()
        self.data, self.out = data, Path(out) if out else None
        self.overwrite = overwrite
        self.callbacks = list(callbacks)
        # Called after every training batch as hook(trainer, loss) (e.g. the learning-rate range test of
        # lr_find.py); they may set stop_requested, which ends the epoch after that batch.
        self.batch_callbacks: list[Callable] = []
        group_rank, group_size = distributed.init_from_environment(config.device)
        self.rank = group_rank if rank is None else rank
        self.world_size = group_size if world_size is None else world_size
        if self.world_size > 1 and not distributed.is_initialized():
            raise CnnkitError(f"world_size={self.world_size} needs a torch.distributed process group: launch with "
                              "'torchrun --nproc-per-node N' (or 'cnnkit train --nproc N').")
        self.is_main = self.rank == 0
        self.device = resolve_device(config.device, self.world_size)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        if config.validate_every != 1 and (config.schedule == "plateau" or config.early_stopping):
            raise CnnkitError("The plateau schedule and early stopping read the validation metrics after every "
                              f"epoch; they cannot be used with validate_every={config.validate_every}.")
        self.stop_requested = False
        self.lineage: dict | None = None  # fingerprints of the starting weights (train/lineage.py), set by fit
        self.final_evaluation: tuple[int, dict] | None = None  # (epoch, test-set figures) when already measured
        self.task = task or ClassificationTask()  # what goes in, what is scored: see train/tasks.py

        in_channels = build_record(model).get("in_channels")
        # A task may feed the model other channels than the data's (colourisation: grey in, RGB targets).
        fed = self.task.input_channels(data) if hasattr(self.task, "input_channels") else data.image_shape[0]
        if in_channels is not None and in_channels != fed:
            source = data.name if fed == data.image_shape[0] else f"the {self.task.name} task on {data.name}"
            raise CnnkitError(f"The model reads {in_channels}-channel images but {source} has {fed}; "
                              f"build it with in_channels={fed}.")
        self.custom_step = getattr(self.task, "train_step", None)
        if self.custom_step is not None and (config.accumulate > 1 or self.world_size > 1):
            raise CnnkitError(f"the {self.task.name} task runs its own optimisation step (e.g. a GAN's discriminator "
                              "and generator updates), which supports neither gradient accumulation nor "
                              "data-parallel training; train with accumulate=1 in one process.")
        smallest, paper, fixed = input_size_limits(model)
        unreadable = [size for size in config.tta_sizes if size < smallest or (fixed and (size, size) != paper)]
        if unreadable:  # refused now, not after training when the test-time views are first taken
            raise CnnkitError(f"{type(model).__name__} cannot read the test-time sizes {unreadable}: "
                              + (f"its input is fixed at {paper[0]}x{paper[1]}" if fixed else
                                 f"it needs inputs of at least {smallest} px") + "; leave them out of tta_sizes.")
        if config.ema and self.custom_step is not None:
            raise CnnkitError(f"the {self.task.name} task runs its own optimisation steps; train it without ema.")
        if config.sync_batchnorm and self.world_size > 1:
            model = distributed.convert_batchnorm(model, self.device)
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # self.model stays the bare module (checkpoints, tools, callbacks see its own parameter names); the
        # forward and backward passes go through the DDP wrapper, which all-reduces the gradients.
        self.parallel_model = self.model
        if self.world_size > 1:
            self.parallel_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.forward_model = torch.compile(self.parallel_model) if config.compile else self.parallel_model
        # The moving average of the weights (and of the BN statistics, which belong to them), updated after each
        # optimiser step; validation, the run's model checkpoint and, after fit, self.model itself use it.
        self.ema = None
        if config.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)

        card = card_of(model)
        # Normalisation belongs to the weights: pretrained ones (or a run's) bring theirs, when it is for images
        # with as many channels; a network built from scratch is normalised with its data's own statistics.
        own_stats = card.mean is not None and len(card.mean) == fed
        mean = card.mean if own_stats else data.mean
        std = card.std if own_stats else data.std
        self.preprocess = Preprocess(mean, std, model_input_size(model, data.image_shape, config.input_size),
                                     AugmentConfig.from_dict(config.augment), config.channels_last,
                                     resize=config.resize)

        train_set, val_set = data.train, data.test
        self.val_source = "test"
        if config.val_split > 0:
            order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(config.seed))
            n_val = int(round(len(order) * config.val_split))
            train_set, val_set = data.train.subset(order[n_val:]), data.train.subset(order[:n_val])
            self.val_source = f"{n_val} images held out of the training set"
        loader_args = dict(seed=config.seed, device=self.device, rank=self.rank, world_size=self.world_size,
                           num_workers=config.num_workers)
        self.train_loader = make_loader(train_set, config.batch_size, shuffle=True, **loader_args)
        self.val_set = val_set
        self.global_batch = config.batch_size * self.world_size * config.accumulate
        self.lr_scale = self.global_batch / (config.reference_batch or config.batch_size) if config.scale_lr else 1.0
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr * self.lr_scale, config.momentum,
                                         config.weight_decay, config.nesterov, config.betas, config.lr_multipliers)
        # The schedule moves the groups' learning rates; a schedule rebuilt on resume starts from these.
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.accumulate)
        self.warmup_epochs = self._warmup_epochs()
        self.schedule = self._build_schedule()
        self.history: list[dict] = []
        self.epoch = 0
        self.best: float | None = None
        self.bad_epochs = 0

    # ------------------------------------------------------------------------------------------ helpers
    def _warmup_epochs(self) -> float:
        """A learning rate scaled up for a large global batch needs a warm-up (Goyal et al. 2017, sec. 2.2):
        one-cycle ramps up by itself; cosine gets --warmup-epochs, by default the paper's 5 epochs (at most a
        quarter of the run); the epoch-wise schedules cannot ramp within an epoch and are refused."""
        config = self.config
        if not (config.scale_lr and self.lr_scale > 1) or config.warmup_epochs or config.schedule == "onecycle":
            return config.warmup_epochs
        if config.schedule == "cosine":
            return min(5.0, config.epochs / 4)
        raise CnnkitError(f"scale_lr raises the learning rate {self.lr_scale:g}x (global batch {self.global_batch}), "
                          f"which needs a warm-up, but the {config.schedule!r} schedule steps once per epoch; use "
                          "--schedule onecycle or cosine, or train without --scale-lr.")

    def _build_schedule(self):
        config = self.config
        return build_schedule(self.optimizer, config.schedule, config.epochs, self.steps_per_epoch,
                              config.milestones, config.gamma, self.warmup_epochs, config.plateau_metric,
                              config.plateau_patience, config.plateau_factor, config.onecycle_pct)

    def autocast(self):
        if self.config.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def loss(self, outputs, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy; a model that returns auxiliary logits in training (GoogLeNet) adds them with the
        weight it declares (``auxiliary_loss_weight``, 0.3 in the paper)."""
        smoothing = self.config.label_smoothing
        if isinstance(outputs, (tuple, list)):
            main, *aux = outputs
            weight = getattr(self.model, "auxiliary_loss_weight", 0.3)
            loss = F.cross_entropy(main.float(), targets, label_smoothing=smoothing)
            return loss + sum(weight * F.cross_entropy(a.float(), targets, label_smoothing=smoothing) for a in aux)
        return F.cross_entropy(outputs.float(), targets, label_smoothing=smoothing)

    def log(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)

    # ------------------------------------------------------------------------------------------ training
    def fit(self, resume: bool = False) -> dict:
        config = self.config
        if resume and not self.out:
            raise CnnkitError("resume needs the run folder (out=...) that holds last.safetensors.")
        if self.out and self.is_main:
            ckpt.remove_temp_files(self.out)  # left by a writer that was killed before its rename
        if resume:
            self._resume()  # on every rank: each holds its own copy of the model and optimiser state
        else:
            self._claim_run_folder()
            self._initialize_from_data()
            self.lineage = {"init": init_fingerprints(self.model)}  # what `cnnkit average` checks runs share
            if self.out and self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                ckpt.atomic_write_text(self.out / "config.json", json.dumps(self.run_description(), indent=2))
        start = time.perf_counter()
        self.log(f"training {self.model_name} on {self.data.describe()}; {self.device}, {config.precision}, "
                 f"{torch.get_num_threads()} threads, validating on {self.val_source}")
        if self.world_size > 1:
            self.log(f"data-parallel over {self.world_size} processes ({torch.distributed.get_backend()}): "
                     f"batch {config.batch_size} per process, global batch {self.global_batch}"
                     + (f", learning rate x{self.lr_scale:g} (linear scaling)" if self.lr_scale != 1 else "")
                     + (", synchronised BatchNorm" if config.sync_batchnorm else ""))
        while self.epoch < config.epochs and not self.stop_requested:
            metrics = self.train_epoch(self.epoch + 1)
            self.epoch += 1
            self.history.append(metrics)
            self.schedule.step_epoch(metrics)
            stop = self._early_stopping(metrics)
            if self.out and self.is_main:
                self._write_epoch_files()
            if self.is_main and hasattr(self.task, "end_epoch"):  # e.g. a GAN's grid of samples in the run folder
                self.task.end_epoch(self, metrics)
            self.log(self.format_epoch(metrics))
            for cb in self.callbacks:
                cb(self, metrics)
            if self.world_size > 1:  # a callback that stops one rank must stop them all, or the others hang
                self.stop_requested = distributed.any_rank(self.stop_requested, self.device)
            if stop:
                self.log(f"early stopping: {config.plateau_metric} did not improve for {config.early_stopping} epochs")
                break
        if self.ema is not None:  # what was validated is what the caller gets (Keras's use_ema does the same)
            self.model.load_state_dict(self.ema.module.state_dict())
            self.ema = None
        return self._finish(time.perf_counter() - start)

    def _claim_run_folder(self) -> None:
        """A new run never writes over another one's results (see checkpoint.claim_run_folder); under DDP the
        ranks agree on the answer, so none is left waiting for the others."""
        if not self.out:
            return
        refusal = None
        if self.is_main:
            try:
                ckpt.claim_run_folder(self.out, self.overwrite, resume_hint="fit(resume=True) or --resume",
                                      overwrite_hint="Trainer(overwrite=True) or --overwrite")
            except CnnkitError as exc:
                refusal = exc
        if self.world_size > 1 and distributed.any_rank(refusal is not None, self.device) and refusal is None:
            refusal = CnnkitError(f"the main process refused the run folder {self.out} (its error is printed above).")
        if refusal is not None:
            raise refusal

    def _initialize_from_data(self, count: int = 5000) -> None:
        """A model with a data-dependent initialisation (``initialize_from_data``, e.g. cifar_fast_cnn's
        whitening filters) gets ``count`` training images drawn at random, preprocessed without augmentation. Every
        rank computes it from the same images, so DDP replicas start identical; a resumed run has it in its
        weights already."""
        initialize = getattr(self.model, "initialize_from_data", None)
        if initialize is None:
            return
        sample = random_subset(self.data.train, count, self.config.seed)
        images = getattr(sample, "images", None)
        if images is None:
            images = torch.stack([sample[i][0] for i in range(len(sample))])
        initialize(self.preprocess(images.to(self.device)).contiguous())

    @property
    def model_name(self) -> str:
        return model_name(self.model)

    def train_epoch(self, epoch: int) -> dict:
        config, model = self.config, self.model
        model.train()
        self.train_loader.set_epoch(epoch)
        # Dropout and other global draws, and augmentation: a stream of their own for each rank.
        torch.manual_seed(epoch_generator(config.seed, epoch, stream=self.rank).initial_seed())
        aug_generator = epoch_generator(config.seed, epoch, self.device, stream=self.rank)
        total_loss = torch.zeros((), device=self.device)
        sums: dict = {}
        seen, start = 0, time.perf_counter()
        progress = self._progress_bar(len(self.train_loader), f"epoch {epoch}/{config.epochs}")
        self.optimizer.zero_grad(set_to_none=True)
        for step, (images, labels) in enumerate(self.train_loader, 1):
            x, targets = self.task.prepare(self, images, labels, train=True, generator=aug_generator)
            if self.custom_step is not None:
                # The task runs forward, backward and optimiser steps itself (a GAN: discriminator, then
                # generator), drawing its noise from the epoch's generator so a resumed run replays it.
                loss, batch_metrics = self.custom_step(self, x, targets, aug_generator)
                self._check_finite(loss, epoch, step)
                self.schedule.step_batch()
            else:
                loss, batch_metrics = self._default_step(x, targets, step, len(labels), epoch)
            total_loss += loss.detach() * len(labels)
            accumulate(sums, batch_metrics)
            seen += len(labels)
            for hook in self.batch_callbacks:
                hook(self, loss.detach())
            if progress is not None:
                progress.update(1)
                if step % 20 == 0:
                    progress.set_postfix(loss=f"{total_loss.item() / seen:.4f}",
                                         img_s=f"{seen * self.world_size / (time.perf_counter() - start):.0f}")
            if self.stop_requested:
                break
        if progress is not None:
            progress.close()
        seconds = time.perf_counter() - start
        # Sums over this rank's shard; under DDP they are added up across ranks (task metrics are sums too).
        sums["loss"], sums["seen"] = total_loss.double(), torch.tensor(float(seen), device=self.device).double()
        if self.world_size > 1:
            sums = {k: distributed.all_reduce_sum(v.double()) for k, v in sorted(sums.items())}
        seen = int(sums.pop("seen").item())
        train = {"train_loss": sums.pop("loss").item() / max(seen, 1),
                 **{f"train_{k}": v for k, v in self.task.summarize(sums, seen).items()}}
        last = epoch == config.epochs
        every = config.validate_every
        if last or (every and epoch % every == 0) or not is_classification(self.task):
            # After the last epoch on the test set, with the confusion matrix that the run's summary needs too.
            final = last and self.val_set is self.data.test and is_classification(self.task)
            val = self.evaluate(self.val_set, with_confusion=final)
            if final:
                self.final_evaluation = (epoch, val)
        else:  # skipped to save time: the time-to-accuracy recipes only need the final figure
            val = {"loss": float("nan"), "acc": float("nan"), "top5": float("nan")}
        return {"epoch": epoch, **train, **{f"val_{k}": v for k, v in val.items()
                                            if k not in ("images", "confusion", "per_class_acc")},
                "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                "images_per_second": round(seen / seconds, 1)}

    def _default_step(self, x, targets, step: int, batch_size: int, epoch: int):
        """Forward, loss, backward, and an optimiser step every ``accumulate`` batches."""
        config = self.config
        updates = step % config.accumulate == 0 or step == len(self.train_loader)
        # DDP all-reduces gradients in backward(); the micro-batches before an update only accumulate.
        no_sync = self.parallel_model.no_sync() if self.world_size > 1 and not updates else nullcontext()
        with no_sync:
            with self.autocast():
                outputs = self.forward_model(x)
            loss = self.task.loss(self, outputs, targets)
            self._check_finite(loss, epoch, step)
            share = 1.0
            if self.world_size > 1:
                share = batch_size * self.world_size / self.train_loader.global_batch_size(step - 1)
            (loss * (share / config.accumulate)).backward()
        if updates:
            if config.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step_batch()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
        return loss, self.task.metrics(outputs, targets)

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        if not torch.isfinite(loss):
            last_good = (f"The last good checkpoint is {self.out / ckpt.STATE_FILE} (epoch {epoch - 1}). "
                         if self.out and epoch > 1 else "")
            raise TrainingDivergedError(
                f"The loss became {loss.item()} at epoch {epoch}, step {step} (learning rate "
                f"{self.optimizer.param_groups[0]['lr']:.3g}). " + last_good
                + "Lower the learning rate, add --grad-clip, or check the data for NaNs.")

    def _progress_bar(self, total: int, desc: str):
        if not (self.config.progress and self.is_main):
            return None
        from ..progress import progress_bar

        return progress_bar(total, desc, unit="batch")

    @property
    def evaluation_model(self) -> nn.Module:
        """What validation runs: under DDP the bare model (evaluation has no gradients to all-reduce, and DDP's
        forward could sync buffers in step with the other ranks, whose shards may hold one batch fewer); while
        training with ema, the averaged weights, in evaluation mode."""
        if self.ema is not None:
            return self.ema.module.eval()
        return self.forward_model if self.world_size == 1 else self.model

    @torch.no_grad()
    def evaluate(self, dataset=None, with_confusion: bool = False, keep_logits: bool = False) -> dict:
        """Loss, top-1 and top-5 accuracy (in %) on a split (default: the test set); with_confusion adds the
        confusion matrix and per-class accuracy; keep_logits adds every image's logits (in the split's order,
        one process only) for ensembles and calibration.

        Under DDP this is collective (call it on every rank): each rank evaluates an interleaved shard of the
        split and the sums of loss, hits and counts (and the confusion matrix) are all-reduced, so every rank
        returns the figures of the whole split."""
        if keep_logits and self.world_size > 1:
            raise CnnkitError("evaluate(keep_logits=True) needs one process: under DDP each rank sees a shard.")
        dataset = self.data.test if dataset is None else dataset
        if not is_classification(self.task):
            return self.task.evaluate(self, dataset)
        was_training = self.model.training
        self.model.eval()
        loader = make_loader(dataset, self.config.eval_batch_size, shuffle=False, device=self.device,
                             num_workers=self.config.num_workers, rank=self.rank, world_size=self.world_size)
        eval_model = self.evaluation_model
        n_classes = len(self.data.classes)
        total_loss, hits1, hits5, seen = 0.0, 0, 0, 0
        confusion = torch.zeros(n_classes, n_classes, dtype=torch.long, device=self.device)
        kept: list[torch.Tensor] = []
        for images, labels in loader:
            # Test-time views: the mirror image (and slightly moved copies) are as likely views of the object, and
            # so are the images a little larger or smaller (tta_sizes): the views' errors partly cancel.
            scales = [self.preprocess(images)] + [self.preprocess(images, size=(size, size))
                                                  for size in self.config.tta_sizes]
            with self.autocast():
                logits = torch.stack([eval_model(view).float() for x in scales for view in evaluation_views(
                    x, self.config.tta_flip, self.config.tta_shift, self.preprocess.augment.crop_mode)]).mean(0)
            if keep_logits:
                kept.append(logits.cpu())
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            hits = topk_correct(logits, labels, (1, 5))
            hits1, hits5, seen = hits1 + hits[1], hits5 + hits[5], seen + len(labels)
            if with_confusion:
                confusion += confusion_matrix(logits.argmax(1), labels, n_classes)
        self.model.train(was_training)
        if self.world_size > 1:
            sums = distributed.all_reduce_sum(torch.tensor([total_loss, hits1, hits5, seen], dtype=torch.float64,
                                                           device=self.device))
            total_loss = sums[0].item()
            hits1, hits5, seen = (int(value) for value in sums[1:].tolist())
            if with_confusion:
                distributed.all_reduce_sum(confusion)
        result = {"loss": total_loss / max(seen, 1), "acc": 100.0 * hits1 / max(seen, 1),
                  "top5": 100.0 * hits5 / max(seen, 1), "images": seen}
        if with_confusion:
            result["confusion"] = confusion.cpu()
            result["per_class_acc"] = (100 * per_class_accuracy(confusion)).cpu()
        if keep_logits:
            result["logits"] = torch.cat(kept) if kept else torch.zeros(0, n_classes)
        return result

    def _early_stopping(self, metrics: dict) -> bool:
        patience = self.config.early_stopping
        if not patience:
            return False
        value = metrics[self.config.plateau_metric]
        higher_is_better = self.config.plateau_metric.endswith(tuple(self.task.higher_is_better))
        improved = self.best is None or (value > self.best if higher_is_better else value < self.best)
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.bad_epochs >= patience

    def format_epoch(self, m: dict) -> str:
        if not is_classification(self.task):
            return format_task_epoch(m, self.config.epochs)
        # An epoch that was not validated (validate_every) says nothing about validation: "nan" reads as divergence.
        validated = not math.isnan(m["val_loss"])
        return (f"epoch {m['epoch']:>3}/{self.config.epochs}  "
                f"train loss {m['train_loss']:.4f} acc {m['train_acc']:6.2f}%  "
                + (f"val loss {m['val_loss']:.4f} acc {m['val_acc']:6.2f}% top-5 {m['val_top5']:6.2f}%  "
                   if validated else "")
                + f"lr {m['lr']:.3g}  {m['seconds']:.1f}s  {m['images_per_second']:.0f} img/s")

    # ------------------------------------------------------------------------------------ run folder files
    def run_description(self) -> dict:
        return {"model": build_record(self.model) or None, "dataset": self.data.name,
                "config": self.config.to_dict()}

    def checkpoint_meta(self) -> dict:
        return {"dataset": self.data.name, "classes": list(self.data.classes), "preprocess": self.preprocess.state(),
                "image_shape": list(self.data.image_shape), "epoch": self.epoch,
                "metrics": self.history[-1] if self.history else {}, "train_config": self.config.to_dict(),
                "task": self.task.describe(), "input_statistics": self._input_statistics(),
                "lineage": self.lineage}

    def _input_statistics(self) -> dict | None:
        """What the training images look like, so prediction can tell an input far from them (cnnkit.data.
        input_check); taken once, from images in memory (folders are decoded lazily: none)."""
        if not hasattr(self, "_input_stats"):
            from ..data.input_check import input_statistics

            images = getattr(self.data.train, "images", None)
            self._input_stats = input_statistics(images) if isinstance(images, torch.Tensor) and len(images) else None
        return self._input_stats

    def _write_epoch_files(self) -> None:
        state = {"epoch": self.epoch, "history": self.history, "best": self.best, "bad_epochs": self.bad_epochs,
                 "world_size": self.world_size, "steps_per_epoch": self.steps_per_epoch, "lr_scale": self.lr_scale,
                 "epochs": self.config.epochs, "lineage": self.lineage}
        # The training state first: it commits the epoch for --resume, which rewrites the rest from it.
        ckpt.save_train_state(self.out, self.model, self.optimizer, self.schedule, state, ema=self.ema)
        self._write_model_files()

    def _write_model_files(self) -> None:
        """The model pair and metrics.csv, both derived from the state of the epoch just committed."""
        ckpt.save_model_checkpoint(self.out, self.ema.module if self.ema is not None else self.model,
                                   self.checkpoint_meta())
        buffer = io.StringIO()
        columns = METRIC_COLUMNS if is_classification(self.task) else list(self.history[-1])
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        # Empty cells, not "nan", for the metrics of epochs that were not validated.
        writer.writerows([{k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                          for row in self.history])
        ckpt.atomic_write_text(self.out / "metrics.csv", buffer.getvalue())

    def _resume(self) -> None:
        state = ckpt.load_train_state(self.out, self.model, self.optimizer, self.schedule, ema=self.ema)
        self.epoch, self.history = state["epoch"], state["history"]
        self.best, self.bad_epochs = state.get("best"), state.get("bad_epochs", 0)
        self.lineage = state.get("lineage")
        self.log(f"resuming {self.out} after epoch {self.epoch}")
        if self.is_main and self.history:
            # A writer killed after committing last.safetensors may have left the model pair or metrics.csv an
            # epoch behind (or torn); both are rewritten from the committed state.
            self._write_model_files()
        saved_steps = state.get("steps_per_epoch", self.steps_per_epoch)
        saved_scale = state.get("lr_scale", 1.0)
        saved_epochs = state.get("epochs", self.config.epochs)
        if (saved_steps, saved_scale, saved_epochs) != (self.steps_per_epoch, self.lr_scale, self.config.epochs):
            self._refit_schedule(state.get("world_size", 1), saved_steps, saved_scale, saved_epochs)

    def _refit_schedule(self, saved_world_size: int, saved_steps: int, saved_scale: float, saved_epochs: int) -> None:
        """The run continues with another number of processes, or another epoch budget. The weights, the
        optimiser's moments and the epoch do not depend on them; the schedule does: steps per epoch change with
        the global batch, the learning rate too under scale_lr, and a per-batch schedule spans all epochs. A
        schedule that steps per batch is therefore rebuilt for this run and advanced to the start of the next
        epoch, exactly where an uninterrupted run planned this way would stand; an epoch-wise schedule keeps
        its state, its rates rescaled."""
        changes = []
        if saved_world_size != self.world_size or saved_steps != self.steps_per_epoch:
            changes.append(f"{self.world_size} process(es) instead of {saved_world_size}, {self.steps_per_epoch} "
                           f"optimiser steps per epoch instead of {saved_steps}")
        if saved_scale != self.lr_scale:
            changes.append(f"learning rate x{self.lr_scale:g} instead of x{saved_scale:g}")
        if saved_epochs != self.config.epochs:
            changes.append(f"{self.config.epochs} epochs instead of {saved_epochs}")
        self.log("the run continues with " + "; ".join(changes) + ": the learning-rate schedule is laid out again")
        if self.schedule.interval == "batch":
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                for key in ("initial_lr", "max_lr", "min_lr"):  # set by the saved schedule; torch keeps them
                    group.pop(key, None)
                group["lr"] = base
            self.schedule = self._build_schedule()
            with warnings.catch_warnings():  # stepping a scheduler without optimiser steps is the point here
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(self.epoch * self.steps_per_epoch):
                    self.schedule.step_batch()
            return
        ratio = self.lr_scale / saved_scale
        for group in self.optimizer.param_groups:
            group["lr"] *= ratio
            if "initial_lr" in group:
                group["initial_lr"] *= ratio
        scheduler = self.schedule.scheduler
        if scheduler is not None and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]

    def _finish(self, wall_seconds: float) -> dict:
        if not is_classification(self.task):
            return self.task.finish(self, wall_seconds)
        if self.final_evaluation and self.final_evaluation[0] == self.epoch:
            final = self.final_evaluation[1]
        else:
            final = self.evaluate(self.data.test, with_confusion=True)
        train_seconds = sum(m["seconds"] for m in self.history)
        train_images = sum(m["seconds"] * m["images_per_second"] for m in self.history)
        summary = {
            "model": build_record(self.model) or None, "dataset": self.data.describe(),
            "epochs_completed": self.epoch, "test_loss": final["loss"], "test_acc": final["acc"],
            "test_top5": final["top5"], "test_error": 100 - final["acc"], "test_top5_error": 100 - final["top5"],
            "per_class_acc": {c: round(float(a), 2) for c, a in zip(self.data.classes, final["per_class_acc"])},
            "wall_seconds": round(wall_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "train_images_per_second": round(train_images / max(train_seconds, 1e-9), 1),
            "config": self.config.to_dict(), "device": describe_device(self.device),
            "versions": {"python": platform.python_version(), "torch": torch.__version__},
        }
        if self.out and self.is_main:
            ckpt.atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2, default=str))
            with open(self.out / "confusion.csv", "w") as f:
                f.write("true\\predicted," + ",".join(self.data.classes) + "\n")
                f.writelines(c + "," + ",".join(map(str, row)) + "\n"
                             for c, row in zip(self.data.classes, final["confusion"].tolist()))
            if self.history:
                plot_curves(self.history, self.out / "curves.png", title=f"{self.model_name} on {self.data.name}")
        self.log(f"test accuracy {final['acc']:.2f}% (top-5 {final['top5']:.2f}%), loss {final['loss']:.4f}; "
                 f"{self.epoch} epochs in {wall_seconds:.1f}s" + (f"; run folder {self.out}" if self.out else ""))
        return summary


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {os.cpu_count()}-core {platform.processor() or platform.machine()}"


def plot_curves(history: list[dict], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch, train beside validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["train_loss"] for m in history], "o-", label="train")
    ax_loss.plot(epochs, [m["val_loss"] for m in history], "s-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [m["train_acc"] for m in history], "o-", label="train")
    ax_acc.plot(epochs, [m["val_acc"] for m in history], "s-", label="validation")
    ax_acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

