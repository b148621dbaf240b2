"""``langneurons demo``: the LAPE pipeline end to end on the bundled toy model, on CPU."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="run record -> identify -> perplexity matrix -> report on the bundled toy model",
        description="The whole LAPE story on the bundled multilingual toy model and demo corpus (CPU, about a minute).",
    )
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--model", default=None, help="another model directory or hub id instead of the bundled one")
    parser.add_argument("--corpus", default=None, help="recording corpus (default: the bundled demo corpus, train part)")
    parser.add_argument("--valid", default=None, help="evaluation corpus (default: the bundled demo corpus, valid part)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.testbed.demo import run_demo

    result = run_demo(args.out, model=args.model, corpus=args.corpus, valid=args.valid, device=args.device,
                      progress=not args.no_progress)
    print(f"report: {result.report}")
    return 0
