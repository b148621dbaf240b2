"""``langneurons steer``: language accuracy, normal vs steered (LAPE paper, Table 4 first block).

For every language X with prompts, neurons and statistics: the share of outputs detected as X without
intervention and with X's neurons set to strength x X's mean activation. Writes
``language_accuracy.csv`` (rows languages, columns normal, steered), ``language_accuracy.png``,
``generations.jsonl`` and ``meta.json`` (``content_quality.csv`` too with a judge).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option, add_list_option, add_model_options
    from langneurons.cli._generation import add_generation_options

    parser = subparsers.add_parser(
        "steer", help="share of outputs in each language, normal vs its neurons activated",
        description="Per language X: generate normally and with X's neurons activated to strength x X's mean "
                    "activation; report the share of outputs whose detected language is X.",
    )
    add_model_options(parser)
    parser.add_argument("--prompts", default=None, help="directory of {lang}.txt prompt files, one question per line")
    parser.add_argument("--neurons", required=True, help="neuron set written by `langneurons identify`")
    parser.add_argument("--stats", required=True, help="statistics written by `langneurons record`")
    parser.add_argument("--out", required=True, help="output directory")
    add_list_option(parser, "--strength", "factor on the mean activation (the paper's: 1); several values give one "
                    "steered column each, e.g. --strength 1 5 10", item_type=float, default=[1.0], metavar="S")
    add_list_option(parser, "--langs", "languages to steer, e.g. --langs en zh (default: every one)", metavar="LANG")
    parser.add_argument("--prompt-language", default=None, metavar="LANG",
                        help="steer every language on this language's prompts (cross-lingual, Table 5)")
    parser.add_argument("--deactivate-prompt-language", action="store_true",
                        help="with --prompt-language: also deactivate the prompt language's neurons")
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
    from langneurons.evaluation.generation import read_prompts
    from langneurons.evaluation.langid import get_identifier
    from langneurons.evaluation.language_accuracy import language_accuracy, steering_languages

    settings = settings_from_args(args)
    check_prompt_source(args)
    check_placement(args)
    inputs = {"--model": args.model, "--prompts": args.prompts, "--neurons": args.neurons, "--stats": args.stats}
    prepare_outputs(args, with_checkpoints(args, {"--out": args.out}), inputs)
    if args.unconditional is not None and args.prompt_language:
        raise LangNeuronsError("--prompt-language needs --prompts, not --unconditional")
    langs = parse_langs(args.langs)
    prompts = None
    if args.prompts is not None:
        wanted = None
        if args.prompt_language:
            wanted = [args.prompt_language]
        elif langs:
            wanted = langs
        prompts = read_prompts(args.prompts, wanted, args.limit, args.prompt_chars)
    neurons, stats = load_inputs(args)
    own = prompts is not None and not args.prompt_language
    if args.deactivate_prompt_language and not args.prompt_language:
        raise LangNeuronsError("--deactivate-prompt-language needs --prompt-language")
    from langneurons.interventions.neurons import Activate, plan_edits

    with naming_inputs(args):
        languages = steering_languages(neurons, stats, list(prompts) if own else None, langs)
        if args.deactivate_prompt_language:
            neurons.layers(args.prompt_language)
        plan_edits([Activate(neurons, languages, stats, args.strength[0])], neurons.num_layers)  # stats match the set
    identifier = get_identifier(args.langid)
    judge = judge_from_args(args)

    with command_run(args, inputs) as run:  # torchrun: every rank generates its batches, rank 0 writes
        loaded = load_model_from_args(args)
        check_loaded(args, loaded, neurons, stats)
        start_checkpoints(run, args, loaded, inputs)
        result = language_accuracy(
            loaded, neurons, stats, prompts=prompts, unconditional=args.unconditional,
            prompt_language=args.prompt_language, deactivate_prompt_language=args.deactivate_prompt_language,
            strength=args.strength[0] if len(args.strength) == 1 else list(dict.fromkeys(args.strength)),
            langs=languages,
            settings=settings, identifier=identifier, judge=judge,
            progress=not args.no_progress,
        )
        if prompts is not None:
            result.meta["prompts"] = {"path": str(args.prompts), "questions": {k: len(v) for k, v in prompts.items()}}
        if run.is_main:
            result.save(args.out)
        run.finish()
    if not run.is_main:
        return 0
    print(result.format())
    print(f"wrote {args.out}/language_accuracy.csv, language_accuracy.png, generations.jsonl, meta.json")
    return 0
