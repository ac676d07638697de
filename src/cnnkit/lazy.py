"""Package namespaces that import their modules on first use (PEP 562), so that ``import cnnkit`` and every
``cnnkit COMMAND --help`` stay free of torch and matplotlib until a name that needs them is used.

    __getattr__, __dir__ = lazy_exports(__name__, {"Trainer": "trainer", "TrainConfig": "config"})

``from package import Trainer`` and ``package.Trainer`` then import ``package.trainer`` the first time and keep
the value in the package's namespace.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for ``package`` whose public ``name`` lives in the module ``exports[name]``:
    a submodule's name, a relative path such as ``"..train.recipe"``, or ``""`` for the submodule ``name`` itself."""

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = exports[name] or name
        module = importlib.import_module(target if target.startswith(".") else f".{target}", package)
        value = module if not exports[name] else getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
