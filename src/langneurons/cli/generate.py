"""``langneurons generate``: answers to prompts (or unconditional samples) under neuron interventions.

Writes ``OUT/generations.jsonl`` (prompt, input, output, prompt language, condition, detected language)
and ``OUT/meta.json`` (model, neurons, statistics, settings, language identifier and version).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """Decoding options; the defaults are the LAPE paper's (greedy, repetition penalty 1.1)."""
    group = parser.add_argument_group("generation (defaults: the LAPE paper's)")
    group.add_argument("--max-new-tokens", type=int, default=256, help="tokens generated at most (default 256)")
    group.add_argument("--batch-size", type=int, default=8, help="prompts generated together, left-padded")
    group.add_argument("--sample", action="store_true", help="sample instead of greedy search")
    group.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample)")
    group.add_argument("--seed", type=int, default=0, help="seed of the sampling (batch b uses seed + b)")
    group.add_argument("--repetition-penalty", type=float, default=1.1, help="default 1.1 as in the paper")
    group.add_argument("--template", default="Q: {question}\nA:", help="prompt template with {question}")
    group.add_argument("--no-stop", action="store_true", help="do not stop at \\nQ: / \\nA:")
    group.add_argument("--langid", default=None,
                       help="language identifier: langdetect (default, the paper's), py3langid or lingua")
    group.add_argument("--unconditional", type=int, default=None, metavar="N",
                       help="instead of prompts, sample N outputs from the BOS token alone per condition")
    group.add_argument("--limit", type=int, default=None, help="use only the first N questions of each language")
    group.add_argument("--prompt-chars", type=int, default=None, metavar="N",
                       help="cut every question to its first N characters (short prompts)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    judge = parser.add_argument_group("content quality judge (optional, MT-bench single-answer 1-10)")
    judge.add_argument("--judge-url", default=None,
                       help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (key: $LANGNEURONS_JUDGE_KEY)")
    judge.add_argument("--judge-model", default=None, help="model name sent to the judge endpoint")
    judge.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per request")
    judge.add_argument("--judge-retries", type=int, default=3, help="retries per item, exponential backoff")


def settings_from_args(args: argparse.Namespace):
    from langneurons.generation import STOP_STRINGS, GenerationSettings

    template = args.template.replace("\\n", "\n")
    sample = bool(args.sample or args.unconditional is not None)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, sample=sample, temperature=args.temperature, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, stop=() if args.no_stop else STOP_STRINGS,
        template=template, batch_size=args.batch_size, seed=args.seed,
    )
    return settings.validate()


def judge_from_args(args: argparse.Namespace):
    from langneurons.errors import LangNeuronsError

    if args.judge_url is None:
        if args.judge_model:
            raise LangNeuronsError("--judge-model needs --judge-url")
        return None
    from langneurons.judge import Judge

    return Judge(args.judge_url, args.judge_model, timeout=args.judge_timeout, retries=args.judge_retries)


def check_output_dir(path: str) -> None:
    """Fail before any work when ``--out`` could not be written (exists and is not a langneurons output)."""
    from langneurons.errors import LangNeuronsError

    target = Path(path)
    if target.exists() and (not target.is_dir() or (not (target / "meta.json").exists() and any(target.iterdir()))):
        raise LangNeuronsError(f"{str(target)!r} exists and is not a langneurons output; refusing to overwrite")


def check_site(args: argparse.Namespace, neurons) -> None:
    from langneurons.errors import LangNeuronsError

    if args.site != "ffn.act" and args.site != neurons.site:
        raise LangNeuronsError(f"--site {args.site} differs from the neuron set's site {neurons.site}")


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_model_options

    parser = subparsers.add_parser(
        "generate", help="generate answers with language neurons deactivated / activated",
        description="Answer every {lang}.txt question (one per line) with the prompt 'Q: {question}\\nA:', "
                    "greedy with repetition penalty 1.1 (LAPE paper), under the given interventions; "
                    "writes OUT/generations.jsonl and OUT/meta.json.",
    )
    add_model_options(parser)
    parser.add_argument("--prompts", default=None, help="directory of {lang}.txt prompt files, one question per line")
    parser.add_argument("--langs", default=None, help="comma-separated prompt languages (default: every file)")
    parser.add_argument("--neurons", default=None, help="neuron set written by `langneurons identify`")
    parser.add_argument("--stats", default=None, help="statistics written by `langneurons record` (for --activate)")
    parser.add_argument("--deactivate", nargs="+", action="extend", default=[], metavar="LANG",
                        help="set these languages' neurons to 0")
    parser.add_argument("--activate", nargs="+", action="extend", default=[], metavar="LANG",
                        help="set these languages' neurons to strength x their mean activation")
    parser.add_argument("--strength", type=float, default=1.0, help="factor on the mean activation (default 1)")
    parser.add_argument("--also-normal", action="store_true", help="also generate without intervention")
    parser.add_argument("--out", required=True, help="output directory")
    add_generation_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.cli._common import parse_langs
    from langneurons.errors import LangNeuronsError
    from langneurons.generation import Condition, read_prompts
    from langneurons.langid import get_identifier
    from langneurons.steering import (
        PromptGroup,
        generate_records,
        run_meta,
        save_generations,
    )

    settings = settings_from_args(args)
    if (args.prompts is None) == (args.unconditional is None):
        raise LangNeuronsError("give either --prompts DIR or --unconditional N")
    if args.unconditional is not None and args.unconditional < 1:
        raise LangNeuronsError(f"--unconditional must be at least 1, got {args.unconditional}")
    prompts = None
    if args.prompts is not None:
        prompts = read_prompts(args.prompts, parse_langs(args.langs), args.limit, args.prompt_chars)
    check_output_dir(args.out)
    condition = Condition(deactivate=list(dict.fromkeys(args.deactivate)), activate=list(dict.fromkeys(args.activate)),
                          strength=args.strength)
    neurons = stats = None
    if not condition.is_normal and args.neurons is None:
        raise LangNeuronsError("--deactivate / --activate need --neurons")
    if args.neurons is not None:
        from langneurons.neuronset import load_neurons

        neurons = load_neurons(args.neurons)
        check_site(args, neurons)
    if condition.activate and args.stats is None:
        raise LangNeuronsError("--activate needs --stats (the mean activations come from the recorded statistics)")
    if args.stats is not None:
        from langneurons.stats import load_stats

        stats = load_stats(args.stats)
    conditions = ([Condition()] if args.also_normal and not condition.is_normal else []) + [condition]
    for item in conditions:
        item.edits(neurons, stats)  # unknown languages fail here, before the model loads
    if condition.activate:
        from langneurons.interventions import plan_edits

        plan_edits(condition.edits(neurons, stats), neurons.num_layers)  # statistics match the neuron set
    identifier = get_identifier(args.langid)
    judge = judge_from_args(args)

    from langneurons.loading import load_model

    loaded = load_model(args.model, device=args.device, dtype=args.dtype, revision=args.revision)
    if prompts is not None:
        groups = [PromptGroup(lang, lang, questions=questions) for lang, questions in prompts.items()]
        prompt_meta = {"path": str(args.prompts), "questions": {lang: len(q) for lang, q in prompts.items()}}
    else:
        groups = [PromptGroup("unconditional", None, unconditional=args.unconditional)]
        prompt_meta = {"unconditional": args.unconditional}
    records = generate_records(loaded, groups, conditions, settings, neurons, stats, identifier, judge,
                               progress=not args.no_progress)
    meta = run_meta(loaded, settings, identifier, conditions, neurons, stats, judge, prompt_meta)
    save_generations(args.out, records, meta)
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
