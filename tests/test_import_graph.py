"""The layers of cnnkit, written down and enforced over the import graph (tests/import_graph.py).

A module imports only from its own layer or the layers below it, and no import circle exists among the
imports that run when a module is imported. The one way up is an import inside a function, and only those
listed in UPWARD_ALLOWED, each with the reason it is there.
"""

from __future__ import annotations

import pytest
from import_graph import Import, cycles, imports, module_names

from cnnkit.errors import CnnkitError
from cnnkit.models import registry

# Lowest first. A module belongs to the layer of the longest prefix that names it (a package takes its modules
# with it). The model card sits below the weights because the weights fill it (a pretrained tag, an import);
# run folders (weights + card on disk: cnnkit.runs) sit above both and below the training loop that writes
# them (train.checkpoint holds only the resume state). The same layers are written as an import-linter contract
# in .importlinter, which tests/test_architecture.py runs and keeps equal to this table. ``cnnkit`` itself, the
# facade that re-exports the public API and wires the layers together (set_weights_loader), sits on top with the
# CLI and the web server.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundations", ("cnnkit.errors", "cnnkit.schema", "cnnkit.progress", "cnnkit.lazy")),
    ("data", ("cnnkit.data",)),
    ("layers", ("cnnkit.layers",)),
    ("models", ("cnnkit.models",)),
    ("model card", ("cnnkit.card",)),
    ("weights", ("cnnkit.weights",)),
    ("run folders", ("cnnkit.runs",)),
    ("train", ("cnnkit.train",)),
    ("tools", ("cnnkit.transfer", "cnnkit.viz", "cnnkit.style", "cnnkit.texture", "cnnkit.compress",
               "cnnkit.denoise", "cnnkit.segment", "cnnkit.detect", "cnnkit.translate", "cnnkit.gan", "cnnkit.analysis",
               "cnnkit.predict", "cnnkit.importer", "cnnkit.export")),
    ("applications", ("cnnkit", "cnnkit.cli", "cnnkit.serve", "cnnkit.__main__")),
]

# Imports inside functions that point up a layer, each kept so that something stays cheap to import (above all
# `cnnkit --help`, which must not pay for torch-heavy tools it does not run): (source, target) -> why.
# None is needed today.
UPWARD_ALLOWED: dict[tuple[str, str], str] = {}


def layer_of(module: str) -> int:
    best, best_length = None, -1
    for number, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = number, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in tests/test_import_graph.py")
    return best


def upward_imports(edges: list[Import]) -> list[Import]:
    """The imports that point from a module to a higher layer."""
    return [e for e in edges if layer_of(e.target) > layer_of(e.source)]


def _describe(edges) -> str:
    return "\n".join(f"  {e.source}:{e.line} -> {e.target} ({LAYERS[layer_of(e.source)][0]} -> "
                     f"{LAYERS[layer_of(e.target)][0]}, {'module level' if e.module_level else 'in a function'})"
                     for e in edges)


def test_every_module_has_a_layer():
    for module in module_names():
        layer_of(module)


def test_no_import_circle_among_module_level_imports():
    found = cycles([e for e in imports() if e.module_level])
    assert not found, "import circles:\n" + "\n".join("  " + " <-> ".join(group) for group in found)


def _excused(edge: Import) -> bool:
    pair = (edge.source, edge.target)
    return pair in UPWARD_ALLOWED and not edge.module_level


def test_no_module_imports_from_a_higher_layer():
    upward = [e for e in upward_imports(imports()) if not _excused(e)]
    assert not upward, "imports from a lower layer to a higher one:\n" + _describe(upward)


def test_every_excused_upward_import_still_exists():
    upward = upward_imports(imports())
    stale = sorted(set(UPWARD_ALLOWED) - {(e.source, e.target) for e in upward if not e.module_level})
    assert not stale, f"remove these from UPWARD_ALLOWED, they are gone: {stale}"


def test_the_scanner_sees_function_level_and_relative_imports(tmp_path):
    package = tmp_path / "cnnkit"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("from . import models\n")
    (package / "models" / "__init__.py").write_text("from .registry import create_model\n")
    (package / "models" / "registry.py").write_text(
        "from ..errors import Oops\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from ..weights import never_run\n"
        "def create_model():\n    from ..weights import load\n")
    (package / "errors.py").write_text("")
    (package / "weights.py").write_text("import cnnkit.models.registry\n")
    found = {(e.source, e.target, e.module_level) for e in imports(tmp_path)}
    assert found == {("cnnkit", "cnnkit.models", True), ("cnnkit.models", "cnnkit.models.registry", True),
                     ("cnnkit.models.registry", "cnnkit.errors", True),
                     ("cnnkit.models.registry", "cnnkit.weights", False),
                     ("cnnkit.weights", "cnnkit.models.registry", True)}
    assert cycles([e for e in imports(tmp_path) if e.module_level]) == []
    assert cycles(imports(tmp_path)) == [["cnnkit.models.registry", "cnnkit.weights"]]


def test_pretrained_weights_come_through_the_loader_slot(monkeypatch):
    # The registry cannot import the weights (a layer up), so `import cnnkit` hands it their loader.
    calls = []
    monkeypatch.setattr(registry, "_weights_loader", lambda model, spec: calls.append((type(model).__name__, spec)))
    registry.create_model("lenet5", pretrained="some-tag")
    assert calls == [("LeNet5", "some-tag")]
    monkeypatch.setattr(registry, "_weights_loader", None)
    with pytest.raises(CnnkitError, match="no weights loader is installed"):
        registry.create_model("lenet5", pretrained="some-tag")


# Where an import inside a function earns its place: the command-line modules, so that `cnnkit --help` (0.1 s) and
# each command load only what they run (no torch for --help; not matplotlib, the web server or scikit-learn for
# every command), and the package facade, whose two plug-ins into the registry load run folders and the
# compression model only when a model is asked for (packages' public names load through cnnkit.lazy).
LAZY_IMPORTS_ALLOWED_IN = ("cnnkit.cli", "cnnkit.viz.cli")
LAZY_IMPORTS_ALLOWED_EXACTLY_IN = ("cnnkit",)


def test_imports_inside_functions_only_in_the_command_line_modules():
    lazy = [e for e in imports() if not e.module_level and e.source not in LAZY_IMPORTS_ALLOWED_EXACTLY_IN
            and not any(e.source == p or e.source.startswith(p + ".") for p in LAZY_IMPORTS_ALLOWED_IN)]
    assert not lazy, ("imports inside functions outside the command line (move them to the top of the module; "
                      "an import circle they would make is a layering fault to fix):\n" + _describe(lazy))
