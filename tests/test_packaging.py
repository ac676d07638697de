"""The wheel: built from a copy of the sources (the checkout stays clean), it carries every module and every data
file of the package (the web page, the ImageNet class names, the example photos), and an installed copy works
on its own: in a clean virtual environment with no other package, ``import cnnkit`` and ``cnnkit --help`` (which
need no torch); beside the test environment's torch, a model builds and the package data loads from the
installed copy. Offline throughout (no build isolation, ``--no-index``, ``--no-deps``): about 10 s.
"""

import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cnnkit"
DATA_FILES = ["cnnkit/imagenet_classes.txt", "cnnkit/serve/static/draw.html", "cnnkit/serve/static/style.css",
              "cnnkit/serve/examples/golden_gate.jpg"]


def _run(*command, **kwargs) -> str:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _package_files() -> list[str]:
    """Every file of the source package a wheel must carry: modules and data, not bytecode."""
    return sorted(f"cnnkit/{p.relative_to(PACKAGE).as_posix()}" for p in PACKAGE.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("build", reason="the wheel check needs pip install 'cnnkit[test]' (the build package)")
    project = tmp_path_factory.mktemp("project")
    shutil.copy(ROOT / "pyproject.toml", project)
    shutil.copy(ROOT / "README.md", project)
    shutil.copytree(PACKAGE, project / "src" / "cnnkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", dist, project)
    (built,) = dist.glob("cnnkit-*.whl")
    return built


def test_the_wheel_carries_every_module_and_data_file(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert set(DATA_FILES) <= set(_package_files())  # the files named here still exist in the sources
    missing = sorted(set(_package_files()) - names)
    assert not missing, f"the wheel lacks {missing}: add their patterns to [tool.setuptools.package-data]"
    assert "cnnkit = cnnkit.cli:main" in entry_points
    assert "Requires-Dist: torch>=" in metadata and "Classifier: Programming Language :: Python :: 3" in metadata


def test_a_clean_environment_imports_the_wheel_and_runs_help_without_torch(wheel, tmp_path):
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # no PYTHONPATH to the sources
    environment = tmp_path / "clean"
    venv.EnvBuilder(with_pip=False).create(environment)  # no site packages: only what the wheel brings
    python = environment / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel)
    where = _run(python, "-c", "import cnnkit, sys; print(cnnkit.__file__); print('torch' in sys.modules)", env=bare)
    assert where.split() == [str(environment / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                                 / "site-packages" / "cnnkit" / "__init__.py"), "False"]
    assert "train" in _run(environment / "bin" / "cnnkit", "--help", env=bare)
    clean = subprocess.run([str(python), "-c", "import torch"], capture_output=True, timeout=60, env=bare)
    assert clean.returncode != 0  # the environment really is bare: --help above ran without torch


def test_the_installed_copy_builds_models_and_finds_its_data_beside_torch(wheel, tmp_path):
    target = tmp_path / "site"
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target", target, wheel)
    script = ("import cnnkit, importlib.resources, torch\n"
              "from cnnkit.weights import class_names\n"
              "model = cnnkit.create_model('lenet5_relu', features_only=True)\n"
              "maps = model(torch.zeros(1, 1, 32, 32))\n"
              "root = importlib.resources.files('cnnkit')\n"
              f"missing = [p for p in {DATA_FILES!r} if not root.joinpath(p.removeprefix('cnnkit/')).is_file()]\n"
              "print(cnnkit.__file__, len(class_names()), len(maps), missing)\n")
    environment = {**os.environ, "PYTHONPATH": str(target)}
    output = _run(sys.executable, "-c", script, env=environment, cwd=tmp_path).split(maxsplit=1)
    assert output == [str(target / "cnnkit" / "__init__.py"), "1000 3 []\n"]
