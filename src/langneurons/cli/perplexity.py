"""``langneurons perplexity``: the deactivation perplexity matrix (LAPE paper, Figure 2)."""

from __future__ import annotations

import argparse

from langneurons.cli._common import (
    add_corpus_options,
    add_force_option,
    add_model_options,
    add_placement_options,
    add_resume_options,
    check_placement,
    command_run,
    load_model_from_args,
    parse_langs,
    prepare_outputs,
    start_checkpoints,
    with_checkpoints,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "perplexity", help="perplexity per language with each language's neurons deactivated",
        description="Rows: normal, random, one per deactivated language; columns: evaluated language. "
                    "Writes perplexity.csv, nll.csv, meta.json and perplexity_change.png.",
    )
    add_model_options(parser)
    add_corpus_options(parser, "validation directory of {lang}.txt or {lang}.jsonl files")
    parser.add_argument("--neurons", required=True, help="neuron set written by `langneurons identify`")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random row")
    parser.add_argument("--no-random", action="store_true", help="skip the random row")
    add_placement_options(parser)
    add_resume_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.cli._common import check_against_model, check_seq_len_early, load_neuron_set
    from langneurons.errors import LangNeuronsError
    from langneurons.evaluation.perplexity import perplexity_matrix
    from langneurons.sets.compatibility import neurons_input

    check_placement(args)
    inputs = {"--model": args.model, "--corpus": args.corpus, "--neurons": args.neurons}
    prepare_outputs(args, with_checkpoints(args, {"--out": args.out}), inputs)
    neurons = load_neuron_set(args.neurons)  # fail fast before loading the model
    if args.site != "ffn.act" and args.site not in neurons.sites:
        raise LangNeuronsError(f"--site {args.site} differs from the site of --neurons {args.neurons!r} "
                               f"({', '.join(neurons.sites)})")
    check_seq_len_early(args)
    with command_run(args, inputs) as run:  # torchrun: every rank evaluates its batches, rank 0 writes
        loaded = load_model_from_args(args)
        check_against_model(loaded, [neurons_input("--neurons", args.neurons, neurons)], args)
        start_checkpoints(run, args, loaded, inputs)
        matrix = perplexity_matrix(
            loaded, args.corpus, neurons, langs=parse_langs(args.langs), max_tokens=args.max_tokens,
            seq_len=args.seq_len, batch_size=args.batch_size, random_seed=args.seed,
            include_random=not args.no_random, progress=not args.no_progress,
        )
        if run.is_main:
            matrix.save(args.out)
        run.finish()
    if run.is_main:
        print(format_matrix(matrix))
        print(f"wrote {args.out}/perplexity.csv, nll.csv, perplexity_change.png")
    return 0


def format_matrix(matrix) -> str:
    """The perplexity matrix as an aligned text table."""
    width = max(8, *(len(c) for c in matrix.conditions))
    lines = ["perplexity".ljust(width) + "".join(f"{lang:>10}" for lang in matrix.languages)]
    for condition, row in zip(matrix.conditions, matrix.perplexity.tolist()):
        lines.append(condition.ljust(width) + "".join(f"{value:>10.3f}" for value in row))
    return "\n".join(lines)
