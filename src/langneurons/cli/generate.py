"""``langneurons generate``: answers to prompts (or unconditional samples) under neuron interventions.

Writes ``OUT/generations.jsonl`` (prompt, input, output, prompt language, condition, detected language)
and ``OUT/meta.json`` (model, neurons, statistics, settings, language identifier and version).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option, add_list_option, add_model_options
    from langneurons.cli._generation import add_generation_options

    parser = subparsers.add_parser(
        "generate", help="generate answers with language neurons deactivated / activated",
        description="Answer every {lang}.txt question (one per line) with the prompt 'Q: {question}\\nA:', "
                    "greedy with repetition penalty 1.1 (LAPE paper), under the given interventions; "
                    "writes OUT/generations.jsonl and OUT/meta.json.",
    )
    add_model_options(parser)
    parser.add_argument("--prompts", default=None, help="directory of {lang}.txt prompt files, one question per line")
    add_list_option(parser, "--langs", "prompt languages, e.g. --langs en zh (default: every file)", metavar="LANG")
    parser.add_argument("--neurons", default=None, help="neuron set written by `langneurons identify`")
    parser.add_argument("--stats", default=None, help="statistics written by `langneurons record` (for --activate)")
    add_list_option(parser, "--deactivate", "set these languages' neurons to 0, e.g. --deactivate es fr",
                    default=[], metavar="LANG")
    add_list_option(parser, "--activate", "set these languages' neurons to strength x their mean activation",
                    default=[], metavar="LANG")
    add_list_option(parser, "--strength", "factor on the mean activation (the paper's: 1); several values give "
                    "one activated condition each, as in steer", item_type=float, default=[1.0], metavar="S")
    parser.add_argument("--also-normal", action="store_true", help="also generate without intervention")
    parser.add_argument("--out", required=True, help="output directory")
    add_generation_options(parser)
    from langneurons.cli._common import add_resume_options

    add_resume_options(parser, unit="prompt batches")
    add_force_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.cli._common import (
        check_placement,
        command_run,
        load_model_from_args,
        parse_langs,
        prepare_outputs,
        start_checkpoints,
        with_checkpoints,
    )
    from langneurons.cli._generation import (
        check_loaded,
        check_prompt_source,
        judge_from_args,
        load_inputs,
        naming_inputs,
        settings_from_args,
    )
    from langneurons.errors import LangNeuronsError
    from langneurons.evaluation.generation import Condition, read_prompts
    from langneurons.evaluation.langid import get_identifier
    from langneurons.evaluation.steering import (
        PromptGroup,
        generate_records,
        run_meta,
        save_generations,
    )

    settings = settings_from_args(args)
    check_prompt_source(args)
    check_placement(args)
    inputs = {"--model": args.model, "--prompts": args.prompts, "--neurons": args.neurons, "--stats": args.stats}
    prepare_outputs(args, with_checkpoints(args, {"--out": args.out}), inputs)
    prompts = None
    if args.prompts is not None:
        prompts = read_prompts(args.prompts, parse_langs(args.langs), args.limit, args.prompt_chars)
    strengths = list(dict.fromkeys(args.strength if isinstance(args.strength, list) else [args.strength]))
    if len(strengths) > 1 and not args.activate:
        raise LangNeuronsError("several --strength values need --activate (one activated condition per strength)")
    deactivate, activate = list(dict.fromkeys(args.deactivate)), list(dict.fromkeys(args.activate))
    edited = [Condition(deactivate=deactivate, activate=activate, strength=value) for value in strengths]
    condition = edited[0]
    if not condition.is_normal and args.neurons is None:
        raise LangNeuronsError("--deactivate / --activate need --neurons")
    if condition.activate and args.stats is None:
        raise LangNeuronsError("--activate needs --stats (the mean activations come from the recorded statistics)")
    neurons, stats = load_inputs(args)
    conditions = ([Condition()] if args.also_normal and not condition.is_normal else []) + edited
    with naming_inputs(args):
        for item in conditions:
            item.edits(neurons, stats)  # unknown languages fail here, before the model loads
        if condition.activate:
            from langneurons.interventions.neurons import plan_edits

            plan_edits(condition.edits(neurons, stats), neurons.num_layers)  # statistics match the neuron set
    identifier = get_identifier(args.langid)
    judge = judge_from_args(args)

    if prompts is not None:
        groups = [PromptGroup(lang, lang, questions=questions) for lang, questions in prompts.items()]
        prompt_meta = {"path": str(args.prompts), "questions": {lang: len(q) for lang, q in prompts.items()}}
    else:
        groups = [PromptGroup("unconditional", None, unconditional=args.unconditional)]
        prompt_meta = {"unconditional": args.unconditional}
    with command_run(args, inputs) as run:  # torchrun: every rank generates its batches, rank 0 writes
        loaded = load_model_from_args(args)
        check_loaded(args, loaded, neurons, stats)
        start_checkpoints(run, args, loaded, inputs)
        records = generate_records(loaded, groups, conditions, settings, neurons, stats, identifier, judge,
                                   progress=not args.no_progress)
        meta = {**run_meta(loaded, settings, identifier, conditions, neurons, stats, judge, prompt_meta),
                **run.report()}
        if run.is_main:
            save_generations(args.out, records, meta)
        run.finish()
    if not run.is_main:
        return 0
    print(summary(records))
    print(f"wrote {args.out}/generations.jsonl ({len(records)} outputs) and meta.json")
    return 0


def summary(records) -> str:
    """Per condition and prompt language: outputs and the most frequent detected languages."""
    from collections import Counter

    groups: dict[tuple[str, str], Counter] = {}
    for record in records:
        groups.setdefault((record.condition, record.language or "-"), Counter())[record.detected_language or "?"] += 1
    lines = []
    for (condition, lang), counts in groups.items():
        total = sum(counts.values())
        top = ", ".join(f"{code} {n / total:.0%}" for code, n in counts.most_common(4))
        lines.append(f"{condition:<28} prompts {lang:<6} {total:>5} outputs, detected: {top}")
    return "\n".join(lines)
