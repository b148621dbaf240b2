"""``langneurons report``: one self-contained HTML file of whatever artefacts run directories hold."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="render run directories into one self-contained HTML report",
        description="Walks each RUN_DIR (two levels deep) for artefact folders (meta.json with a kind) and writes "
                    "one HTML file with embedded figures, sortable tables and provenance. With several run "
                    "directories (e.g. several models) each section shows one column per run.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html of the first)")
    parser.add_argument("--title", default=None, help="page title (default: langneurons report)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.report import build_report

    path = build_report(args.run_dirs, args.out, title=args.title)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
