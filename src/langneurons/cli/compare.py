"""``langneurons compare A.neurons B.neurons ... --out DIR``: how much do methods' neuron sets agree?"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option, add_list_option

    parser = subparsers.add_parser(
        "compare", help="compare neuron sets of several methods (Jaccard, sizes, layer distributions)",
        description="Per language (and 'all', the union over languages): sizes and pairwise Jaccard overlap of the "
                    "sets; their layer distributions side by side. Writes sizes.csv, jaccard.csv, layers.csv, "
                    "jaccard.png, layers.png and meta.json into --out.",
    )
    parser.add_argument("neurons", nargs="+", help="neuron-set directories written by `langneurons identify`")
    add_list_option(parser, "--names", "labels, one per set, e.g. --names lape lap (default: directory names "
                    "without .neurons); give it after the sets", metavar="NAME")
    parser.add_argument("--out", required=True, help="output directory")
    add_force_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.analysis.compare import compare_neuron_sets, default_names
    from langneurons.errors import LangNeuronsError
    from langneurons.cli._common import prepare_outputs
    from langneurons.cli._common import load_neuron_set

    prepare_outputs(args, {"--out": args.out}, {"NEURONS": args.neurons})
    if args.names is not None:
        names = list(args.names) if not isinstance(args.names, str) else [p.strip() for p in args.names.split(",")]
        if len(names) != len(args.neurons) or not all(names) or len(set(names)) != len(names):
            raise LangNeuronsError(f"--names needs {len(args.neurons)} distinct non-empty labels, got {args.names!r}")
    else:
        names = default_names(args.neurons)
    sets = {name: load_neuron_set(path, "NEURONS") for name, path in zip(names, args.neurons)}
    result = compare_neuron_sets(sets)
    result.save(args.out)
    width = max(len(lang) for lang in [*result.languages, "all"]) + 2
    print("sizes".ljust(width) + "".join(f"{name:>12}" for name in result.names))
    for lang in [*result.languages, "all"]:
        print(lang.ljust(width) + "".join(f"{result.sizes[name][lang]:>12d}" for name in result.names))
    for pair in result.pairs:
        if pair.language == "all":
            print(f"Jaccard {pair.first} vs {pair.second} (all languages): {pair.jaccard:.3f}")
    print(f"wrote {args.out}/sizes.csv, jaccard.csv, layers.csv, jaccard.png, layers.png")
    return 0
