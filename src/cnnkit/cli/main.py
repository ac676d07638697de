"""The top-level ``cnnkit`` parser, built from each command family's ``add_parser``, and ``main``."""

from __future__ import annotations

import argparse
import errno
import sys
import warnings
from pathlib import Path

from ..errors import CnnkitError
from . import compress, detect, evaluate, export, finetune, info, predict, serve, style, tasks, train
from .options import OPTION_HELP, HelpFormatter
from .tasks import task_training_defaults


# How every command names what it writes (see the package docstring).
OUTPUT_RULE = ("Outputs: --out DIR is always a folder a command creates (a run folder, viz's folder), --output FILE\n"
               "always one file it writes; -o is short for --output where a command writes a file, else for --out.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnnkit", description="Build, train, transfer, inspect and apply convolutional neural networks.",
        epilog="Run 'cnnkit COMMAND --help' for a command's options and examples. "
               "Datasets are looked for in\n$CNNKIT_DATA, then ~/.cache/cnnkit, then downloaded.\n\n" + OUTPUT_RULE,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    info.add_parser(sub)
    from ..viz.cli import add_parser as add_viz_parser

    add_viz_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    predict.add_parser(sub)
    export.add_parser(sub)
    style.add_parser(sub)
    tasks.add_parser(sub)
    detect.add_parser(sub)
    compress.add_parser(sub)
    serve.add_parser(sub)
    finetune.add_parser(sub)
    complete_help(parser)
    return parser


def complete_help(parser: argparse.ArgumentParser, command: str = "") -> None:
    """Every (sub)parser gets the defaults-showing formatter; an option declared without help gets the shared
    wording of OPTION_HELP; a task command's training options say the task's defaults."""
    parser.formatter_class = HelpFormatter
    task_defaults = task_training_defaults(command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                complete_help(child, name)
            continue
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        names = action.option_strings or [action.dest]
        if not action.help:
            action.help = next((OPTION_HELP[key] for name in names for key in ((command, name), name)
                                if key in OPTION_HELP), None)
        if action.dest in task_defaults and action.default is None and "default" not in (action.help or ""):
            action.help = f"{action.help or ''} (default: {task_defaults[action.dest]:g})".strip()


_DISK_ERRORS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=file or sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv:  # a bare `cnnkit` is asking what there is
        parser.print_help()
        return 0
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _show_warning  # one line, as the commands' own warnings: no source line
            args.func(args)
    except CnnkitError as exc:
        print(f"cnnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        # A full or read-only disk met by a writer other than the run folder's own (which say so themselves).
        print(f"cnnkit {args.command}: error: could not write {exc.filename or 'a file'}: {exc.strerror}; free some "
              "disk space or write somewhere else.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnkit {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    return 0


def _resume_hint(args) -> str:
    """What an interrupted command left behind, naming the real run folder."""
    from ..train.checkpoint import STATE_FILE

    run_dir = getattr(args, "run_dir", None) or getattr(args, "out", None)
    if run_dir is None or not isinstance(run_dir, Path):
        return "."
    if not (run_dir / STATE_FILE).is_file():
        return f" before the first epoch of {run_dir} finished; nothing to resume."
    if args.command == "train":
        return f"; 'cnnkit train --resume {run_dir}' continues it from its last completed epoch."
    return f"; {run_dir} holds the model of the last completed epoch."


if __name__ == "__main__":
    sys.exit(main())
