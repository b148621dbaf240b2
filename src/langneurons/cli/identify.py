"""``langneurons identify``: select language-specific neurons (or parameters) with a registered method.

The method's declared ``consumes`` says which inputs it needs: ``activation_stats`` reads ``--stats``,
``importance`` reads ``--stats`` written by ``langneurons plnd identify --save-importance`` (PLND),
``models`` reads ``--base`` and ``--finetuned`` (parameter variation), ``pooled_vectors`` reads ``--vectors``
(key regions); :data:`DATA_LOADERS` maps each to the
function that builds the method's input from the arguments (a method consuming something new adds one).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option, add_list_option

    parser = subparsers.add_parser(
        "identify", help="select language-specific neurons (lape, lave, lap, random, key_regions) or parameters (pv)",
        description="Fit an identification method on recorded statistics (or, for pv, on a base and "
                    "fine-tuned models) and write the neuron set (or parameter set).",
    )
    parser.add_argument("--stats", default=None, help="statistics directory written by `langneurons record` "
                        "(plnd: by `plnd identify --save-importance`)")
    parser.add_argument("--vectors", default=None,
                        help="key_regions: pooled vectors written by `langneurons lingua-franca --save-vectors`")
    parser.add_argument("--method", default="lape",
                        help="lape, lave, lap, random, plnd (on --stats), key_regions (on --vectors), or pv "
                             "(parameter variation)")
    parser.add_argument("--base", default=None, help="pv: the base model (path or hub id)")
    add_list_option(parser, "--finetuned", "pv: one model fine-tuned on each language, e.g. --finetuned en=A zh=B",
                    default=[], metavar="LANG=PATH", split_commas=False)
    parser.add_argument("--out", required=True, help="output neuron-set directory (e.g. runs/x/lape.neurons)")
    parser.add_argument("--top-rate", type=float, default=None, help="share of all neurons selected (paper: 0.01)")
    parser.add_argument("--filter-rate", type=float, default=None, help="LAPE/LAVE filter percentile (paper: 0.95)")
    parser.add_argument("--activation-bar-ratio", type=float, default=None,
                        help="LAPE/LAVE assignment percentile (paper: 0.95)")
    parser.add_argument("--activation-threshold", type=float, default=None, help="LAP probability threshold (0.95)")
    parser.add_argument("--seed", type=int, default=None, help="random: seed")
    add_list_option(parser, "--param", "any other method parameter (JSON value), e.g. --param seed=1 top_rate=0.02",
                    default=[], metavar="NAME=VALUE", split_commas=False)
    add_list_option(parser, "--langs", "restrict to these languages, e.g. --langs en zh (default: every one)",
                    metavar="LANG")
    add_force_option(parser)
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


def _check_stats_args(args: argparse.Namespace) -> None:
    from langneurons.errors import LangNeuronsError

    if args.base or args.finetuned:
        raise LangNeuronsError(f"--base / --finetuned are only for methods that consume models (pv), not "
                               f"{args.method}")
    if not args.stats:
        raise LangNeuronsError(f"--method {args.method} needs --stats (a directory written by `langneurons record`)")
    if args.vectors:
        raise LangNeuronsError(f"--vectors is for methods that consume pooled vectors (key_regions), not {args.method}")


def _check_vectors_args(args: argparse.Namespace) -> None:
    from langneurons.errors import LangNeuronsError

    if not args.vectors:
        raise LangNeuronsError(f"--method {args.method} needs --vectors (pooled vectors written by "
                               "`langneurons lingua-franca --save-vectors`)")
    if args.stats or args.base or args.finetuned:
        raise LangNeuronsError(f"--method {args.method} works on --vectors, not on --stats / --base / --finetuned")


def _load_vectors(args: argparse.Namespace):
    from langneurons.cli._common import parse_langs
    from langneurons.stats.pooled import PooledVectors, load_pooled

    vectors = load_pooled(args.vectors)
    langs = parse_langs(args.langs)
    if not langs:
        return vectors
    missing = [lang for lang in langs if lang not in vectors.languages]
    if missing:
        from langneurons.errors import LangNeuronsError

        raise LangNeuronsError(f"pooled vectors have no language(s) {', '.join(missing)} "
                               f"(have {', '.join(vectors.languages)})")
    index = [vectors.languages.index(lang) for lang in langs]
    return PooledVectors(langs, vectors.vectors[index], vectors.mode, vectors.meta)


def _load_stats(args: argparse.Namespace):
    from langneurons.cli._common import parse_langs
    from langneurons.stats import load_stats

    from langneurons.errors import LangNeuronsError

    stats = load_stats(args.stats)
    langs = parse_langs(args.langs)
    missing = [lang for lang in langs or [] if lang not in stats.languages]
    if missing:
        raise LangNeuronsError(f"--stats {args.stats!r} has no language(s) {', '.join(missing)} "
                               f"(it has {', '.join(stats.languages)})")
    return stats.select_languages(langs) if langs else stats


def _load_importance(args: argparse.Namespace):
    from langneurons.cli._common import parse_langs
    from langneurons.stats.importance import load_importance

    stats = load_importance(args.stats)
    langs = parse_langs(args.langs)
    return stats.select_languages(langs) if langs else stats


def _check_model_args(args: argparse.Namespace) -> None:
    from langneurons.cli.pv import parse_finetuned
    from langneurons.errors import LangNeuronsError

    if not args.base or not args.finetuned:
        raise LangNeuronsError(f"--method {args.method} needs --base and one --finetuned LANG=PATH per language")
    if args.stats:
        raise LangNeuronsError(f"--method {args.method} works on models, not on --stats")
    parse_finetuned(args.finetuned)


def _load_models(args: argparse.Namespace):
    from langneurons.cli.pv import parse_finetuned
    from langneurons.methods.parameter_variation import ParameterChanges

    return ParameterChanges(args.base, parse_finetuned(args.finetuned))


#: what a method consumes -> (check the arguments, inputs {flag: path} for the output checks, build the data)
DATA_LOADERS = {
    "activation_stats": (_check_stats_args, lambda args: {"--stats": args.stats}, _load_stats),
    "pooled_vectors": (_check_vectors_args, lambda args: {"--vectors": args.vectors}, _load_vectors),
    "importance": (_check_stats_args, lambda args: {"--stats": args.stats}, _load_importance),
    "models": (_check_model_args,
               lambda args: {"--base": args.base, "--finetuned": [item.partition("=")[2] for item in args.finetuned]},
               _load_models),
}


def run(args: argparse.Namespace) -> int:
    from langneurons.cli._common import prepare_outputs
    from langneurons.errors import LangNeuronsError
    import warnings

    from langneurons.errors import LangNeuronsWarning
    from langneurons.methods import get_method, method_class
    from langneurons.methods.base import degenerate_message

    cls = method_class(args.method)
    if cls.consumes not in DATA_LOADERS:
        raise LangNeuronsError(f"method {args.method!r} consumes {cls.consumes}, which `langneurons identify` "
                               f"cannot read yet (it reads {', '.join(DATA_LOADERS)})")
    check, inputs, load = DATA_LOADERS[cls.consumes]
    check(args)
    method = get_method(args.method, **method_params(args))  # validates before any loading
    prepare_outputs(args, {"--out": args.out}, inputs(args))
    data = load(args)
    result = method.fit(data).select()
    unit = "neurons" if cls.returns == "neuron_set" else "parameters"
    message = degenerate_message(result, method, data, unit)
    if message:
        warnings.warn(message, LangNeuronsWarning, stacklevel=1)
    result.save(args.out)
    sizes = ", ".join(f"{lang} {n}" for lang, n in result.sizes().items())
    print(f"wrote {args.out}: {args.method} {unit} per language: {sizes}")
    return 0
