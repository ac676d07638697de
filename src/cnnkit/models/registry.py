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
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import CnnkitError, UnknownNameError, did_you_mean


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
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    ``num_classes`` and ``in_channels`` default to the paper's; other keyword arguments go to the builder.
    ``pretrained`` names a checkpoint file (cnnkit's own run folder or ``.safetensors`` file) whose weights
    are loaded after building; registered pretrained tags are resolved by :mod:`cnnkit.weights`.
    """
    entry = get_model_entry(name)
    num_classes = entry.num_classes if num_classes is None else int(num_classes)
    in_channels = entry.input_size[0] if in_channels is None else int(in_channels)
    model = entry.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
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
    return model
