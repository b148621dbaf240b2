"""Entry point of the ``langneurons`` command.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``,
which registers the subcommand and sets ``func`` (called with the parsed namespace). Heavy imports
(torch, transformers) happen inside ``func`` so that ``langneurons --help`` stays fast.

Every command that writes has ``--force`` (:func:`langneurons.cli._common.add_force_option`) and calls
:func:`langneurons.cli._common.prepare_outputs` with its outputs and inputs before any work. Exit codes: 0 done,
2 user error (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextvars
import importlib
import sys
import warnings

from langneurons._version import __version__
from langneurons.errors import LangNeuronsError, LangNeuronsWarning

# Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES = [
    "record",
    "merge",
    "identify",
    "perplexity",
    "task",
    "sharing",
    "masks",
    "pv",
    "generate",
    "steer",
    "analyze",
    "compare",
    "report",
    "demo",
    "toy",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="langneurons",
        description="Find, measure and steer language-specific neurons of causal language models.",
    )
    parser.add_argument("--version", action="version", version=f"langneurons {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"langneurons.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not written yet
            if exc.name == f"langneurons.cli.{name}":
                continue
            raise
        module.add_parser(subparsers)
    return parser


def _one_line_warnings(command: str, fallback):
    """``warnings.showwarning`` that prints a :class:`LangNeuronsWarning` as one line on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, LangNeuronsWarning):
            print(f"langneurons {command}: warning: {message}", file=sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warnings(args.command, warnings.showwarning)
            # a fresh context per command: what it allows (``--force`` outputs) ends with it
            result = contextvars.copy_context().run(args.func, args)
    except LangNeuronsError as exc:
        print(f"langneurons {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"langneurons {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
