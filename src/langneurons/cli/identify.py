"""``langneurons identify``: select language-specific neurons from recorded statistics."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "identify", help="select language-specific neurons (lape, lave, lap, random) or parameters (pv)",
        description="Fit an identification method on recorded statistics and write the neuron set.",
    )
    parser.add_argument("--stats", default=None, help="statistics directory written by `langneurons record`")
    parser.add_argument("--method", default="lape", help="lape (default), lave, lap, random, or pv (parameter variation)")
    parser.add_argument("--base", default=None, help="pv: the base model (path or hub id)")
    parser.add_argument("--finetuned", action="append", default=[], metavar="LANG=PATH",
                        help="pv: one model fine-tuned on each language, repeatable")
    parser.add_argument("--out", required=True, help="output neuron-set directory (e.g. runs/x/lape.neurons)")
    parser.add_argument("--top-rate", type=float, default=None, help="share of all neurons selected (paper: 0.01)")
    parser.add_argument("--filter-rate", type=float, default=None, help="LAPE/LAVE filter percentile (paper: 0.95)")
    parser.add_argument("--activation-bar-ratio", type=float, default=None,
                        help="LAPE/LAVE assignment percentile (paper: 0.95)")
    parser.add_argument("--activation-threshold", type=float, default=None, help="LAP probability threshold (0.95)")
    parser.add_argument("--seed", type=int, default=None, help="random: seed")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="any other method parameter (JSON value), repeatable")
    parser.add_argument("--langs", default=None, help="restrict to these languages (comma-separated)")
    parser.set_defaults(func=run)


def method_params(args: argparse.Namespace) -> dict:
    from langneurons.cli._common import parse_param_items

    params = {}
    for name in ("top_rate", "filter_rate", "activation_bar_ratio", "activation_threshold", "seed"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    params.update(parse_param_items(args.param))
    return params


def run(args: argparse.Namespace) -> int:
    from langneurons.cli._common import parse_langs
    from langneurons.methods import get_method
    from langneurons.stats import load_stats

    from langneurons.errors import LangNeuronsError

    if args.method == "pv":
        return run_parameter_variation(args)
    if args.base or args.finetuned:
        raise LangNeuronsError("--base / --finetuned are only for --method pv")
    if not args.stats:
        raise LangNeuronsError(f"--method {args.method} needs --stats (a directory written by `langneurons record`)")
    method = get_method(args.method, **method_params(args))  # validates before any loading
    stats = load_stats(args.stats)
    langs = parse_langs(args.langs)
    if langs:
        stats = stats.select_languages(langs)
    neurons = method.fit(stats).select()
    neurons.save(args.out)
    sizes = ", ".join(f"{lang} {n}" for lang, n in neurons.sizes().items())
    print(f"wrote {args.out}: {args.method} neurons per language: {sizes}")
    return 0


def run_parameter_variation(args: argparse.Namespace) -> int:
    """``identify --method pv``: language-specific parameters from a base and per-language fine-tuned models."""
    from langneurons.sets.artefacts import check_writable
    from langneurons.cli.pv import parse_finetuned
    from langneurons.errors import LangNeuronsError
    from langneurons.methods.parameter_variation import identify_parameters

    if not args.base or not args.finetuned:
        raise LangNeuronsError("--method pv needs --base and one --finetuned LANG=PATH per language")
    if args.stats:
        raise LangNeuronsError("--method pv works on models, not on --stats")
    finetuned = parse_finetuned(args.finetuned)
    check_writable(args.out)
    parameters = identify_parameters(args.base, finetuned, **method_params(args))
    parameters.save(args.out)
    print(f"wrote {args.out}: pv parameters per language: {parameters.sizes()}")
    return 0
