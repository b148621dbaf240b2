"""``langneurons demo``: the four papers' stories on the bundled toy model, on CPU."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option, add_list_option

    parser = subparsers.add_parser(
        "demo", help="the four papers' stories on the bundled toy model, into one report",
        description="LAPE (deactivation matrix, layers, steering), Sharing Matters (neuron types, deactivation by "
                    "type on a cloze), PLND (importance neurons, overlaps) and Lingua Franca (LRDS / SADS, similarity "
                    "map, key regions) on the bundled multilingual toy model and demo corpus, then report.html "
                    "(CPU, about three minutes on two cores). A part that is not installed is skipped and said so.",
    )
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--model", default=None, help="toy-gpt2 (the bundled GELU sibling), or another model directory or hub id "
                                                    "(default: the bundled toy-llama)")
    parser.add_argument("--corpus", default=None, help="recording corpus (default: the bundled demo corpus, train part)")
    parser.add_argument("--valid", default=None, help="evaluation corpus (default: the bundled demo corpus, valid part)")
    parser.add_argument("--device", default="cpu", help="torch device")
    add_list_option(parser, "--parts", "parts to run: lape, sharing, plnd, lingua_franca (default: all)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force_option(parser, "also write into an --out that holds other files (the demo's stats, lape.neurons, "
                             "ppl, ... and report.html there are replaced, the rest kept); a previous demo run "
                             "alone is always replaced (it is a demo: nothing of yours is lost)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from langneurons.cli._common import prepare_outputs
    from langneurons.sets.artefacts import Target, allow_replacing
    from langneurons.testbed.demo import DEMO_ENTRIES, is_demo_run, run_demo

    from langneurons.errors import LangNeuronsError
    from langneurons.testbed.demo_parts import PARTS

    known = [name for name, _, _ in PARTS]
    unknown = [name for name in args.parts or [] if name not in known]
    if unknown:
        raise LangNeuronsError(f"--parts: unknown part(s) {', '.join(unknown)}; the parts are {', '.join(known)}")
    prepare_outputs(args, [Target("--out", args.out, role="folder", marker="", replaceable=is_demo_run)],
                    {"--model": args.model, "--corpus": args.corpus, "--valid": args.valid})
    if args.force:
        allow_replacing(Path(args.out) / entry for entry in DEMO_ENTRIES)
    result = run_demo(args.out, model=args.model, corpus=args.corpus, valid=args.valid, device=args.device,
                      progress=not args.no_progress, parts=args.parts)
    print(f"report: {result.report}")
    return 0
