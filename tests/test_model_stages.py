"""Each model family owns its stages (``feature_stages()``, next to its layers); transfer only reads them.

The stages every zoo model had when transfer kept a table of them by class name are checked in
(tests/golden/model_stages.txt): names, owned prefixes and chain-or-hook must not move when a family changes.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

import cnnkit.transfer
from cnnkit.models import create_model, list_models
from cnnkit.models.stages import CLASSIFIER, Stage, generic_stages
from cnnkit.transfer import freeze, is_frozen, stages

GOLDEN = Path(__file__).parent / "golden" / "model_stages.txt"


def _recorded() -> dict[str, str]:
    lines = [line for line in GOLDEN.read_text().splitlines() if line and not line.startswith("#")]
    return {line.split(" ", 1)[0]: line for line in lines}


def _describe(name: str, model: nn.Module) -> str:
    parts = [f"{s.name}={','.join(p.rstrip('.') for p in s.prefixes)}"
             + ("" if s.forward is not None else f"@{s.output_module}") for s in stages(model)]
    return " ".join([name, type(model).__name__, *parts])


def test_every_registered_model_keeps_its_recorded_stages():
    recorded = _recorded()
    assert sorted(recorded) == list_models(), "a model was added or removed: record its stages in " + str(GOLDEN)
    for name in list_models():
        with torch.device("meta"):  # the structure is all that matters, so no weights are allocated
            model = create_model(name)
        assert _describe(name, model) == recorded[name]


def test_the_class_name_table_is_gone():
    assert not hasattr(cnnkit.transfer, "STAGE_BUILDERS")


class _TwoStages(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(1), nn.LazyLinear(2))

    def forward(self, x):
        return self.head(self.body(x))


class _OwnStages(_TwoStages):
    def feature_stages(self) -> list[Stage]:
        return [Stage("trunk", ("body.",), self.body), Stage(CLASSIFIER, ("head.",), self.head)]


def test_a_model_without_feature_stages_gets_one_stage_per_child():
    model = _TwoStages()
    assert [(s.name, s.output_module) for s in stages(model)] == [("body", "body"), (CLASSIFIER, "head")]
    assert stages(model) == generic_stages(model)


def test_transfer_uses_the_stages_a_model_defines():
    model = _OwnStages()
    model(torch.zeros(1, 1, 6, 6))  # materialise the lazy layer
    assert [s.name for s in stages(model)] == ["trunk", CLASSIFIER]
    freeze(model)
    assert is_frozen(model, "trunk") and not is_frozen(model, CLASSIFIER)


def test_a_model_without_parameters_has_no_stages():
    with pytest.raises(cnnkit.CnnkitError, match="no child modules with parameters"):
        stages(nn.Sequential(nn.ReLU()))
