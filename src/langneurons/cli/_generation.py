"""Options and checks shared by ``langneurons generate`` and ``langneurons steer``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from langneurons.cli._common import add_placement_options


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """Decoding options; the defaults are the LAPE paper's (greedy, repetition penalty 1.1)."""
    group = parser.add_argument_group("generation (defaults: the LAPE paper's)")
    group.add_argument("--max-new-tokens", type=int, default=256, help="tokens generated at most")
    group.add_argument("--batch-size", type=int, default=8, help="prompts generated together, left-padded")
    group.add_argument("--sample", action="store_true", help="sample instead of greedy search")
    group.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample)")
    group.add_argument("--seed", type=int, default=0, help="seed of the sampling (batch b uses seed + b)")
    group.add_argument("--repetition-penalty", type=float, default=1.1, help="repetition penalty (the paper's)")
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
    add_placement_options(parser)
    judge = parser.add_argument_group("content quality judge (optional, MT-bench single-answer 1-10)")
    judge.add_argument("--judge-url", default=None,
                       help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (key: $LANGNEURONS_JUDGE_KEY)")
    judge.add_argument("--judge-model", default=None, help="model name sent to the judge endpoint")
    judge.add_argument("--judge-timeout", type=float, default=60.0, help="seconds per request")
    judge.add_argument("--judge-retries", type=int, default=3, help="retries per item, exponential backoff")


def settings_from_args(args: argparse.Namespace):
    from langneurons.evaluation.generation import STOP_STRINGS, GenerationSettings

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
    from langneurons.evaluation.judge import Judge

    return Judge(args.judge_url, args.judge_model, timeout=args.judge_timeout, retries=args.judge_retries)


def check_site(args: argparse.Namespace, neurons) -> None:
    from langneurons.errors import LangNeuronsError

    if args.site != "ffn.act" and args.site not in neurons.sites:
        raise LangNeuronsError(f"--site {args.site} differs from the site of --neurons {args.neurons!r} "
                               f"({', '.join(neurons.sites)})")


def check_prompt_source(args: argparse.Namespace) -> None:
    """Exactly one of ``--prompts DIR`` and ``--unconditional N``."""
    from langneurons.errors import LangNeuronsError

    if (args.prompts is None) == (args.unconditional is None):
        raise LangNeuronsError("give either --prompts DIR or --unconditional N")
    if args.unconditional is not None and args.unconditional < 1:
        raise LangNeuronsError(f"--unconditional must be at least 1, got {args.unconditional}")


def load_inputs(args: argparse.Namespace) -> tuple[Any, Any]:
    """``--neurons`` and ``--stats`` (either may be absent), checked against each other before the model loads:
    the same site, made on models of the same shape (a warning for other weights); empty languages named."""
    from langneurons.cli._common import load_neuron_set
    from langneurons.sets.compatibility import check_inputs

    neurons = load_neuron_set(args.neurons)
    if neurons is not None:
        check_site(args, neurons)
    stats = None
    if args.stats is not None:
        from langneurons.stats import load_stats

        stats = load_stats(args.stats)
    check_inputs(artefact_inputs(args, neurons, stats), same_site=[("--neurons", "--stats")])
    return neurons, stats


def artefact_inputs(args: argparse.Namespace, neurons: Any, stats: Any) -> list:
    from langneurons.sets.compatibility import neurons_input, stats_input

    found = []
    if neurons is not None:
        found.append(neurons_input("--neurons", args.neurons, neurons))
    if stats is not None:
        found.append(stats_input("--stats", args.stats, stats))
    return found


def check_loaded(args: argparse.Namespace, loaded: Any, neurons: Any, stats: Any) -> None:
    """Right after the model loads, before anything is generated: the inputs' fingerprints against the model and
    the neuron set's grid against the model's sites (another shape is an error here, not after a condition)."""
    from langneurons.cli._common import check_against_model
    from langneurons.model.sites import locate_site

    check_against_model(loaded, artefact_inputs(args, neurons, stats), args)
    if neurons is not None:
        for site in neurons.sites:
            located = locate_site(loaded.model, site)
            neurons.check_shape(located.num_layers, located.width, what=f"--model {args.model!r}", site=site)


@contextmanager
def naming_inputs(args: argparse.Namespace) -> Iterator[None]:
    """Errors raised inside (a language missing from the neuron set or the statistics) name the files involved."""
    from langneurons.errors import LangNeuronsError

    try:
        yield
    except LangNeuronsError as exc:
        given = [f"{flag} {path!r}" for flag, path in (("--neurons", args.neurons), ("--stats", args.stats),
                                                       ("--prompts", getattr(args, "prompts", None))) if path]
        if given and not any(str(path) in str(exc) for path in (args.neurons, args.stats) if path):
            raise LangNeuronsError(f"{exc} ({', '.join(given)})") from None
        raise
