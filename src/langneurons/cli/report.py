"""``langneurons report``: one self-contained HTML file of whatever artefacts run directories hold."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option

    parser = subparsers.add_parser(
        "report", help="render run directories into one self-contained HTML report",
        description="Walks each RUN_DIR (two levels deep) for artefact folders (meta.json with a kind) and writes "
                    "one HTML file with embedded figures, sortable tables and provenance. With several run "
                    "directories (e.g. several models) each section shows one column per run.",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    parser.add_argument("--out", default=None, help="HTML file to write (default: RUN_DIR/report.html of the first)")
    parser.add_argument("--title", default=None, help="page title (default: langneurons report)")
    add_force_option(parser, "replace an existing file at --out that is not a langneurons report (a previous "
                             "report is always replaced: it is regenerated from the run directories)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from langneurons.cli._common import prepare_outputs
    from langneurons.report import build_report, is_report
    from langneurons.sets.artefacts import Target

    from langneurons.report import discover_runs

    discover_runs(args.run_dirs)  # missing or empty run directories first (cheap), never created
    out = args.out if args.out is not None else str(Path(args.run_dirs[0]) / "report.html")
    prepare_outputs(args, [Target("--out", out, role="file", replaceable=is_report)], {"RUN_DIR": args.run_dirs},
                    containers=["RUN_DIR"])
    path = build_report(args.run_dirs, out, title=args.title, force=args.force)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
