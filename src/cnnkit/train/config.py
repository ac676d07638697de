"""The training options: :class:`TrainConfig`, one field per option with its type and default, and the range of
each numeric one. Kept free of torch so that the command line can build its flags from these fields
(cnnkit/cli/train_flags.py) without loading a network library for ``--help``.
"""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from ..schema import Limit, check_dataclass, short_repr


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1000
    optimizer: str = "sgd"  # sgd | adam | adamw | nadam
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
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast with a GradScaler: GPUs without bf16)
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
    tta_crop: int = 0  # AlexNet's ten-crop testing: crops of this many pixels at the corners, centre, mirrored
    input_size: int | None = None  # resize/pad images to this; default: native size, or the model's when too small
    resize: str = "auto"  # auto: pad smaller images (LeNet on MNIST) | interpolate: always resize (pretrained nets)
    device: str = "auto"  # auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps
    num_threads: int | None = None
    num_workers: int = 2  # image-folder decoding processes
    lr_multipliers: dict = dataclasses.field(default_factory=dict)  # {"parameter prefix": factor}
    progress: bool = True
    tensorboard: bool = False  # also log to RUN_DIR/tensorboard (needs the tensorboard package: cnnkit[tensorboard])
    tensorboard_steps: int = 0  # with tensorboard: also the batch loss and lr every this many steps; 0: per epoch
    record_gradients: int = 0  # every N optimiser steps, each layer's gradient norm into gradients.json; 0: off

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


PRECISIONS = ("fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adam", "adamw", "nadam")  # built by train/optim.py; named here, where --help needs no torch
# The range of each numeric TrainConfig field (types come from the annotations); see cnnkit.schema.
MAX_INPUT_SIDE = 8192
TRAIN_LIMITS = {
    "epochs": Limit(1), "batch_size": Limit(1), "eval_batch_size": Limit(1), "lr": Limit(0, low_open=True),
    "momentum": Limit(0, 1), "weight_decay": Limit(0), "betas": Limit(0, 1, high_open=True), "milestones": Limit(1),
    "gamma": Limit(0, low_open=True), "warmup_epochs": Limit(0), "onecycle_pct": Limit(0, 1, low_open=True),
    "plateau_patience": Limit(0), "plateau_factor": Limit(0, 1, low_open=True, high_open=True),
    "label_smoothing": Limit(0, 1, high_open=True), "mixup": Limit(0), "cutmix": Limit(0),
    "ema": Limit(0, 1, high_open=True), "grad_clip": Limit(0, low_open=True), "accumulate": Limit(1),
    "reference_batch": Limit(1), "precision": Limit(choices=PRECISIONS), "seed": Limit(0),
    "val_split": Limit(0, 1, high_open=True), "early_stopping": Limit(0), "validate_every": Limit(0),
    "tta_shift": Limit(0), "tta_sizes": Limit(1, MAX_INPUT_SIDE), "input_size": Limit(1, MAX_INPUT_SIDE),
    "tta_crop": Limit(0, MAX_INPUT_SIDE),
    "resize": Limit(choices=("auto", "interpolate")), "num_threads": Limit(1), "num_workers": Limit(0),
    "tensorboard_steps": Limit(0),
    "record_gradients": Limit(0),
}
# Where a command-line flag is not spelt --field-name: the spellings it has always had (the first is the one
# messages name). The CLI builds its flags from this; errors here name the same flag.
FLAG_NAMES = {"num_threads": ("--threads",), "num_workers": ("--workers",)}


def flag_names(name: str) -> tuple[str, ...]:
    """The command-line spellings of TrainConfig field ``name``."""
    return FLAG_NAMES.get(name, ("--" + name.replace("_", "-"),))


def flag_of(name: str) -> str:
    """The flag that sets TrainConfig field ``name``, as messages name it."""
    return flag_names(name)[0]


def _describe_option(name: str) -> tuple[str, str]:
    flag = flag_of(name)
    return f"training option {name}", f"fix '{name}:' in the recipe or the {flag} flag"
