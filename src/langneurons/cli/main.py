"""Entry point of the ``langneurons`` command.

Each subcommand lives in its own module of this package and exposes ``add_parser(subparsers)``,
which registers the subcommand and sets ``func`` (called with the parsed namespace). Heavy imports
(torch, transformers) happen inside ``func`` so that ``langneurons --help`` stays fast.

Every command that writes has ``--force`` (:func:`langneurons.cli._common.add_force_option`) and calls
:func:`langneurons.cli._common.prepare_outputs` with its outputs and inputs before any work. Exit codes: 0 done,
2 user error (one line on stderr), 130 interrupted (:data:`langneurons.cli._common.EXIT_CODES`, shown in the
``--help`` epilog). Parsers are :class:`langneurons.cli._common.Parser` (defaults in every help text).
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
    "lingua_franca",
    "plnd",
    "compare",
    "report",
    "demo",
    "toy",
]


def build_parser() -> argparse.ArgumentParser:
    from langneurons.cli._common import EXIT_EPILOG, Parser

    parser = Parser(
        prog="langneurons",
        description="Find, measure and steer language-specific neurons of causal language models. Lists are "
                    "space- or comma-separated (--langs en zh, --langs en,zh); every command that writes has "
                    "--force and checks its outputs before any work.",
        epilog=EXIT_EPILOG,
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
    try:
        args = parser.parse_args(argv)
    except LangNeuronsError as exc:  # a list option's value (the only check made while parsing)
        words = [word for word in (sys.argv[1:] if argv is None else argv) if not word.startswith("-")]
        print(f"langneurons {words[0] if words else ''}: error: {exc}".replace("  ", " "), file=sys.stderr)
        return 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
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
