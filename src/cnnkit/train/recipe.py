"""Recipes: the YAML files of training options (``recipes/*.yaml``), and the options a run folder was started
with, read back to resume it.

A recipe is a mapping of :class:`~cnnkit.train.TrainConfig` fields plus ``model``, ``data``, ``model_args`` and
``description``; the CLI, the benchmarks and tests read it through :func:`load_recipe`. Merging explicit options
over a recipe is ``{**recipe, **given}``: a field given wins, a field left out keeps the recipe's value. Nothing
here imports torch, so the command line can read a recipe before deciding what to build.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import CnnkitError
from ..schema import Field, check_mapping
from .checkpoint import STATE_FILE

# The options a resumed run may change: its epoch budget, where and how it runs, and what it logs. Everything
# else would make the continued run a different run than the one its checkpoint belongs to.
RESUME_CHANGEABLE = ("epochs", "device", "num_threads", "num_workers", "progress", "tensorboard",
                     "tensorboard_steps")


def load_recipe(path: Path) -> dict:
    """A recipe file's mapping of options (its model, data, model_args and description fields checked; the
    training options are checked by TrainConfig). Any content ends in a dict or a CnnkitError."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise CnnkitError(f"Recipe {path} does not exist; see recipes/ for examples.") from None
    except OSError as exc:
        raise CnnkitError(f"Recipe {path} cannot be read: {exc.strerror or exc}.") from None
    recipe = parse_recipe(text, str(path))
    fields = {"model": Field(str, required=False), "data": Field(str, required=False),
              "model_args": Field(dict, required=False), "description": Field(str, required=False)}
    check_mapping(recipe, fields, f"Recipe {path}", "see recipes/ for examples")
    return recipe


# YAML 1.2 floats: PyYAML follows YAML 1.1, where '1e-3' (no dot) is a string.
_YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)$|^[-+]?[0-9][0-9_]*\.[0-9_]*$"
                           r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$")


def parse_recipe(text: bytes | str, name: str = "recipe") -> dict:
    """YAML text to a mapping, with YAML 1.2 numbers (``lr: 1e-3`` is a number, as a reader expects, not the
    string PyYAML's YAML 1.1 rules make of it)."""
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _YAML12_FLOAT, list("-+0123456789."))
    try:
        recipe = yaml.load(text, Loader=RecipeLoader)
    except yaml.YAMLError as exc:
        raise CnnkitError(f"Recipe {name} is not valid YAML: {str(exc)[:300]}") from None
    except (RecursionError, UnicodeError, ValueError) as exc:  # nesting too deep, bytes that are no text
        raise CnnkitError(f"Recipe {name} is not a readable YAML text ({type(exc).__name__}).") from None
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise CnnkitError(f"Recipe {name} must be a mapping of options, not {type(recipe).__name__}.")
    return recipe


def resume_recipe(run_dir: Path) -> dict:
    """The recipe the run in ``run_dir`` was started with, read back from its config.json: its training
    options with its model, data and model_args, so that resuming rebuilds the same run."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    if not (run_dir / STATE_FILE).is_file() or not config_file.is_file():
        raise CnnkitError(f"{run_dir} has no {STATE_FILE} and config.json to resume from; "
                          "it is not a cnnkit run folder, or the run never finished an epoch.")
    saved = json.loads(config_file.read_text())
    return {**saved["config"], "model": saved["model"]["name"], "data": saved["dataset"],
            "model_args": saved["model"].get("kwargs", {})}


def fixed_on_resume(options: dict) -> list[str]:
    """The names in ``options`` that a resumed run may not change (see RESUME_CHANGEABLE)."""
    return [name for name in options if name not in RESUME_CHANGEABLE]
