"""Validation at the boundary: values from recipes, flags and checkpoint files checked against a declared type and
range before anything is built from them, with a one-line error that names the field and says what to write.

Two schemas use it: :class:`cnnkit.train.TrainConfig` (its dataclass field types plus a table of ranges) and the
metadata of a run folder's ``checkpoint.json`` (:data:`cnnkit.train.checkpoint.META_SCHEMA`). A value is never
coerced: ``batch_size: "64"`` is refused with the fix (write 64 without quotes) rather than guessed at.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import types
import typing
from collections.abc import Callable

from .errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Limit:
    """The values a number (or each number of a sequence) may take: low/high bounds, open or closed, or choices."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value > low instead of value >= low
    high_open: bool = False
    choices: tuple = ()

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def admits(self, value) -> bool:
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


def short_repr(value, width: int = 60) -> str:
    """repr cut to one short line: errors quote what was given without echoing a whole file."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


_KIND_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "a string",
               dict: "a mapping", list: "a list"}


def _fail(name: str, expected: str, value, fix: str) -> typing.NoReturn:
    given = short_repr(value)
    if isinstance(value, str) and expected.startswith(("a whole number", "a number", "true")):
        given += " (a string: write it without quotes)"
    raise ConfigError(f"{name} must be {expected}, not {given}{'; ' + fix if fix else ''}.")


def check(value, annotation, name: str, limit: Limit | None = None, fix: str = ""):
    """Check ``value`` against a type annotation (int, float, bool, str, dict, list, ``X | None``, ``tuple[T, ...]``,
    ``tuple[T, T]``, ``list[T]``) and, for numbers, against ``limit``; raise :class:`ConfigError` otherwise.
    Returns the value, tuples normalised from lists."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # the schemas use only "X | None"
        return check(value, inner, name, limit, fix)
    if origin in (tuple, list):
        fixed_length = origin is tuple and args and args[-1] is not Ellipsis
        if not isinstance(value, (tuple, list)):
            _fail(name, "a list" + (f" of {len(args)} values" if fixed_length else ""), value, fix)
        if fixed_length and len(value) != len(args):
            _fail(name, f"a list of {len(args)} values", value, fix)
        item_types = list(args) if fixed_length else [args[0]] * len(value)
        items = [check(v, t, f"{name}[{i}]", limit, fix) for i, (v, t) in enumerate(zip(value, item_types))]
        return tuple(items) if origin is tuple else items
    kind = origin or annotation
    expected = _KIND_NAMES.get(kind, getattr(kind, "__name__", str(kind)))
    # numbers.Real / Integral: numpy and torch scalars from the API count as numbers too; bools do not.
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            _fail(name, "a finite number" + (f" {limit.describe()}" if limit else ""), value, fix)
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            _fail(name, expected + (f" {limit.describe()}" if limit else ""), value, fix)
    elif kind in (bool, str, dict, list):
        if not isinstance(value, kind):
            _fail(name, expected + (f" ({limit.describe()})" if limit and limit.choices else ""), value, fix)
        if kind is dict and not all(isinstance(key, str) for key in value):
            _fail(name, "a mapping with text keys", value, fix)
    if limit is not None and not limit.admits(value):
        _fail(name, (expected + " " if not limit.choices else "") + limit.describe(), value, fix)
    return value


def check_dataclass(obj, limits: dict[str, Limit], describe: Callable[[str], tuple[str, str]]) -> None:
    """Check every field of a dataclass instance against its annotation and ``limits``. ``describe(field)`` gives
    the name to show and the fix to suggest (e.g. which flag or recipe key sets it)."""
    hints = typing.get_type_hints(type(obj))
    for field in dataclasses.fields(obj):
        name, fix = describe(field.name)
        value = check(getattr(obj, field.name), hints[field.name], name, limits.get(field.name), fix)
        if isinstance(value, tuple) and not isinstance(getattr(obj, field.name), tuple):
            object.__setattr__(obj, field.name, value)


@dataclasses.dataclass(frozen=True)
class Field:
    """One entry of a mapping schema: its type, range, whether it may be absent, and a schema for a nested
    mapping (``fields``)."""

    annotation: object
    limit: Limit | None = None
    required: bool = True
    fields: dict[str, Field] | None = None


def check_mapping(values, schema: dict[str, Field], where: str, fix: str = "", allow_unknown: bool = True) -> dict:
    """Check a JSON/YAML mapping against ``schema`` (nested mappings too); unknown keys are kept unless
    ``allow_unknown`` is False. Errors name the path of the field inside ``where``."""
    if not isinstance(values, dict):
        _fail(where, "a mapping", values, fix)
    if not allow_unknown:
        unknown = sorted(str(key) for key in values if key not in schema)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {short_repr(unknown)}; valid fields: "
                              f"{', '.join(sorted(schema))}{'; ' + fix if fix else ''}.")
    for key, field in schema.items():
        name = f"{where}: {key}"
        if key not in values:
            if field.required:
                raise ConfigError(f"{name} is missing{'; ' + fix if fix else ''}.")
            continue
        check(values[key], field.annotation, name, field.limit, fix)
        if field.fields is not None:
            check_mapping(values[key], field.fields, f"{where}: {key}", fix)
    return values


# argparse types: the same boundary for command-line values (cnnkit.cli and the tools' own parsers use them).
def positive_int(text: str) -> int:
    """An argparse type for counts and sizes: 0 or less would divide by zero or do nothing, silently."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def port_number(text: str) -> int:
    port = positive_int(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {port}")
    return port
