"""``langneurons sharing``: Sharing Matters (Wang et al. 2024) on a parallel corpus and / or a task.

Every input is checked before the model loads (the output location, the corpus's alignment, the template's
fields, the task, the numbers); the result is written atomically at the end, so an error leaves nothing
half-written. See docs/sharing_matters.md.
"""

from __future__ import annotations

import argparse

from langneurons.cli._common import (
    add_force_option,
    add_list_option,
    add_model_options,
    add_placement_options,
    check_placement,
    parse_langs,
    prepare_outputs,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sharing", help="Sharing Matters: all-shared / partial-shared / specific / non-activated neurons per item, "
                        "contribution and effective scores, accuracy when deactivating or converting them",
        description="Types of FFN neurons per item across its translations (eqs. 4-7), their share by layer and "
                    "language, contribution (eq. 3) and effective scores, and task accuracy under per-item "
                    "deactivation and conversion by type. Writes types_by_layer.csv, types_by_language.csv, "
                    "contribution.csv, effective.csv, deactivation.csv, conversion.csv, figures and meta.json. "
                    "See docs/sharing_matters.md.")
    add_model_options(parser)
    parser.add_argument("--parallel", default=None,
                        help="parallel corpus: a directory of aligned {lang}.txt files or one .jsonl with a field per "
                             "language (and answer fields)")
    add_list_option(parser, "--langs", "languages (default: all of the corpus / task)")
    parser.add_argument("--template", default=None,
                        help="prompt template with {text} and fields, or a preset: text, xnli, fact_probing, "
                             "knowledge_editing (default: {text}, the line as written)")
    parser.add_argument("--threshold", default="0", help="activation threshold of the types (default 0)")
    parser.add_argument("--task", default=None,
                        help="cloze / choice / first_token / greedy built from --parallel, or a named task (cloze "
                             "from --data without --parallel, mpararel, ...) or a task file; without it only types "
                             "and contribution scores are computed")
    parser.add_argument("--data", default=None, help="data folder of named tasks (default: $LANGNEURONS_DATA, "
                                                     "else ../shared/data)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many aligned items")
    parser.add_argument("--metric", default=None, choices=["choice", "first_token"],
                        help="cloze: multiple choice (default) or first-token match")
    parser.add_argument("--normalization", default=None, choices=["sum", "token", "char"],
                        help="multiple choice: how options are ranked (default: char)")
    parser.add_argument("--space", default=None, choices=["auto", "yes", "no"],
                        help="leading space before a continuation (default auto)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="greedy tasks: tokens to generate")
    parser.add_argument("--relations", default=None,
                        help="mpararel: comma-separated relations (the paper's fact probing: P36, capitals)")
    parser.add_argument("--thresholds", default="0,0.1,0.2,0.3,0.4,0.5",
                        help="comma-separated thresholds of the sweep (Figure 22)")
    parser.add_argument("--language-counts", default=None,
                        help="comma-separated sizes of the growing language subsets (Figure 19; default 3,5,...,K)")
    parser.add_argument("--top", default="0.05", help="share of each layer's top contributors (Figure 8; 0.05)")
    parser.add_argument("--unnormalized", action="store_true",
                        help="contribution |A_i| ||v_i|| without dividing by the layer's sum (as the authors' notebook)")
    parser.add_argument("--embedding", default="output", choices=["output", "input"],
                        help="effective scores: rows of the output (default) or input embedding")
    parser.add_argument("--final-norm", action="store_true",
                        help="effective scores through the final norm (linearised at each row's final hidden state)")
    parser.add_argument("--scope", default="active", choices=["active", "type"],
                        help="deactivation: a row gets the type's neurons active in its language (default) or all")
    parser.add_argument("--epsilon", default="1e-3",
                        help="conversion sets inactive neurons to threshold + epsilon (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random controls")
    parser.add_argument("--no-interventions", action="store_true", help="skip deactivation and conversion")
    parser.add_argument("--no-random", action="store_true", help="skip the random_<type> rows")
    parser.add_argument("--no-dead", action="store_true", help="skip the every-token count (Figure 6)")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward pass of the recording")
    parser.add_argument("--task-batch-size", type=int, default=8, help="rows per forward pass of the task scoring")
    parser.add_argument("--chunk-size", type=int, default=None, help="positions per chunk of the LM head")
    parser.add_argument("--padding-side", default="right", choices=["right", "left"], help="padding of the recording")
    parser.add_argument("--max-length", type=int, default=512, help="longer inputs keep their last tokens (at most the model's context; default 512)")
    parser.add_argument("--bos", action="store_true", help="without a task: put a BOS before each line")
    parser.add_argument("--scratch-dir", default=None,
                        help="folder for memory-mapped vectors of large runs (default: the system's temporary folder)")
    parser.add_argument("--out", required=True, help="output directory")
    add_force_option(parser)
    add_placement_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def number(text: str, name: str) -> float:
    from langneurons.methods.neuron_types import check_threshold

    return check_threshold(text, name)


def numbers(text: str, name: str) -> list[float]:
    from langneurons.errors import LangNeuronsError

    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise LangNeuronsError(f"{name} needs at least one number")
    return [number(part, name) for part in parts]


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from langneurons.analysis.sharing_items import CORPUS_TASKS, plan_items
    from langneurons.analysis.sharing_run import sharing_matters
    from langneurons.cli._common import load_model_from_args
    from langneurons.cli.task import task_settings
    from langneurons.data.parallel import load_parallel_corpus
    from langneurons.errors import LangNeuronsError

    check_placement(args)
    task_file = args.task if args.task and Path(args.task).exists() and args.task not in CORPUS_TASKS else None
    prepare_outputs(args, {"--out": args.out}, {"--model": args.model, "--parallel": args.parallel,
                                                "--data": args.data, "--task": task_file})
    if args.site != "ffn.act":
        raise LangNeuronsError("Sharing Matters types neurons at ffn.act (contributions use ffn.down_in where the MLP "
                               "is gated); --site does not apply")
    threshold = number(args.threshold, "threshold")
    thresholds = numbers(args.thresholds, "--thresholds")
    epsilon = number(args.epsilon, "--epsilon")
    top = number(args.top, "--top")
    counts = None if args.language_counts is None else [int(v) for v in numbers(args.language_counts,
                                                                                  "--language-counts")]
    if args.limit is not None and args.limit < 1:
        raise LangNeuronsError(f"--limit must be at least 1, got {args.limit}")
    langs = parse_langs(args.langs)
    settings = task_settings(args)
    if args.metric is not None:
        settings["metric"] = args.metric
    if args.relations is not None:
        if args.task != "mpararel":
            raise LangNeuronsError("--relations applies to --task mpararel")
        settings["relations"] = parse_langs(args.relations)
    corpus = None if args.parallel is None else load_parallel_corpus(args.parallel, langs)
    plan = plan_items(corpus, args.task, args.template, langs, args.limit, args.data, settings)
    loaded = load_model_from_args(args)
    result = sharing_matters(
        loaded, threshold=threshold, thresholds=thresholds, language_counts=counts, top=top,
        normalize=not args.unnormalized, embedding=args.embedding, final_norm=args.final_norm,
        interventions=not args.no_interventions, random=not args.no_random, scope=args.scope, epsilon=epsilon,
        seed=args.seed, batch_size=args.batch_size, task_batch_size=args.task_batch_size,
        padding_side=args.padding_side, max_length=args.max_length, add_bos=args.bos, dead=not args.no_dead,
        chunk_size=args.chunk_size, scratch_dir=args.scratch_dir, progress=not args.no_progress, plan=plan)
    result.save(args.out)
    print(format_types(result))
    for family, task_result in result.interventions.items():
        from langneurons.cli.task import format_accuracy

        print(f"{family}:")
        print(format_accuracy(task_result))
    for what, why in result.skipped.items():
        print(f"skipped {what}: {why}")
    print(f"wrote {args.out}/types_by_layer.csv, ... and meta.json")
    return 0


def format_types(result) -> str:
    """The types-by-layer table as aligned text."""
    from langneurons.methods.neuron_types import TYPES

    shares = result.accumulator.types_by_layer()
    lines = ["layer" + "".join(f"{name:>16}" for name in TYPES)]
    for layer, row in enumerate(shares.tolist()):
        lines.append(f"{layer:<5}" + "".join(f"{value:>16.3f}" for value in row))
    return "\n".join(lines)
