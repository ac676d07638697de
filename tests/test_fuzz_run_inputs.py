"""Property-based tests of the parsers of run-folder metadata and recipes: whatever bytes or JSON/YAML values
they are given, they return a result or raise a CnnkitError, never another exception."""

import copy
import json
import string

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnkit.cli import load_recipe, parse_recipe
from cnnkit.errors import CnnkitError
from cnnkit.models import create_model
from cnnkit.train import TrainConfig
from cnnkit.train.checkpoint import atomic_save_tensors, file_sha256, load_model_checkpoint, read_checkpoint_meta
from helpers import checkpoint_meta

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A run folder whose weights carry no metadata (the old layout), so checkpoint.json is what is read."""
    path = tmp_path_factory.mktemp("fuzz-run")
    torch.manual_seed(0)
    atomic_save_tensors(create_model("mnist_fast_cnn", num_classes=10, in_channels=1).state_dict(),
                        path / "checkpoint.safetensors")
    meta = {"format": "cnnkit-checkpoint-1", "model": {"name": "mnist_fast_cnn", "num_classes": 10, "in_channels": 1,
                                                       "kwargs": {}},
            **checkpoint_meta([str(i) for i in range(10)], channels=1, size=28),
            "weights_file": "checkpoint.safetensors", "weights_sha256": file_sha256(path / "checkpoint.safetensors")}
    return path, meta


def result_or_cnnkit_error(function, *args):
    try:
        return function(*args)
    except CnnkitError:
        return None


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes_as_checkpoint_json(folder, data):
    path, _ = folder
    (path / "checkpoint.json").write_bytes(data)
    result_or_cnnkit_error(read_checkpoint_meta, path)


def near_miss(data, meta: dict) -> dict:
    """A valid metadata dict with one or two fields (at the top, one level down, or the model's arguments)
    replaced by an arbitrary JSON value or deleted: near misses reach further into the loader than random
    documents do."""
    document = copy.deepcopy(meta)
    for _ in range(data.draw(st.integers(1, 2), label="changes")):
        if isinstance(document.get("model"), dict) and data.draw(st.integers(0, 4)) == 0:
            document["model"]["kwargs"] = {"widths": data.draw(json_values, label="widths")}
            continue
        target = document
        key = data.draw(st.sampled_from(sorted(target)), label="field")
        if isinstance(target[key], dict) and target[key] and data.draw(st.booleans()):
            target = target[key]
            key = data.draw(st.sampled_from(sorted(target)), label="subfield")
        if data.draw(st.booleans()):
            del target[key]
        else:
            target[key] = data.draw(json_values, label="value")
    return document


@FUZZ
@given(st.data())
def test_any_json_as_checkpoint_metadata(folder, data):
    path, meta = folder
    document = near_miss(data, meta) if data.draw(st.booleans()) else data.draw(json_values, label="document")
    (path / "checkpoint.json").write_text(json.dumps(document))
    loaded = result_or_cnnkit_error(load_model_checkpoint, path)
    if loaded is not None:  # what loads is what the tools can use
        model, read = loaded
        assert len(read["classes"]) >= read["model"]["num_classes"]
        assert all(s > 0 for s in read["preprocess"]["std"])


TRAIN_OPTIONS = sorted(f.name for f in __import__("dataclasses").fields(TrainConfig))


def recipe_to_config(recipe: dict) -> TrainConfig:
    """What 'cnnkit train --recipe' does with a recipe's mapping (cli._train)."""
    options = {k: v for k, v in recipe.items() if k not in ("model", "data", "model_args", "description")}
    return TrainConfig.from_dict(options)


@FUZZ
@given(st.binary(max_size=400) | st.text(alphabet=string.printable, max_size=300).map(str.encode))
def test_any_bytes_as_a_recipe(tmp_path, data):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes(data)
    loaded = result_or_cnnkit_error(load_recipe, recipe)
    if loaded is not None:
        result_or_cnnkit_error(recipe_to_config, loaded)


@FUZZ
@given(st.dictionaries(st.sampled_from(TRAIN_OPTIONS + ["model", "data", "model_args", "description"])
                       | st.text(max_size=6), json_values, max_size=6))
def test_any_values_for_the_recipe_fields(values):
    try:
        text = yaml.safe_dump(values)
    except yaml.YAMLError:
        return
    loaded = result_or_cnnkit_error(parse_recipe, text)
    if loaded is not None:
        config = result_or_cnnkit_error(recipe_to_config, loaded)
        if config is not None:  # what is accepted is in range
            assert config.epochs >= 1 and config.batch_size >= 1 and config.lr > 0
