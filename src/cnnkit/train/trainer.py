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

import json
import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from ..card import architecture_card, build_record, card_of, model_name
from ..data.augment import AugmentConfig, Preprocess, colour_principal_components
from ..data.datasets import DatasetBundle, random_subset
from ..data.input_check import input_statistics
from ..data.loader import epoch_generator, make_loader
from ..errors import CnnkitError, TrainingDivergedError
from ..progress import progress_bar
from . import checkpoint as ckpt
from . import distributed, heap, state, threads
from .callbacks import BatchEnd, Callback, TensorBoardLogger, notify
from .config import MAX_INPUT_SIDE, TRAIN_LIMITS, TrainConfig  # noqa: F401  (importable from here as before)
from .gradients import GradientRecorder
from .lineage import init_fingerprints
from .optim import build_optimizer, build_schedule
from .report import METRIC_COLUMNS, describe_device, describe_setup, plot_curves  # noqa: F401  (importable as before)
from .tasks import ClassificationTask, Task, accumulate

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# fp16 batches in a row whose loss may be inf or NaN (their steps skipped) before the run counts as diverged.
FP16_NONFINITE_PATIENCE = 20
# On a GPU, reading whether a step's loss is finite makes the CPU wait for that step's kernels, so it cannot queue
# the next step's meanwhile. There the first non-finite step of an epoch is noted on the device and read every
# FINITE_CHECK_INTERVAL steps and at the epoch's end: the run stops with the same epoch and step, a few steps later.
FINITE_CHECK_INTERVAL = 50


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
                 out: str | Path | None = None, callbacks: list[Callback | Callable] = (), rank: int | None = None,
                 world_size: int | None = None, task: Task | None = None, overwrite: bool = False):
        """``rank`` and ``world_size`` default to the process group's; a process started by torchrun joins its
        group here if nobody has yet. Under DDP every rank constructs a Trainer and calls ``fit``. ``task``
        (see :mod:`cnnkit.train.tasks`) defaults to classification. ``callbacks``: :class:`~cnnkit.train.
        callbacks.Callback` objects, or functions f(trainer, metrics) called after every epoch. A new run
        (``fit()`` without ``resume``) refuses an ``out`` that already holds a run, unless ``overwrite`` (which
        deletes that run first)."""
        self.config = config = config or TrainConfig()
        cpu_times = threads.read_cpu_times(threads.affinity_cpus())  # the thread policy's first interval starts
        self.data, self.out = data, Path(out) if out else None
        self.overwrite = overwrite
        self.callbacks = list(callbacks)
        self.gradient_recorder = None  # per-layer gradient norms (train/gradients.py), only when asked for
        if config.record_gradients:
            self.gradient_recorder = GradientRecorder(config.record_gradients)
            self.callbacks.append(self.gradient_recorder)
        self._join_process_group(rank, world_size)
        if config.validate_every != 1 and (config.schedule == "plateau" or config.early_stopping):
            raise CnnkitError("The plateau schedule and early stopping read the validation metrics after every "
                              f"epoch; they cannot be used with validate_every={config.validate_every}.")
        self.stop_requested = False
        self.lineage: dict | None = None  # fingerprints of the starting weights (train/lineage.py), set by fit
        self.final_evaluation: tuple[int, dict] | None = None  # (epoch, test-set figures) when already measured
        self.task = task or ClassificationTask()  # what goes in, what is scored: see train/tasks.py
        # A task may feed the model other channels than the data's (colourisation: grey in, RGB targets).
        fed = self.task.input_channels(data)
        self._check_model_reads(model, fed)
        self._check_task_options(model)
        self._place_model(model)
        mean, std = self._normalisation(model, fed)
        self.preprocess = Preprocess(mean, std, model_input_size(model, data.image_shape, config.input_size),
                                     AugmentConfig.from_dict(config.augment), config.channels_last,
                                     resize=config.resize)
        if self.preprocess.augment.lighting:  # AlexNet's PCA lighting: the colour axes of the training set,
            # from 2,000 images (millions of pixels for a 3x3 covariance; an image folder is decoded for it)
            self.preprocess.lighting_components = colour_principal_components(self._training_images(2000))
        self._build_loaders()
        self.thread_policy = self._thread_policy(model, fed, cpu_times)
        self.global_batch = config.batch_size * self.world_size * config.accumulate
        self.lr_scale = self.global_batch / (config.reference_batch or config.batch_size) if config.scale_lr else 1.0
        self.optimizer = build_optimizer(self.model, config.optimizer, config.lr * self.lr_scale, config.momentum,
                                         config.weight_decay, config.nesterov, config.betas, config.lr_multipliers)
        # The schedule moves the groups' learning rates; a schedule rebuilt on resume starts from these.
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.steps_per_epoch = math.ceil(len(self.train_loader) / config.accumulate)
        self.warmup_epochs = self._warmup_epochs()
        self.schedule = self.build_schedule()
        # fp16 autocast: the loss is scaled up before backward, so that small gradients survive fp16's range,
        # and the gradients back down before the step, which is skipped when one overflowed (GradScaler; at
        # other precisions a pass-through). Its scale is part of the training state that resume restores.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.nonfinite_losses = 0  # fp16 batches in a row whose loss was inf or NaN
        self.skipped_steps = 0  # fp16 optimiser steps the scaler skipped in this fit
        self._attach_tensorboard()
        self.history: list[dict] = []
        self.epoch = 0
        self.best: float | None = None
        self.bad_epochs = 0

    # ------------------------------------------------------------------------------------------ set-up
    def _join_process_group(self, rank: int | None, world_size: int | None) -> None:
        config = self.config
        group_rank, group_size = distributed.init_from_environment(config.device)
        self.rank = group_rank if rank is None else rank
        self.world_size = group_size if world_size is None else world_size
        if self.world_size > 1 and not distributed.is_initialized():
            raise CnnkitError(f"world_size={self.world_size} needs a torch.distributed process group: launch with "
                              "'torchrun --nproc-per-node N' (or 'cnnkit train --nproc N').")
        self.is_main = self.rank == 0
        self.device = resolve_device(config.device, self.world_size)
        if self.device.type == "cuda" and not torch.are_deterministic_algorithms_enabled():
            # cuDNN times its convolution algorithms once per input shape (a run has one or two) and keeps the
            # fastest; not under torch.use_deterministic_algorithms, as the timed choice may vary between runs.
            torch.backends.cudnn.benchmark = True
        # The finite-loss check is read every step on the CPU, where that is free, in batches on a GPU (see
        # FINITE_CHECK_INTERVAL); fp16's loss scaler reads its overflow flag every step anyway.
        self.defer_finite_check = self.device.type == "cuda"
        self._nonfinite: tuple[torch.Tensor, torch.Tensor] | None = None  # (first step, its loss) on the device
        self._step_lrs: dict[int, float] = {}  # learning rate of each step since the last read
        if config.num_threads:
            torch.set_num_threads(config.num_threads)

    def _thread_policy(self, model: nn.Module, fed: int, since: threads.CpuTimes | None) -> threads.ThreadPolicy | None:
        """On a CPU, without --threads or OMP_NUM_THREADS, the intra-op threads follow the cores other processes
        leave free (train/threads.py); the policy runs as the first callback, re-checking during the epochs."""
        self.fixed_threads = threads.automatic_threads(self.config.num_threads, self.world_size)
        if self.fixed_threads or self.device.type != "cpu":
            return None
        size = self.preprocess.input_size or tuple(self.data.image_shape[-2:])
        flops = threads.training_flops_per_step(model, (fed, *size), self.config.batch_size)
        policy = threads.ThreadPolicy(flops, since=since, log=self.log)
        self.callbacks.insert(0, policy)
        return policy

    def model_description(self) -> dict | None:
        """How the model was built (name and arguments), for config.json and summary.json."""
        return build_record(self.model) or None

    @property
    def model_name(self) -> str:
        return model_name(self.model)

    def _check_model_reads(self, model: nn.Module, fed: int) -> None:
        in_channels = build_record(model).get("in_channels")
        data = self.data
        if in_channels is not None and in_channels != fed:
            source = data.name if fed == data.image_shape[0] else f"the {self.task.name} task on {data.name}"
            raise CnnkitError(f"The model reads {in_channels}-channel images but {source} has {fed}; "
                              f"build it with in_channels={fed}.")
        smallest, paper, fixed = input_size_limits(model)
        unreadable = [size for size in self.config.tta_sizes
                      if size < smallest or (fixed and (size, size) != paper)]
        if unreadable:  # refused now, not after training when the test-time views are first taken
            raise CnnkitError(f"{type(model).__name__} cannot read the test-time sizes {unreadable}: "
                              + (f"its input is fixed at {paper[0]}x{paper[1]}" if fixed else
                                 f"it needs inputs of at least {smallest} px") + "; leave them out of tta_sizes.")

    def _check_task_options(self, model: nn.Module) -> None:
        config = self.config
        if self.task.runs_own_step and (config.accumulate > 1 or self.world_size > 1):
            raise CnnkitError(f"the {self.task.name} task runs its own optimisation step (e.g. a GAN's discriminator "
                              "and generator updates), which supports neither gradient accumulation nor "
                              "data-parallel training; train with accumulate=1 in one process.")
        if (config.ema or config.record_gradients) and self.task.runs_own_step:
            option = "ema" if config.ema else "record_gradients"
            raise CnnkitError(f"the {self.task.name} task runs its own optimisation steps; train it without {option}.")
        if config.precision == "fp16" and self.task.runs_own_step:
            raise CnnkitError(f"the {self.task.name} task runs its own optimisation steps, without fp16's loss "
                              "scaling; train it with precision fp32 or bf16.")

    def _attach_tensorboard(self) -> None:
        """With ``tensorboard``, the main process also logs to RUN_DIR/tensorboard (see callbacks.TensorBoardLogger)."""
        config = self.config
        if not config.tensorboard:  # tensorboard_steps too is off then: a resumed run may turn logging off
            return
        if not self.out:
            raise CnnkitError("tensorboard=True writes its logs into the run folder: give the Trainer out=RUN_DIR.")
        if self.is_main:
            self.callbacks.append(TensorBoardLogger(self.out / "tensorboard", config.tensorboard_steps))

    def _place_model(self, model: nn.Module) -> None:
        config = self.config
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

    def _normalisation(self, model: nn.Module, fed: int) -> tuple:
        """Normalisation belongs to the weights: pretrained ones (or a run's) bring theirs, when it is for images
        with as many channels; a network built from scratch is normalised with its data's own statistics."""
        card = card_of(model)
        own_stats = card.mean is not None and len(card.mean) == fed
        return (card.mean, card.std) if own_stats else (self.data.mean, self.data.std)

    def _build_loaders(self) -> None:
        config, data = self.config, self.data
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

    def build_schedule(self):
        config = self.config
        return build_schedule(self.optimizer, config.schedule, config.epochs, self.steps_per_epoch,
                              config.milestones, config.gamma, self.warmup_epochs, config.plateau_metric,
                              config.plateau_patience, config.plateau_factor, config.onecycle_pct)

    def autocast(self):
        dtype = AUTOCAST_DTYPES.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()

    def log(self, text: str) -> None:
        if self.is_main:
            print(text, flush=True)

    def current_lr(self) -> float:
        """The schedule's learning rate now, in the units of ``config.lr``: a group's rate over its multiplier
        (``lr_multipliers``), so biases trained at 64x do not show as the run's rate."""
        group = self.optimizer.param_groups[0]
        return group["lr"] / group.get("lr_multiplier", 1.0)

    # ------------------------------------------------------------------------------------------ training
    def fit(self, resume: bool = False) -> dict:
        config = self.config
        self._start(resume)
        notify(self.callbacks, "on_fit_start", self)
        start = time.perf_counter()
        while self.epoch < config.epochs and not self.stop_requested:
            notify(self.callbacks, "on_epoch_start", self, self.epoch + 1)
            metrics = self.train_epoch(self.epoch + 1)
            self.epoch += 1
            self.history.append(metrics)
            self.schedule.step_epoch(metrics)
            stop = self._early_stopping(metrics)
            if self.out and self.is_main:
                self._write_epoch_files()
            if self.is_main:  # e.g. a GAN's grid of samples in the run folder
                self.task.end_epoch(self, metrics)
            self.log(self.task.format_epoch(metrics, config.epochs))
            notify(self.callbacks, "on_epoch_end", self, metrics)
            if self.world_size > 1:  # a callback that stops one rank must stop them all, or the others hang
                self.stop_requested = distributed.any_rank(self.stop_requested, self.device)
            if stop:
                self.log(f"early stopping: {config.plateau_metric} did not improve for {config.early_stopping} epochs")
                break
        if self.ema is not None:  # what was validated is what the caller gets (Keras's use_ema does the same)
            self.model.load_state_dict(self.ema.module.state_dict())
            self.ema = None
        if self.skipped_steps:
            self.log(f"fp16: {self.skipped_steps} optimiser step(s) skipped for inf/NaN gradients; loss scale now "
                     f"{self.scaler.get_scale():g}")
        summary = self.task.finish(self, time.perf_counter() - start)
        notify(self.callbacks, "on_fit_end", self, summary)
        return summary

    def _start(self, resume: bool) -> None:
        """A new run claims and initialises its folder; a resumed one reads its training state back."""
        config = self.config
        if resume and not self.out:
            raise CnnkitError("resume needs the run folder (out=...) that holds last.safetensors.")
        if self.out and self.is_main:
            ckpt.remove_temp_files(self.out)  # left by a writer that was killed before its rename
        if resume:
            state.resume(self)  # on every rank: each holds its own copy of the model and optimiser state
        else:
            self._claim_run_folder()
            self._initialize_from_data()
            self.lineage = {"init": init_fingerprints(self.model)}  # what `cnnkit average` checks runs share
            if self.out and self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                ckpt.atomic_write_text(self.out / "config.json", json.dumps(self.run_description(), indent=2))
        policy = self.thread_policy.start() if self.thread_policy else self.fixed_threads
        self.log(f"training {self.model_name} on {self.data.describe()}; "
                 + describe_setup(self.device, config.device, config.precision, torch.get_num_threads())
                 + f"; validating on {self.val_source}")
        if self.device.type == "cpu":  # with glibc's thresholds for the steps' recurring tensors (train/heap.py)
            self.log("; ".join(filter(None, [policy, heap.keep_freed_memory()])))
        if self.world_size > 1:
            self.log(f"data-parallel over {self.world_size} processes ({torch.distributed.get_backend()}): "
                     f"batch {config.batch_size} per process, global batch {self.global_batch}"
                     + (f", learning rate x{self.lr_scale:g} (linear scaling)" if self.lr_scale != 1 else "")
                     + (", synchronised BatchNorm" if config.sync_batchnorm else ""))

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
        initialize(self.preprocess(self._training_images(count).to(self.device)).contiguous())

    def _training_images(self, count: int) -> torch.Tensor:
        """``count`` training images drawn at random (the same ones on every rank and on resume), as a uint8 batch."""
        sample = random_subset(self.data.train, count, self.config.seed)
        images = getattr(sample, "images", None)
        return images if images is not None else torch.stack([sample[i][0] for i in range(len(sample))])

    def train_epoch(self, epoch: int) -> dict:
        config, model = self.config, self.model
        model.train()
        self.train_loader.set_epoch(epoch)
        # Dropout and other global draws, and augmentation: a stream of their own for each rank.
        torch.manual_seed(epoch_generator(config.seed, epoch, stream=self.rank).initial_seed())
        aug_generator = epoch_generator(config.seed, epoch, self.device, stream=self.rank)
        total_loss, loss_images = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        sums: dict = {}
        seen, start, steps = 0, time.perf_counter(), len(self.train_loader)
        progress = self._progress_bar(steps, f"epoch {epoch}/{config.epochs}")
        self.optimizer.zero_grad(set_to_none=True)
        self._nonfinite, self._step_lrs = None, {}
        for step, (images, labels) in enumerate(self.train_loader, 1):
            self.batch_position = (epoch, step, len(labels))
            x, targets = self.task.prepare(self, images, labels, train=True, generator=aug_generator)
            loss, batch_metrics = self.task.train_step(self, x, targets, aug_generator)
            if self.task.runs_own_step:
                # The task ran forward, backward and optimiser steps itself (a GAN: discriminator, then
                # generator), drawing its noise from the epoch's generator so a resumed run replays it.
                self._watch_finite(loss, epoch, step)
                self.schedule.step_batch()
            loss = loss.detach()
            # Only an fp16 batch whose step was skipped has a non-finite loss here; it stays out of the mean.
            finite = torch.isfinite(loss)
            total_loss += torch.where(finite, loss, 0.0) * len(labels)
            loss_images += finite * len(labels)
            accumulate(sums, batch_metrics)
            seen += len(labels)
            notify(self.callbacks, "on_batch_end", self, BatchEnd(epoch, step, steps, len(labels), loss, batch_metrics))
            if progress is not None:
                progress.update(1)
                if step % 20 == 0:
                    progress.set_postfix(loss=f"{total_loss.item() / seen:.4f}",
                                         img_s=f"{seen * self.world_size / (time.perf_counter() - start):.0f}")
            if step % FINITE_CHECK_INTERVAL == 0:
                self._raise_if_nonfinite(epoch)
            if self.stop_requested:
                break
        if progress is not None:
            progress.close()
        self._raise_if_nonfinite(epoch)  # before the epoch's metrics and checkpoint: the last good one is kept
        seconds = time.perf_counter() - start
        # Sums over this rank's shard; under DDP they are added up across ranks (task metrics are sums too).
        sums["loss"], sums["loss_images"] = total_loss.double(), loss_images.double()
        sums["seen"] = torch.tensor(float(seen), device=self.device).double()
        return self._epoch_metrics(epoch, sums, seconds)

    def _epoch_metrics(self, epoch: int, sums: dict, seconds: float) -> dict:
        """The epoch's row of metrics.csv: the training sums as the task reports them, then validation."""
        if self.world_size > 1:
            sums = {k: distributed.all_reduce_sum(v.double()) for k, v in sorted(sums.items())}
        seen = int(sums.pop("seen").item())
        train = {"train_loss": sums.pop("loss").item() / max(sums.pop("loss_images").item(), 1),
                 **{f"train_{k}": v for k, v in self.task.summarize(sums, seen).items()}}
        val = self.task.validate(self, epoch)
        return {"epoch": epoch, **train, **{f"val_{k}": v for k, v in val.items()
                                            if k not in ("images", "confusion", "per_class_acc")},
                "lr": self.current_lr(), "seconds": round(seconds, 3),
                "images_per_second": round(seen / seconds, 1)}

    def gradient_step(self, x, targets):
        """Forward, loss, backward, and an optimiser step every ``accumulate`` batches (the default
        ``Task.train_step``); returns the batch's loss and the task's metric sums."""
        config = self.config
        epoch, step, batch_size = self.batch_position
        updates = step % config.accumulate == 0 or step == len(self.train_loader)
        # DDP all-reduces gradients in backward(); the micro-batches before an update only accumulate.
        no_sync = self.parallel_model.no_sync() if self.world_size > 1 and not updates else nullcontext()
        with no_sync:
            with self.autocast():
                outputs = self.forward_model(x)
            loss = self.task.loss(self, outputs, targets)
            self._watch_finite(loss, epoch, step)
            share = 1.0
            if self.world_size > 1:
                share = batch_size * self.world_size / self.train_loader.global_batch_size(step - 1)
            self.scaler.scale(loss * (share / config.accumulate)).backward()
        if updates:
            self._optimizer_step()
        return loss, self.task.metrics(outputs, targets)

    def _optimizer_step(self) -> None:
        """One update from the accumulated gradients; under fp16 the scaler unscales them first and skips the
        update when one is inf or NaN (the scale then halves), as GradScaler does."""
        config, scaler = self.config, self.scaler
        notify(self.callbacks, "on_before_optimizer_step", self)  # gradients complete, still scaled under fp16
        if config.grad_clip:
            scaler.unscale_(self.optimizer)  # the norm of the true gradients, not of the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        scale = scaler.get_scale() if scaler.is_enabled() else None
        scaler.step(self.optimizer)
        scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        stepped = scale is None or scaler.get_scale() >= scale  # the scale shrinks only when a step was skipped
        self.skipped_steps += not stepped
        with warnings.catch_warnings():
            # A skipped step still advances the schedule (it counts batches), which torch warns of when the
            # very first one is skipped: expected here.
            warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)`", UserWarning)
            self.schedule.step_batch()
        if self.ema is not None and stepped:
            self.ema.update_parameters(self.model)

    def _watch_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        """Stop a diverged run: at once where reading the loss is free (see ``defer_finite_check``), otherwise
        note the epoch's first non-finite step on the device for :meth:`_raise_if_nonfinite` to read."""
        if not self.defer_finite_check or self.scaler.is_enabled():
            return self._check_finite(loss, epoch, step)
        loss = loss.detach().float()
        if self._nonfinite is None:
            self._nonfinite = (torch.full((), -1, dtype=torch.long, device=loss.device), torch.zeros_like(loss))
        first, value = self._nonfinite
        newly = ~torch.isfinite(loss) & (first < 0)
        self._nonfinite = (torch.where(newly, step, first), torch.where(newly, loss, value))
        self._step_lrs[step] = self.current_lr()

    def _raise_if_nonfinite(self, epoch: int) -> None:
        """Read what :meth:`_watch_finite` noted (one wait for the GPU) and stop the run if a loss was not finite."""
        if self._nonfinite is None:
            return
        first, value = self._nonfinite
        step = int(first)
        if step >= 0:
            raise self._diverged(float(value), epoch, step, self._step_lrs.get(step, self.current_lr()))
        self._step_lrs = {}

    def _check_finite(self, loss: torch.Tensor, epoch: int, step: int) -> None:
        if torch.isfinite(loss):
            self.nonfinite_losses = 0
            return
        if self.scaler.is_enabled():  # fp16 overflows now and then: the scaler skips the step, up to a point
            self.nonfinite_losses += 1
            if self.nonfinite_losses < FP16_NONFINITE_PATIENCE:
                return
        raise self._diverged(loss.item(), epoch, step, self.current_lr())

    def _diverged(self, loss: float, epoch: int, step: int, lr: float) -> TrainingDivergedError:
        last_good = (f"The last good checkpoint is {self.out / ckpt.STATE_FILE} (epoch {epoch - 1}). "
                     if self.out and epoch > 1 else "")
        in_a_row = f" (under fp16, {self.nonfinite_losses} batches in a row)" if self.scaler.is_enabled() else ""
        return TrainingDivergedError(
            f"The loss became {loss} at epoch {epoch}, step {step}{in_a_row} (learning rate {lr:.3g}). " + last_good
            + "Lower the learning rate, add --grad-clip, or check the data for NaNs.")

    def _progress_bar(self, total: int, desc: str):
        if not (self.config.progress and self.is_main):
            return None
        return progress_bar(total, desc, unit="batch")

    @property
    def evaluation_model(self) -> nn.Module:
        """What validation runs: under DDP the bare model (evaluation has no gradients to all-reduce, and DDP's
        forward could sync buffers in step with the other ranks, whose shards may hold one batch fewer); while
        training with ema, the averaged weights, in evaluation mode."""
        if self.ema is not None:
            return self.ema.module.eval()
        return self.forward_model if self.world_size == 1 else self.model

    def evaluate(self, dataset=None, with_confusion: bool = False, keep_logits: bool = False) -> dict:
        """The task's figures on a split (default: the test set). Classification: loss, top-1 and top-5
        accuracy (in %); with_confusion adds the confusion matrix and per-class accuracy; keep_logits adds
        every image's logits (in the split's order, one process only). Under DDP this is collective."""
        dataset = self.data.test if dataset is None else dataset
        return self.task.evaluate(self, dataset, with_confusion=with_confusion, keep_logits=keep_logits)

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

    def format_epoch(self, metrics: dict) -> str:
        return self.task.format_epoch(metrics, self.config.epochs)

    # ------------------------------------------------------------------------------------ run folder files
    def run_description(self) -> dict:
        return {"model": self.model_description(), "dataset": self.data.name, "config": self.config.to_dict()}

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
            images = getattr(self.data.train, "images", None)
            self._input_stats = input_statistics(images) if isinstance(images, torch.Tensor) and len(images) else None
        return self._input_stats

    def _write_epoch_files(self) -> None:
        state.save_epoch(self)
