"""``langneurons task``: task accuracy per language with each language's neurons deactivated."""

from __future__ import annotations

import argparse

from langneurons.cli._common import (
    add_force_option,
    add_list_option,
    add_model_options,
    add_placement_options,
    add_resume_options,
    check_placement,
    parse_langs,
    prepare_outputs,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "task", help="task accuracy per language (multiple choice / exact match) under neuron deactivation",
        description="Rows: normal, random, deactivate:X per language; columns: the task's languages. "
                    "Writes accuracy.csv, items.jsonl and meta.json. See docs/tasks.md.",
    )
    add_model_options(parser)
    parser.add_argument("--task", required=True,
                        help="a .jsonl / .tsv task file, or a named task: cloze, mgsm, xquad, mpararel")
    parser.add_argument("--data", default=None,
                        help="data folder of the named tasks (default: $LANGNEURONS_DATA, else ../shared/data)")
    add_list_option(parser, "--langs", "languages, e.g. --langs en zh (default: every language of the task)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many items per language")
    parser.add_argument("--metric", default=None, choices=["choice", "first_token", "greedy", "numeric"],
                        help="how to score (default: the task's own; for a file: choice with options, else greedy)")
    parser.add_argument("--normalization", default=None, choices=["sum", "token", "char"],
                        help="multiple choice: rank options by summed log-likelihood, per token, or per character "
                             "(default: char)")
    parser.add_argument("--space", default=None, choices=["auto", "yes", "no"],
                        help="leading space before a continuation (default auto: by language; none for zh, ja, th...)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="greedy / numeric: tokens to generate")
    parser.add_argument("--neurons", default=None, help="neuron set (without it: only the normal row)")
    add_list_option(parser, "--deactivate", "languages whose neurons get a row, e.g. --deactivate en zh "
                    "(default: every language of the set)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random row")
    parser.add_argument("--no-random", action="store_true", help="skip the random row")
    parser.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    parser.add_argument("--chunk-size", type=int, default=None,
                        help="positions per chunk of the LM head (default: 2**26 logits per chunk)")
    parser.add_argument("--out", required=True, help="output directory")
    add_placement_options(parser)
    add_resume_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force_option(parser)
    parser.set_defaults(func=run)


def task_settings(args: argparse.Namespace) -> dict:
    settings: dict = {}
    if args.normalization is not None:
        settings["normalization"] = args.normalization
    if args.space is not None and args.space != "auto":
        settings["space"] = args.space == "yes"
    if args.max_new_tokens is not None:
        settings["max_new_tokens"] = args.max_new_tokens
    return settings


def run(args: argparse.Namespace) -> int:
    from langneurons.cli._common import (check_against_model, command_run, load_model_from_args, load_neuron_set,
                                         start_checkpoints, with_checkpoints)
    from langneurons.errors import LangNeuronsError
    from langneurons.evaluation.tasks import load_task, task_accuracy
    from langneurons.sets.compatibility import neurons_input

    check_placement(args)
    from pathlib import Path

    inputs = {"--model": args.model, "--neurons": args.neurons, "--data": args.data,
              "--task": args.task if Path(args.task).exists() else None}  # a file, not a task name
    inputs = {flag: path for flag, path in inputs.items() if path}
    prepare_outputs(args, with_checkpoints(args, {"--out": args.out}), inputs)
    task = load_task(args.task, data=args.data, langs=parse_langs(args.langs), limit=args.limit, metric=args.metric,
                     **task_settings(args))
    task.validate()
    neurons = None
    if args.neurons:
        neurons = load_neuron_set(args.neurons)  # fail fast before loading the model
        if args.site != "ffn.act" and args.site not in neurons.sites:
            raise LangNeuronsError(f"--site {args.site} differs from the site of --neurons {args.neurons!r} "
                                   f"({', '.join(neurons.sites)})")
    elif args.deactivate:
        raise LangNeuronsError("--deactivate needs --neurons")
    with command_run(args, inputs) as run:  # torchrun: every rank scores its batches, rank 0 writes
        loaded = load_model_from_args(args)
        if neurons is not None:
            check_against_model(loaded, [neurons_input("--neurons", args.neurons, neurons)], args)
        from dataclasses import asdict

        from langneurons.recording.progress import digest

        start_checkpoints(run, args, loaded, {**inputs, "--task": args.task},
                          extra={"items": digest([asdict(i) for i in task.items])})
        result = task_accuracy(loaded, task, neurons, deactivate_languages=parse_langs(args.deactivate),
                               include_random=not args.no_random, random_seed=args.seed, batch_size=args.batch_size,
                               chunk_size=args.chunk_size, progress=not args.no_progress)
        if run.is_main:
            result.save(args.out, force=True)  # --out was checked (and --force honoured) above
        run.finish()
    if not run.is_main:
        return 0
    print(format_accuracy(result))
    print(f"wrote {args.out}/accuracy.csv, items.jsonl, meta.json")
    return 0


def format_accuracy(result) -> str:
    """The accuracy table as aligned text."""
    width = max(10, *(len(c) for c in result.conditions))
    lines = [f"{result.task} ({result.metric})".ljust(width) + "".join(f"{lang:>8}" for lang in result.languages)]
    for condition, row in zip(result.conditions, result.accuracy.tolist()):
        lines.append(condition.ljust(width) + "".join(f"{value:>8.3f}" for value in row))
    return "\n".join(lines)
