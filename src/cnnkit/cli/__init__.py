"""``cnnkit`` command line: thin argument parsing over the Python API, one module per command family.

Every subcommand prints a clear message and exits with status 2 on bad input (unknown names, missing or
corrupt files, unreadable images, mismatched checkpoints); a traceback means a bug in cnnkit.

Each family module (``info``, ``train``, ``evaluate``, ``predict``, ``style``, ``tasks``, ``compress``, ``serve``,
``finetune``; ``viz`` lives in :mod:`cnnkit.viz.cli`) exposes ``add_parser(sub)``; :mod:`.main` builds the
top-level parser from them. Modules import only what parsing needs at the top, so ``cnnkit --help`` stays fast;
each command imports the heavy parts (torch, models, data) inside its function.
"""

from ..schema import positive_int
from .common import claim_out
from .main import build_parser, main
from ..train.recipe import load_recipe, parse_recipe  # their home since issue 25; kept importable here

_parser = build_parser  # the name tests and older code use

__all__ = ["build_parser", "claim_out", "load_recipe", "main", "parse_recipe", "positive_int"]
