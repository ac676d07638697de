"""Default training recipes: what ``cnnkit train MODEL --data NAME`` uses when no ``--recipe`` is given.

A zoo model trained with one generic setting (SGD, lr 0.1) does badly: LeNet-5's scaled tanh and RBF output
reach 40 % on MNIST with it. Keras and fastai users get a good model from the defaults; here each model family
carries a recipe per *data family* it fits, the way timm carries a default config per model:

    grey28    28x28 grey images (MNIST, Fashion-MNIST)
    colour32  32x32 colour images (CIFAR-10, CIFAR-100)
    folder    ImageNet-style image folders (imagefolder:PATH), at the model's own input size

The tables below are the whole policy: ``RECIPES[family][data family]`` (a model name listed in ``RECIPES``
overrides its family's row), each a dict of :class:`~cnnkit.train.TrainConfig` options with the epoch budget
included. ``input_size: "smallest"`` asks for the smallest input the architecture reads when the data are
smaller (VGG's five pools need 32 px, AlexNet ~67 px), instead of the paper's 224 px, which would make a
28x28 digit 64 times as expensive. Explicit options (flags, API arguments) override single fields.

Where the figures come from: ``benchmarks/default_recipes.py`` trains the plain command's defaults for the
pairs a student would try and appends what each reaches to ``benchmarks/results.jsonl``.
"""

from __future__ import annotations

import dataclasses
import inspect

from ..data.catalog import CATALOG, IMAGEFOLDER_PREFIX
from ..errors import CnnkitError
from ..models.registry import get_model_entry, list_models
from .config import TrainConfig

DATA_FAMILIES = {
    "grey28": "28x28 grey images",
    "colour32": "32x32 colour images",
    "folder": "ImageNet-style image folders",
}

# Building blocks of the table: an optimiser setting and the augmentation that suits a data family.
_SGD = dict(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=5e-4, schedule="onecycle")
_ADAM = dict(optimizer="adam", weight_decay=0.0, schedule="onecycle")
_ADAMW = dict(optimizer="adamw", weight_decay=0.05, schedule="onecycle")
# Digits must not be mirrored (a mirrored 2 is no digit), so grey28 translates only; photographs mirror.
_SHIFT_2 = {"augment": {"crop": 2}}
_SHIFT_4_FLIP = {"augment": {"crop": 4, "flip": True}}
_FOLDER = {"augment": {"crop": 8, "crop_mode": "reflect", "flip": True}, "batch_size": 64}

_ALEXNET = {
    "grey28": {**_SGD, "lr": 0.01, "batch_size": 128, **_SHIFT_2, "input_size": "smallest", "epochs": 3},
    "colour32": {**_SGD, "lr": 0.01, "batch_size": 128, **_SHIFT_4_FLIP, "input_size": "smallest", "epochs": 10},
    "folder": {**_SGD, "lr": 0.01, **_FOLDER, "epochs": 30},
}

RECIPES: dict[str, dict[str, dict]] = {
    # LeCun et al. 1998, as recipes/lenet5_mnist.yaml (15 epochs: 99.18 %) with a third of the budget.
    "lenet": {
        "grey28": {**_ADAM, "lr": 2e-3, "batch_size": 128, **_SHIFT_2, "epochs": 5},
        "colour32": {**_ADAM, "lr": 2e-3, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
    },
    # The notes' Keras network (Géron ch. 14) with Adam, as Keras users train it.
    "small": {
        "grey28": {**_ADAM, "lr": 2e-3, "batch_size": 128, **_SHIFT_2, "epochs": 5},
        "colour32": {**_ADAM, "lr": 2e-3, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
    },
    # recipes/mnist_fast.yaml's network and optimiser less bf16, which not every CPU has, with a safer budget
    # (that recipe's speed record takes 1 epoch at 0.4; 2 epochs at 0.2 reached 99.25 %).
    "mnist_fast_cnn": {
        "grey28": {**_SGD, "lr": 0.2, "label_smoothing": 0.1, "batch_size": 256, "epochs": 3},
    },
    # recipes/cifar10_fast.yaml (airbench94's settings: 88 % on the JPEG copy in 5 epochs) less bf16.
    "cifar_fast_cnn": {
        "colour32": {**_SGD, "lr": 1.0, "momentum": 0.85, "weight_decay": 1e-3, "lr_multipliers": {"*.bias": 64},
                     "label_smoothing": 0.2, "onecycle_pct": 0.23, "batch_size": 512,
                     "augment": {"crop": 2, "flip": True}, "tta_flip": True, "epochs": 5},
    },
    # He et al. 2015 §4.2, one-cycle instead of 164 epochs: recipes/resnet20_cifar10.yaml (77 % in 5 epochs).
    "resnet_cifar": {
        "grey28": {**_SGD, "lr": 0.1, "batch_size": 128, **_SHIFT_2, "epochs": 3},
        "colour32": {**_SGD, "lr": 0.1, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
    },
    "plain_cifar": {  # the same networks without shortcuts: a lower peak, or the deeper ones diverge
        "grey28": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_2, "epochs": 3},
        "colour32": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
    },
    # ImageNet networks on small images at their native size (their stems shrink 28 px to 7 px: still enough).
    "resnet": {
        "grey28": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_2, "epochs": 3},
        "colour32": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
        "folder": {**_SGD, "lr": 0.05, **_FOLDER, "epochs": 30},
    },
    "plain": {
        "grey28": {**_SGD, "lr": 0.02, "batch_size": 128, **_SHIFT_2, "epochs": 3},
        "colour32": {**_SGD, "lr": 0.02, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
        "folder": {**_SGD, "lr": 0.02, **_FOLDER, "epochs": 30},
    },
    # Simonyan & Zisserman's networks without batch norm need a low peak (§3.1 trained them at 0.01).
    "vgg": {
        # measured (benchmarks/default_recipes.py, 5,000 MNIST images, 1 epoch): SGD 0.01 24 %, Adam 1e-4 63 %
        "grey28": {**_ADAM, "lr": 1e-4, "batch_size": 128, **_SHIFT_2, "input_size": "smallest", "epochs": 2},
        "colour32": {**_SGD, "lr": 0.01, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
        "folder": {**_SGD, "lr": 0.01, **_FOLDER, "epochs": 30},
    },
    # The 2012 network with He et al.'s initialisation instead of the paper's N(0, 0.01), at which it stays at
    # chance for the first epochs (measured: 9.7 % vs 95.9 % on MNIST, 10,000 images, 2 epochs).
    "alexnet": {family: {**options, "model_args": {"init": "he"}} for family, options in _ALEXNET.items()},
    "alexnet_owt": _ALEXNET,  # torchvision's single tower, with PyTorch's default initialisation
    "googlenet": {
        "grey28": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_2, "input_size": "smallest", "epochs": 3},
        "colour32": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
        "folder": {**_SGD, "lr": 0.05, **_FOLDER, "epochs": 30},
    },
    "xception": {
        "grey28": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_2, "input_size": "smallest", "epochs": 3},
        "colour32": {**_SGD, "lr": 0.05, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
        "folder": {**_SGD, "lr": 0.05, **_FOLDER, "epochs": 30},
    },
    # Depthwise convolutions and squeeze-free MBConv blocks train more steadily with AdamW from scratch.
    "efficientnet": {
        "grey28": {**_ADAMW, "lr": 2e-3, "batch_size": 128, **_SHIFT_2, "epochs": 3},
        "colour32": {**_ADAMW, "lr": 2e-3, "batch_size": 128, **_SHIFT_4_FLIP, "epochs": 10},
        "folder": {**_ADAMW, "lr": 2e-3, **_FOLDER, "epochs": 30},
    },
    # Lindsey et al. 2019 trained with RMSProp at 1e-4; Adam at 3e-4 as benchmarks/retina_bottleneck.py.
    "retina": {
        "grey28": {**_ADAM, "lr": 3e-4, "batch_size": 64, **_SHIFT_2, "epochs": 5},
        "colour32": {**_ADAM, "lr": 3e-4, "batch_size": 64, **_SHIFT_4_FLIP, "epochs": 10},
    },
}


# The training defaults of the task commands (`cnnkit denoise/segment/compress/gan/translate --train`); flags
# override single fields. The GAN and pix2pix optimiser settings are their papers'.
# Radford et al. §4: Adam, lr 0.0002, beta1 0.5, minibatches of 128; no weight decay, no schedule.
GAN_TRAINING = dict(optimizer="adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, schedule="constant",
                    batch_size=128)
# Isola et al. §3.3: Adam, lr 0.0002, beta1 0.5; constant rate (their first 100 epochs); no weight decay.
PIX2PIX_TRAINING = dict(optimizer="adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, schedule="constant",
                        batch_size=32)
TASK_EPOCHS = 5  # gan and translate: a few minutes on a CPU
TASK_RECIPES = {
    "denoise": {"epochs": 3, "batch_size": 128, "lr": 3e-3},
    "segment": {"epochs": 12, "batch_size": 32, "lr": 3e-3, "augment": {"flip": True}},
    "compress": {"epochs": 1, "batch_size": 16, "lr": 3e-3, "grad_clip": 1.0},
    "gan": {**GAN_TRAINING, "epochs": TASK_EPOCHS},
    "translate": {**PIX2PIX_TRAINING, "epochs": TASK_EPOCHS},
}


@dataclasses.dataclass(frozen=True)
class DefaultRecipe:
    model: str
    data: str  # the dataset's name
    data_family: str  # a key of DATA_FAMILIES
    source: str  # the table row it came from: a model name or its family
    options: dict  # TrainConfig options, epochs included
    model_args: dict = dataclasses.field(default_factory=dict)  # arguments of the model's constructor

    def describe(self) -> str:
        o = self.options
        augment = ", ".join(f"{k} {v}" if v is not True else k for k, v in o.get("augment", {}).items())
        parts = [f"{o['optimizer']} lr {o['lr']:g}", f"{o['schedule']} schedule", f"batch {o['batch_size']}",
                 f"augment: {augment or 'none'}", f"{o['epochs']} epochs"]
        if "input_size" in o:
            parts.append(f"input {o['input_size']} px")
        parts += [f"{name}={value}" for name, value in self.model_args.items()]
        return (f"default recipe for {self.model} on {self.data} ({DATA_FAMILIES[self.data_family]}, "
                f"the '{self.source}' table): " + ", ".join(parts))


def data_family(data_name: str) -> str | None:
    """The data family of a catalogued dataset or image folder; None when the table has none for it."""
    if data_name.startswith(IMAGEFOLDER_PREFIX):
        return "folder"
    spec = CATALOG.get(data_name)
    if spec is None:
        return None
    channels, height, width = spec.image_shape
    if max(height, width) <= 32:
        return "grey28" if channels == 1 else "colour32"
    return None


def default_recipe(model_name: str, data_name: str) -> DefaultRecipe | None:
    """The default recipe for training ``model_name`` on ``data_name``, or None when the table has no row for
    that pair (a model family on data it was not made for: then the generic TrainConfig defaults apply, and
    ``cnnkit lr-find`` suggests a learning rate)."""
    entry = get_model_entry(model_name)
    family = data_family(data_name)
    for source in (model_name, entry.family):
        row = RECIPES.get(source, {})
        if family in row:
            options = dict(row[family])
            model_args = options.pop("model_args", {})
            if options.get("input_size") == "smallest":
                native = max(CATALOG[data_name].image_shape[1:]) if data_name in CATALOG else 0
                # The smallest input the model reads, if the data are smaller; else their own size.
                if entry.min_input_size > native:
                    options["input_size"] = entry.min_input_size
                else:
                    del options["input_size"]
            return DefaultRecipe(model_name, data_name, family, source, options, model_args)
        if source in RECIPES:  # a model's own row, without this data family: its family's row does not apply
            return None
    return None


def check_recipes() -> None:
    """Every table row names real TrainConfig options (a typo would otherwise surface only when a user
    trains that pair)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for source, row in RECIPES.items():
        for family, options in row.items():
            if family not in DATA_FAMILIES:
                raise CnnkitError(f"default recipe row {source!r} names an unknown data family {family!r}")
            unknown = sorted(set(options) - names - {"model_args"})
            if unknown:
                raise CnnkitError(f"default recipe {source!r}/{family} has unknown options {unknown}")
    for name in list_models():  # model arguments must suit every model the row serves
        row = RECIPES.get(name, RECIPES.get(get_model_entry(name).family, {}))
        for family, options in row.items():
            try:
                inspect.signature(get_model_entry(name).builder).bind_partial(**options.get("model_args", {}))
            except TypeError as error:
                raise CnnkitError(f"default recipe for {name}/{family}: model_args do not fit: {error}") from None
