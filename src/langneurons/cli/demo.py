"""``langneurons demo``: the LAPE pipeline end to end on the bundled toy model, on CPU."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option

    parser = subparsers.add_parser(
        "demo", help="run record -> identify -> perplexity matrix -> report on the bundled toy model",
        description="The whole LAPE story on the bundled multilingual toy model and demo corpus (CPU, about a minute).",
    )
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--model", default=None, help="another model directory or hub id instead of the bundled one")
    parser.add_argument("--corpus", default=None, help="recording corpus (default: the bundled demo corpus, train part)")
    parser.add_argument("--valid", default=None, help="evaluation corpus (default: the bundled demo corpus, valid part)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force_option(parser, "also write into an --out that holds other files (the demo's stats, lape.neurons, "
                             "ppl, layers and report.html there are replaced, the rest kept); a previous demo run "
                             "alone is always replaced (it is a demo: nothing of yours is lost)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from langneurons.cli._common import prepare_outputs
    from langneurons.sets.artefacts import Target, allow_replacing
    from langneurons.testbed.demo import DEMO_ENTRIES, is_demo_run, run_demo

    prepare_outputs(args, [Target("--out", args.out, role="folder", marker="", replaceable=is_demo_run)],
                    {"--model": args.model, "--corpus": args.corpus, "--valid": args.valid})
    if args.force:
        allow_replacing(Path(args.out) / entry for entry in DEMO_ENTRIES)
    result = run_demo(args.out, model=args.model, corpus=args.corpus, valid=args.valid, device=args.device,
                      progress=not args.no_progress)
    print(f"report: {result.report}")
    return 0
