"""Stages as transfer learning reads them: ``stages(model)`` asks the model's family (its ``feature_stages()``,
next to its layers in :mod:`cnnkit.models`) and falls back to one stage per top-level child; ``stage_names``,
``upper_stages`` and ``_stage_index`` name and find them for freezing, feature extraction and probes.
"""

from __future__ import annotations

from torch import nn

from ..errors import CnnkitError, UnknownNameError, did_you_mean
from ..models.stages import CLASSIFIER, PooledClassifier, Stage
from ..models.stages import model_stages as stages  # the family's feature_stages(), else one stage per child

__all__ = ["CLASSIFIER", "PooledClassifier", "Stage", "stage_names", "stages", "upper_stages"]


def stage_names(model: nn.Module) -> list[str]:
    return [s.name for s in stages(model)]


def _stage_index(model_stages: list[Stage], name: str) -> int:
    names = [s.name for s in model_stages]
    if name not in names:
        raise UnknownNameError(f"Unknown stage {name!r}.{did_you_mean(name, names)} (in order: {', '.join(names)})")
    return names.index(name)


def upper_stages(model: nn.Module, count: int) -> list[str]:
    """The ``count`` highest stages below the classifier (the ones the notes fine-tune first)."""
    body = [s.name for s in stages(model) if s.name != CLASSIFIER]
    if not 0 <= count <= len(body):
        raise CnnkitError(f"{count} upper stages: the model has {len(body)} stages below the classifier "
                          f"({', '.join(body)}); give 0..{len(body)}.")
    return body[len(body) - count:]
