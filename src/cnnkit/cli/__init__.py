"""``cnnkit`` command line: thin argument parsing over the Python API, one module per command family.

Every subcommand prints a clear message and exits with status 2 on bad input (unknown names, missing or
corrupt files, unreadable images, mismatched checkpoints); a traceback means a bug in cnnkit.

Each family module (``info``, ``train``, ``evaluate``, ``predict``, ``style``, ``tasks``, ``compress``, ``serve``,
``finetune``; ``viz`` lives in :mod:`cnnkit.viz.cli`) exposes ``add_parser(sub)``; :mod:`.main` builds the
top-level parser from them. Modules import only what parsing needs at the top, so ``cnnkit --help`` stays fast;
each command imports the heavy parts (torch, models, data) inside its function.

What a command writes is named by one rule (:data:`.main.OUTPUT_RULE`, also in ``cnnkit --help``): ``--out DIR``
is always a folder the command creates (a run folder, viz's output folder), ``--output FILE`` always one file it
writes; ``-o`` is short for ``--output`` where the command writes a file (stylize, texture, denoise, segment,
translate, gan, compress, decompress, lr-find's plot), and for ``--out`` where it writes only a folder (train,
finetune, import, average, viz). A command that trains into a run folder *and* writes a file when applying
the model (denoise, segment, translate, gan, compress) keeps ``-o`` for the file and spells ``--out`` in full.
The training flags of ``cnnkit train`` are generated from :class:`~cnnkit.train.TrainConfig` (see
:mod:`.train_flags`).
"""

from ..lazy import lazy_exports
from ..schema import positive_int
from .common import claim_out
from .main import build_parser, main

_parser = build_parser  # the name tests and older code use

__all__ = ["build_parser", "claim_out", "load_recipe", "main", "parse_recipe", "positive_int"]

# Their home is cnnkit.train.recipe since issue 25; still importable from here, loaded on first use.
__getattr__, __dir__ = lazy_exports(__name__, {"load_recipe": "..train.recipe", "parse_recipe": "..train.recipe"})
