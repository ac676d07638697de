"""``cnnkit train``'s training flags, generated: one flag per :class:`~cnnkit.train.TrainConfig` field, its help
from :data:`~cnnkit.train.config_help.TRAIN_OPTION_HELP` and its value type from the field's annotation, so a new
field is a flag (and a recipe key) the moment it exists, with nothing listed twice (nanoGPT's config idea).

Every flag defaults to None, meaning "the recipe's value" (``--recipe``, the model's default recipe, or the
resumed run's config.json), and the TrainConfig default where the recipe is silent. :func:`training_config` is
the one way a command turns its arguments into a TrainConfig: an argument whose dest is a field name sets that
field, in any command.
"""

from __future__ import annotations

import argparse
import dataclasses

from ..train.config import OPTIMIZERS, PRECISIONS, flag_names, flag_of  # noqa: F401  (flag_of: the CLI's messages use it from here)
from .options import comma_floats

# What the annotation cannot say: the values allowed and the name a value goes by in --help.
FLAG_DETAILS = {
    "optimizer": {"choices": list(OPTIMIZERS)},
    "schedule": {"choices": ["constant", "step", "plateau", "cosine", "onecycle"]},
    "precision": {"choices": list(PRECISIONS)},
    "resize": {"choices": ["auto", "interpolate"]},
    "mixup": {"metavar": "ALPHA"},
    "cutmix": {"metavar": "ALPHA"},
    "ema": {"metavar": "DECAY"},
    "early_stopping": {"metavar": "EPOCHS"},
    "accumulate": {"metavar": "BATCHES"},
    "betas": {"metavar": "BETA1,BETA2"},
    "milestones": {"metavar": "EPOCH,..."},
    "tta_sizes": {"metavar": "SIZE,..."},
    "tta_crop": {"metavar": "SIZE"},
    "augment": {"metavar": "YAML"},
    "tensorboard_steps": {"metavar": "STEPS"},
    "lr_multipliers": {"metavar": "YAML"},
    "record_gradients": {"metavar": "STEPS"},
}


def comma_ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None


def yaml_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"expected a YAML value, got {text!r}") from None


def yaml_mapping(text: str) -> dict:
    value = yaml_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{crop: 4, flip: true}}', got {text!r}")
    return value


# Annotation (less "| None") -> argparse type; anything else is read as a YAML value and checked by TrainConfig.
VALUE_TYPES = {"int": int, "float": float, "str": str, "tuple[int, ...]": comma_ints,
               "tuple[float, float]": comma_floats, "dict": yaml_mapping}


def training_fields() -> tuple[dataclasses.Field, ...]:
    from ..train import TrainConfig

    return dataclasses.fields(TrainConfig)


def add_training_flags(parser, groups: dict | None = None) -> None:
    """One flag per TrainConfig field on ``parser`` (or on ``groups[field]``, an argument group of it)."""
    from ..train.config_help import TRAIN_OPTION_HELP

    for field in training_fields():
        target = (groups or {}).get(field.name, parser)
        names = flag_names(field.name)
        annotation = _annotation(field)
        help_text = TRAIN_OPTION_HELP.get(field.name, "") + _default_note(field)
        if annotation == "bool":  # --flag / --no-flag, so a flag can also switch off what a recipe switched on
            target.add_argument(*names, dest=field.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
            continue
        target.add_argument(*names, dest=field.name, type=VALUE_TYPES.get(annotation, yaml_value), default=None,
                            help=help_text, **FLAG_DETAILS.get(field.name, {}))


def _annotation(field: dataclasses.Field) -> str:
    """The field's annotation as written, less "| None" (a string under ``from __future__ import annotations``)."""
    annotation = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    return annotation.replace(" | None", "").replace("None | ", "")


def _default_note(field: dataclasses.Field) -> str:
    """' (default: the recipe's, else X)' for a field whose TrainConfig default says something."""
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    else:
        return ""
    if default is None or default is False or default in ((), {}):
        return ""
    shown = "on" if default is True else ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f" (default: the recipe's, else {shown})".replace("%", "%%")


def given_training_options(args) -> dict:
    """The TrainConfig fields set on the command line: every argument whose dest is a field name and whose value
    is not None, and --no-progress where a command has it as a plain switch."""
    names = {field.name for field in training_fields()}
    given = {name: value for name, value in vars(args).items() if name in names and value is not None}
    if getattr(args, "no_progress", False):
        given["progress"] = False
    return given


def training_config(args, defaults: dict | None = None, **fixed):
    """The TrainConfig of a command: ``defaults`` (a recipe, a task's training defaults), overridden by the
    fields given on the command line, overridden by ``fixed`` (what the command itself requires)."""
    from ..train import TrainConfig

    return TrainConfig.from_dict({**(defaults or {}), **given_training_options(args), **fixed})
