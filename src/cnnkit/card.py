"""The model card: what a model needs at inference, carried by its weights and read through one function.

    card = card_of(model)          # ModelCard(mean=..., std=..., input_size=(224, 224), resize=256, crop=224, ...)
    card.eval_transform()          # the one eval transform: resize the shorter side, centre crop, normalise

A card comes from the weights, not the architecture: registered pretrained weights (``pretrained="imagenet"``)
say how their evaluation images were made; a run folder records the mean, std, input size and classes it was
trained with (``checkpoint.json``), and so does an imported checkpoint. A network built from scratch has an
architecture card only: its input size and channels, no normalisation (``mean`` None), so the Trainer
normalises it with its dataset's own statistics (a resnet18 trained on CIFAR-10 sees CIFAR-10's mean and std,
not ImageNet's), and records those in the run folder, whose card then carries them.

Also here: the model's build record (``name``, ``num_classes``, ``in_channels``, ``kwargs``: what the registry
needs to rebuild it, kept by ``create_model``), read and updated through :func:`build_record` and
:func:`update_build_record` only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import nn

from .data.augment import Preprocess
from .data.datasets import describe_classes
from .data.transforms import EvalTransform
from .errors import UnknownNameError
from .models.registry import get_model_entry

CARD_ATTRIBUTE = "cnnkit_card"  # where set_card keeps the card on the model
BUILD_ATTRIBUTE = "cnnkit_config"  # where create_model keeps the build record (name and builder arguments)


@dataclasses.dataclass(frozen=True, repr=False)
class ModelCard:
    """What a model needs at inference. ``mean``/``std`` None: the weights do not say (a network built from
    scratch); ``resize`` None: images are resized straight to ``input_size`` (no centre crop)."""

    name: str | None = None  # the registry name of the architecture
    num_classes: int | None = None
    in_channels: int | None = None
    input_size: tuple[int, int] | None = None  # (height, width) the model reads
    min_input_size: int = 1  # the smallest side the architecture accepts
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    resize: int | None = None  # shorter side before the centre crop of input_size (the ImageNet eval transform)
    interpolation: str = "bilinear"
    fit: str = "auto"  # how a run's images meet input_size: "auto" pads smaller ones (LeNet's 28 in 32)
    classes: tuple[str, ...] | None = None
    dataset: str | None = None  # what the weights were trained on, when a run folder says
    task: str = "classification"
    source: str = "architecture"  # "architecture", "pretrained:TAG", "run:PATH" or "import:FILE"
    description: str = ""

    @property
    def crop(self) -> int | None:
        return self.input_size[-1] if self.input_size else None

    def __repr__(self) -> str:
        """The fields that say something (not at their defaults), ImageNet's thousand class names cut to a few."""
        shown = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value == field.default and field.name != "name":
                continue
            if field.name == "classes":
                shown.append(f"classes={describe_classes(value)}")
            elif field.name in ("mean", "std"):
                shown.append(f"{field.name}=({', '.join(f'{v:.4g}' for v in value)}{',' if len(value) == 1 else ''})")
            else:
                shown.append(f"{field.name}={value!r}")
        return f"ModelCard({', '.join(shown)})"

    def has_normalisation_for(self, channels: int) -> bool:
        """Whether the weights' own mean/std apply to ``channels``-channel images (RGB statistics do not
        apply to a network rebuilt for grey input)."""
        return self.mean is not None and len(self.mean) in (1, channels)

    def eval_transform(self, mean: Sequence[float] | None = None,
                       std: Sequence[float] | None = None) -> EvalTransform:
        """Resize, centre crop and normalise a photo as these weights saw their evaluation images; ``mean``
        and ``std`` stand in where the weights do not say (a dataset's statistics)."""
        mean = self.mean if self.mean is not None else mean
        std = self.std if self.std is not None else std
        return EvalTransform(self.input_size, self.resize, self.interpolation, mean, std)

    def preprocess(self) -> Preprocess:
        """The batch preprocessing a run was trained with (fit to input_size, normalise), for its tools."""
        return Preprocess(self.mean, self.std, self.input_size if self.resize is None else None, resize=self.fit)

    def with_head(self, num_classes: int) -> ModelCard:
        """The card after the classifier is replaced: the classes are no longer the weights' own."""
        return dataclasses.replace(self, num_classes=num_classes, classes=None)

    def with_input_channels(self, in_channels: int) -> ModelCard:
        """The card after the first convolution is adapted to ``in_channels`` (RGB -> grey averages the
        statistics, as the weights are summed or averaged)."""
        mean, std = self.mean, self.std
        if mean is not None and len(mean) != in_channels:
            mean = (sum(mean) / len(mean),) * in_channels
            std = (sum(std) / len(std),) * in_channels
        return dataclasses.replace(self, in_channels=in_channels, mean=mean, std=std)


def build_record(model: nn.Module) -> dict:
    """How the registry built ``model``: ``{"name", "num_classes", "in_channels", "kwargs"}`` ({} for a module
    it did not build)."""
    record = getattr(model, BUILD_ATTRIBUTE, None)
    return record if isinstance(record, dict) else {}


def model_name(model: nn.Module) -> str:
    """The registry name of ``model``, or its class name."""
    return build_record(model).get("name") or type(model).__name__


def update_build_record(model: nn.Module, kwargs: dict | None = None, **fields) -> None:
    """Record changes made to a built model (a new head, other input channels, architecture choices a loaded
    file implies) so the run folder saved from it rebuilds the same network; no-op for unregistered modules."""
    record = build_record(model)
    if not record and not fields.get("name"):
        return
    record = {**record, **fields}
    if kwargs:
        record["kwargs"] = {**record.get("kwargs", {}), **kwargs}
    setattr(model, BUILD_ATTRIBUTE, record)
    if (card := getattr(model, CARD_ATTRIBUTE, None)) is not None:
        changed = {k: v for k, v in fields.items() if k in ("name", "num_classes", "in_channels")}
        setattr(model, CARD_ATTRIBUTE, dataclasses.replace(card, **changed))


def set_card(model: nn.Module, card: ModelCard) -> nn.Module:
    """Give ``model`` the card of the weights just loaded into it; returns the model."""
    setattr(model, CARD_ATTRIBUTE, card)
    return model


def card_of(model: nn.Module) -> ModelCard:
    """The card of ``model``: the one its weights gave it (set_card), else its architecture's."""
    card = getattr(model, CARD_ATTRIBUTE, None)
    return card if card is not None else architecture_card(model)


def architecture_card(model: nn.Module) -> ModelCard:
    """What the architecture alone says: the paper's input size, the built channels and classes; no
    normalisation (that belongs to weights)."""
    record = build_record(model)
    if not record.get("name"):
        return ModelCard()
    try:
        entry = get_model_entry(record["name"])
    except UnknownNameError:
        return ModelCard(name=record["name"], num_classes=record.get("num_classes"),
                         in_channels=record.get("in_channels"))
    return ModelCard(name=record["name"], num_classes=record.get("num_classes", entry.num_classes),
                     in_channels=record.get("in_channels", entry.input_size[0]),
                     input_size=tuple(entry.input_size[1:]), min_input_size=entry.min_input_size, task=entry.task)


def card_from_meta(meta: dict, source: str = "run") -> ModelCard:
    """The card a run folder's checkpoint.json (trained, averaged or imported) describes."""
    preprocess = meta["preprocess"]
    channels, height, width = meta["image_shape"]
    size = preprocess.get("input_size")
    model = meta.get("model") or {}
    return ModelCard(name=model.get("name"), num_classes=model.get("num_classes"), in_channels=channels,
                     input_size=tuple(size) if size else (height, width), mean=tuple(preprocess["mean"]),
                     std=tuple(preprocess["std"]), fit=preprocess.get("resize", "auto"),
                     classes=tuple(meta.get("classes") or ()) or None,
                     dataset=meta.get("dataset"), task=(meta.get("task") or {}).get("name", "classification"),
                     source=source)


__all__ = ["ModelCard", "architecture_card", "build_record", "card_from_meta", "card_of", "model_name",
           "set_card", "update_build_record"]
