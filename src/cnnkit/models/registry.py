"""The model registry: one decorator per architecture, one way to build any of them.

    @register_model(input_size=(3, 224, 224), num_classes=1000, family="resnet", paper="He et al. 2015")
    def resnet18(num_classes=1000, in_channels=3, **kwargs): ...

    model = create_model("resnet18", num_classes=10, in_channels=1)

Every builder takes ``num_classes`` and ``in_channels``. ``create_model`` records the name and arguments on the
model (``model.cnnkit_config``) so a checkpoint can rebuild exactly the same network later.

The registry knows names, not modules: each family registers itself when imported. Whoever owns families
hands the registry a function that imports them (``add_family_loader``: ``cnnkit.models`` for the zoo,
``cnnkit/__init__.py`` for ``cnnkit.compress``'s compression model), run once at the first lookup, so that the
registry, and with it ``import cnnkit`` and ``cnnkit --help``, load no network library before a model is asked
for. Pretrained weights come through a loader that ``cnnkit/__init__.py`` installs (``set_weights_loader``),
because the weights and the run folders they are read from sit above the models.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import CnnkitError, ConfigError, UnknownNameError, did_you_mean


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]  # (channels, height, width) of the paper's input
    num_classes: int
    family: str
    paper: str
    min_input_size: int  # smallest height/width the architecture accepts
    mean: tuple[float, ...] | None  # per-channel normalisation the model expects; None: the dataset's own
    std: tuple[float, ...] | None
    task: str  # "classification", "segmentation", "reconstruction", ...


if TYPE_CHECKING:
    from torch import nn

_REGISTRY: dict[str, ModelEntry] = {}
WeightsLoader = Callable[["nn.Module", str], "nn.Module"]
_weights_loader: WeightsLoader | None = None
BackboneBuilder = Callable[..., "nn.Module"]
_backbone_builder: BackboneBuilder | None = None
_family_loaders: list[Callable[[], object]] = []  # not yet run: each imports modules that register models


def register_model(
    *,
    input_size: tuple[int, int, int],
    num_classes: int,
    family: str,
    paper: str = "",
    min_input_size: int = 1,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    task: str = "classification",
    name: str | None = None,
):
    """Register a model builder under its function name (or ``name``)."""

    def decorate(builder):
        key = name or builder.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        _REGISTRY[key] = ModelEntry(
            key, builder, tuple(input_size), num_classes, family, paper, min_input_size, mean, std, task
        )
        return builder

    return decorate


def set_weights_loader(loader: WeightsLoader) -> None:
    """Install the function that ``create_model(pretrained=...)`` calls as ``loader(model, pretrained)`` to
    load weights into a freshly built model (``cnnkit.runs.load_pretrained``, installed on ``import cnnkit``)."""
    global _weights_loader
    _weights_loader = loader


def set_backbone_builder(builder: BackboneBuilder) -> None:
    """Install the function behind ``create_model(features_only=True)``, called as ``builder(model, name, task,
    input_size, out_indices)``: :mod:`cnnkit.models.features` does, loaded with the zoo's families (it needs
    torch, which the registry itself does not load)."""
    global _backbone_builder
    _backbone_builder = builder


def add_family_loader(loader: Callable[[], object]) -> None:
    """``loader()`` imports modules whose builders register themselves; it runs before the next lookup."""
    _family_loaders.append(loader)


def _load_families() -> None:
    while _family_loaders:
        _family_loaders.pop(0)()  # popped first: a family that looks a model up while loading does not recurse


def list_models(family: str | None = None) -> list[str]:
    _load_families()
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_model_entry(name: str) -> ModelEntry:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"Unknown model {name!r}.{did_you_mean(name, _REGISTRY)}") from None


def create_model(
    name: str,
    num_classes: int | None = None,
    in_channels: int | None = None,
    pretrained: str | None = None,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    ``num_classes`` and ``in_channels`` default to the paper's; other keyword arguments go to the builder.
    ``pretrained`` names a checkpoint file (cnnkit's own run folder or ``.safetensors`` file) whose weights
    are loaded after building; registered pretrained tags are resolved by :mod:`cnnkit.weights`.
    ``features_only=True`` returns the classifier as a backbone whose forward gives a list of the feature maps of
    the stages at ``out_indices`` (all by default), with ``feature_info`` (timm's; :mod:`.features`).
    """
    entry = get_model_entry(name)
    _check_arguments(entry, kwargs)
    if out_indices is not None and not features_only:
        raise ConfigError(f"create_model({name!r}, out_indices=...): out_indices picks the maps of a backbone; "
                          "add features_only=True.")
    num_classes = entry.num_classes if num_classes is None else int(num_classes)
    in_channels = entry.input_size[0] if in_channels is None else int(in_channels)
    try:
        model = entry.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as error:  # a builder passing **kwargs on (ResNet's) learns of an unknown one only here
        if "unexpected keyword argument" not in str(error):
            raise
        raise ConfigError(f"create_model({name!r}): {error}. {_accepted(entry)}") from error
    model.cnnkit_config = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "kwargs": dict(kwargs),
    }
    if pretrained:
        if _weights_loader is None:
            raise CnnkitError(f"create_model({name!r}, pretrained={pretrained!r}): no weights loader is installed; "
                              "import cnnkit (which installs cnnkit.runs.load_pretrained) before building models")
        _weights_loader(model, pretrained)
    if features_only:
        if _backbone_builder is None:
            raise CnnkitError(f"create_model({name!r}, features_only=True): no backbone builder is installed; "
                              "import cnnkit.models (whose family loader installs cnnkit.models.features)")
        return _backbone_builder(model, name, entry.task, (in_channels, *entry.input_size[1:]), out_indices)
    return model


_CREATE_MODEL_ARGUMENTS = ("num_classes", "in_channels", "pretrained", "features_only", "out_indices")


def _builder_arguments(entry: ModelEntry) -> tuple[list[str], bool]:
    """The builder's own keyword arguments, and whether it passes further ones on (``**kwargs``)."""
    parameters = inspect.signature(entry.builder).parameters.values()
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and p.name not in _CREATE_MODEL_ARGUMENTS]
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters)


def _accepted(entry: ModelEntry) -> str:
    named, passes_on = _builder_arguments(entry)
    own = ", ".join(named) if named else "no arguments of its own"
    more = " (and those of the class it builds)" if passes_on else ""
    return (f"{entry.name} takes {own}{more}, besides create_model's {', '.join(_CREATE_MODEL_ARGUMENTS)}; "
            f"see help(cnnkit.models.get_model_entry({entry.name!r}).builder).")


def _check_arguments(entry: ModelEntry, kwargs: dict) -> None:
    named, passes_on = _builder_arguments(entry)
    unknown = [k for k in kwargs if k not in named]
    if unknown and not passes_on:
        choices = did_you_mean(unknown[0], [*named, *_CREATE_MODEL_ARGUMENTS])
        raise ConfigError(f"create_model({entry.name!r}) got an unknown argument {unknown[0]!r}.{choices} "
                          f"{_accepted(entry)}")
