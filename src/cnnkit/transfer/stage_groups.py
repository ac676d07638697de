"""Stages as transfer learning reads them: ``stages(model)`` asks the model's family (its ``feature_stages()``,
next to its layers in :mod:`cnnkit.models`) and falls back to one stage per top-level child; ``stage_names``,
``upper_stages`` and ``_stage_index`` name and find them for freezing, feature extraction and probes.
"""

from __future__ import annotations

from torch import nn

from ..errors import CnnkitError
from ..models.stages import CLASSIFIER, PooledClassifier, Stage
from ..models.stages import stage_index as _stage_index  # finds a stage by name, or says which names there are
from ..models.stages import model_stages as stages  # the family's feature_stages(), else one stage per child

__all__ = ["CLASSIFIER", "PooledClassifier", "Stage", "_stage_index", "stage_names", "stages", "upper_stages"]


def stage_names(model: nn.Module) -> list[str]:
    return [s.name for s in stages(model)]


def upper_stages(model: nn.Module, count: int) -> list[str]:
    """The ``count`` highest stages below the classifier (the ones the notes fine-tune first)."""
    body = [s.name for s in stages(model) if s.name != CLASSIFIER]
    if not 0 <= count <= len(body):
        raise CnnkitError(f"{count} upper stages: the model has {len(body)} stages below the classifier "
                          f"({', '.join(body)}); give 0..{len(body)}.")
    return body[len(body) - count:]
