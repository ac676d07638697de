"""The house rules of issue 25 that nobody can check by eye across a hundred files: the layers written in
``.importlinter`` (run by import-linter itself, an independent check of tests/import_graph.py's scanner), and the
sizes that keep a file readable in one sitting (600 lines) and a function on one screen (80 lines)."""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_import_graph import LAYERS

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "cnnkit"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def _lint_imports(config: Path, source: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).parent / "lint-imports"
    if not executable.exists():
        pytest.fail("import-linter is missing: it is in the `test` extra, which `make test` installs.")
    env = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run([str(executable), "--no-cache", str(config)], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_layers_contract_is_kept():
    result = _lint_imports(ROOT / ".importlinter", ROOT / "src")
    assert result.returncode == 0 and "1 kept, 0 broken" in result.stdout, result.stdout[-4000:] + result.stderr


def test_the_contract_names_the_layers_of_the_import_graph_test():
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    lines = [line.strip() for line in config["importlinter:contract:layers"]["layers"].splitlines() if line.strip()]
    contract = [sorted(name.strip() for name in line.split(":")) for line in reversed(lines)]
    # The package's own __init__ (the facade) cannot be a layer of import-linter; it is the top of LAYERS.
    table = [sorted(p for p in prefixes if p != "cnnkit") for _, prefixes in LAYERS]
    assert contract == table


def test_an_import_up_a_layer_breaks_the_contract(tmp_path):
    # The contract run above must be able to fail: the same kind of contract over a two-module package in which
    # the lower layer imports the higher one, inside a function.
    package = tmp_path / "src" / "cnnkit"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli.py").write_text("from . import models\n")
    (package / "models.py").write_text("def build():\n    from . import cli\n")
    config = tmp_path / ".importlinter"
    config.write_text("[importlinter]\nroot_package = cnnkit\n\n[importlinter:contract:layers]\nname = layers\n"
                      "type = layers\nlayers =\n    cnnkit.cli\n    cnnkit.models\n")
    result = _lint_imports(config, tmp_path / "src")
    assert result.returncode != 0 and "0 kept, 1 broken" in result.stdout, result.stdout[-2000:]
    assert "cnnkit.models -> cnnkit.cli" in result.stdout


def _python_files() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def test_no_file_is_over_600_lines():
    long = {str(p.relative_to(SOURCE)): n for p in _python_files()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long, f"files over {MAX_FILE_LINES} lines (split them by job): {long}"


def function_lengths(source: str) -> dict[str, int]:
    """Every function's and method's length in lines, nested and async ones included, by qualified name."""
    lengths = {}

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            name = prefix
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}."
                if not isinstance(child, ast.ClassDef):
                    lengths[name[:-1]] = child.end_lineno - child.lineno + 1
            walk(child, name)

    walk(ast.parse(source), "")
    return lengths


def test_no_function_is_over_80_lines():
    long = {f"{path.relative_to(SOURCE)}:{name}": n for path in _python_files()
            for name, n in function_lengths(path.read_text()).items() if n > MAX_FUNCTION_LINES}
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): {long}"


def test_the_length_check_sees_nested_and_async_functions():
    body = "\n".join(f"            x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    lengths = function_lengths(f"class A:\n    async def f(self):\n        def g():\n{body}\n")
    assert lengths == {"A.f": MAX_FUNCTION_LINES + 2, "A.f.g": MAX_FUNCTION_LINES + 1}


def test_help_loads_no_network_library():
    # What keeps `cnnkit --help` at a tenth of a second: building every command's parser, and importing the
    # package's facade, load neither torch nor matplotlib (names load on first use: cnnkit.lazy).
    code = ("import sys, contextlib, io\n"
            "from cnnkit.cli.main import build_parser\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    build_parser().parse_args(['--help'])\n"
            "import cnnkit\n"
            "assert cnnkit.__version__\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'numpy', 'PIL') if m in sys.modules))\n")
    assert _fresh_python(code) == "[]"


def test_public_names_still_load_on_use():
    code = ("import cnnkit, cnnkit.data, cnnkit.train, cnnkit.viz\n"
            "from cnnkit import Trainer, TrainConfig, create_model, load_dataset, summary\n"
            "assert 'lenet5' in cnnkit.list_models() and 'compress_factorized' in cnnkit.list_models()\n"
            "assert cnnkit.train.TrainConfig is TrainConfig and callable(cnnkit.viz.gradcam)\n"
            "assert set(cnnkit.__all__) <= set(dir(cnnkit))\n")
    _fresh_python(code)


def _fresh_python(code: str) -> str:
    """The standard output of ``code`` run by a new interpreter (nothing imported yet), which must succeed."""
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()
