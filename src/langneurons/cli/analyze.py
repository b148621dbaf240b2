"""``langneurons analyze layers|overlap|sweep|ses|dominance``: the LAPE paper's analyses (sections 3.2-3.3.3).

Each writes its CSV tables, PNG figures and a ``meta.json`` (kind, provenance, the files it holds) into
``--out`` atomically.
"""

from __future__ import annotations

import argparse

from langneurons.cli._common import (
    add_force_option,
    add_list_option,
    add_loading_options,
    add_placement_options,
    add_resume_options,
    command_run,
    prepare_outputs,
    start_checkpoints,
    with_checkpoints,
)


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="Hugging Face hub id or local directory of a causal LM")
    add_loading_options(parser)
    add_placement_options(parser)


def _add_parallel(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True,
                        help="parallel corpus: directory of line-aligned {lang}.txt files (line i = same sentence)")
    add_list_option(parser, "--langs", "languages, e.g. --langs en zh (default: every {lang}.txt)", metavar="LANG")
    parser.add_argument("--max-samples", type=int, default=None, help="use at most this many aligned sentences")
    parser.add_argument("--max-length", type=int, default=512, help="truncate each sentence to this many tokens")
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze", help="layer distribution, overlap, selection-ratio sweep, SES, language dominance",
        description="The LAPE paper's analyses of language-specific neurons; each writes CSV + PNG + meta.json "
                    "into --out.",
    )
    commands = parser.add_subparsers(dest="analysis", metavar="ANALYSIS")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    layers = commands.add_parser("layers", help="neurons per layer and language (Figure 5, Tables 3, 6, 8-10)",
                                 description="Writes layers.csv (rows languages + sum + distinct, columns layers "
                                             "+ total) and layers.png.")
    layers.add_argument("--neurons", required=True, help="neuron set written by `langneurons identify`")
    layers.add_argument("--out", required=True, help="output directory")
    add_force_option(layers)
    layers.set_defaults(func=run_layers)

    overlap = commands.add_parser("overlap", help="overlap between languages' neuron sets (section 3.2)",
                                  description="Writes intersection.csv, shared_share.csv (|Nx∩Ny|/|Nx∪Ny|, the "
                                              "LAPE reading), overlap_zhao.csv (|Nx∩Ny|/|Ny|, Zhao et al. eq. 11) "
                                              "and heatmaps.")
    overlap.add_argument("--neurons", required=True, help="neuron set written by `langneurons identify`")
    overlap.add_argument("--out", required=True, help="output directory")
    add_force_option(overlap)
    overlap.set_defaults(func=run_overlap)

    sweep = commands.add_parser("sweep", help="PPL change over the selection ratio (Figure 4)",
                                description="Re-selects neurons at each ratio (top_rate) from the same statistics, "
                                            "deactivates one language's neurons and measures every language's "
                                            "perplexity. Writes perplexity.csv, perplexity_change.csv, nll.csv and "
                                            "perplexity_change.png.")
    _add_model(sweep)
    sweep.add_argument("--stats", required=True, help="statistics directory written by `langneurons record`")
    sweep.add_argument("--language", required=True, help="the language whose neurons are deactivated (paper: fr)")
    add_list_option(sweep, "--ratios", "selection ratios, e.g. --ratios 0 0.01 0.05 (default: 0, 0.01, ..., 0.1, "
                    "the paper's 0 to 10%%)", item_type=float, metavar="R")
    sweep.add_argument("--method", default="lape", help="identification method")
    sweep.add_argument("--filter-rate", type=float, default=None, help="LAPE/LAVE filter percentile (paper: 0.95)")
    sweep.add_argument("--activation-bar-ratio", type=float, default=None,
                       help="LAPE/LAVE assignment percentile (paper: 0.95)")
    add_list_option(sweep, "--param", "any other method parameter (JSON value), e.g. --param seed=1",
                    default=[], metavar="NAME=VALUE", split_commas=False)
    sweep.add_argument("--corpus", required=True, help="validation directory of {lang}.txt or {lang}.jsonl files")
    add_list_option(sweep, "--langs", "evaluated languages, e.g. --langs en zh (default: every file)", metavar="LANG")
    sweep.add_argument("--seq-len", type=int, default=None, help="window length (default: model context, <= 4096)")
    sweep.add_argument("--max-tokens", type=int, default=None, help="cap on tokens per language")
    sweep.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    sweep.add_argument("--out", required=True, help="output directory")
    add_resume_options(sweep)
    sweep.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force_option(sweep)
    sweep.set_defaults(func=run_sweep)

    ses = commands.add_parser("ses", help="sentence-embedding similarity across layers (Figure 6)",
                              description="Mean-pooled hidden states of every layer on a parallel corpus; cosine "
                                          "between aligned sentences per language pair. Writes ses.csv, ses.png, "
                                          "ses_pairs.png.")
    _add_model(ses)
    _add_parallel(ses)
    ses.add_argument("--neurons", default=None, help="neuron set whose neurons per layer are plotted alongside")
    ses.add_argument("--out", required=True, help="output directory")
    add_force_option(ses)
    ses.set_defaults(func=run_ses)

    dominance = commands.add_parser("dominance", help="language dominance across layers (eq. 6, Figure 7)",
                                    description="Shifts each language's sentence embeddings to the target "
                                                "language (h - v_k + v_c) and averages SES with the target. Writes "
                                                "dominance.csv, dominance_pairs.csv, dominance.png.")
    _add_model(dominance)
    _add_parallel(dominance)
    dominance.add_argument("--out", required=True, help="output directory")
    add_force_option(dominance)
    dominance.set_defaults(func=run_dominance)


def parse_ratios(value: str | list[float] | None) -> list[float]:
    from langneurons.analysis.sweep import DEFAULT_RATIOS, check_ratios
    from langneurons.errors import LangNeuronsError

    if value is None:
        return list(DEFAULT_RATIOS)
    if not isinstance(value, str):
        return check_ratios([float(v) for v in value])
    try:
        ratios = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise LangNeuronsError(f"--ratios must be comma-separated numbers, got {value!r}") from None
    return check_ratios(ratios)


def parse_params(args: argparse.Namespace) -> dict:
    from langneurons.cli._common import parse_param_items

    params = {name: getattr(args, name) for name in ("filter_rate", "activation_bar_ratio")
              if getattr(args, name) is not None}
    params.update(parse_param_items(args.param))
    return params


def run_layers(args: argparse.Namespace) -> int:
    from langneurons.analysis.layers import layer_distribution
    from langneurons.cli._common import load_neuron_set

    prepare_outputs(args, {"--out": args.out}, {"--neurons": args.neurons})
    result = layer_distribution(load_neuron_set(args.neurons))
    result.save(args.out)
    totals = ", ".join(f"{lang} {n}" for lang, n in result.totals.items())
    print(f"neurons per language: {totals}; distinct {int(result.distinct.sum())}")
    print(f"wrote {args.out}/layers.csv, layers.png")
    return 0


def run_overlap(args: argparse.Namespace) -> int:
    from langneurons.analysis.overlap import neuron_overlap
    from langneurons.cli._common import load_neuron_set

    prepare_outputs(args, {"--out": args.out}, {"--neurons": args.neurons})
    result = neuron_overlap(load_neuron_set(args.neurons))
    result.save(args.out)
    langs = result.languages
    lines = ["shared share".ljust(12) + "".join(f"{lang:>8}" for lang in langs)]
    for lang, row in zip(langs, result.shared_share.tolist()):
        lines.append(lang.ljust(12) + "".join(f"{value:>8.3f}" for value in row))
    print("\n".join(lines))
    print(f"wrote {args.out}/intersection.csv, shared_share.csv, overlap_zhao.csv and heatmaps")
    return 0


def run_sweep(args: argparse.Namespace) -> int:
    from langneurons.analysis.sweep import selection_sweep
    from langneurons.cli._common import check_against_model, check_seq_len_early, load_model_from_args, parse_langs
    from langneurons.errors import LangNeuronsError
    from langneurons.methods import get_method, method_class
    from langneurons.sets.compatibility import stats_input
    from langneurons.stats import load_stats

    inputs = {"--model": args.model, "--stats": args.stats, "--corpus": args.corpus}
    prepare_outputs(args, with_checkpoints(args, {"--out": args.out}), inputs)
    ratios = parse_ratios(args.ratios)
    cls = method_class(args.method)
    if (cls.consumes, cls.returns) != ("activation_stats", "neuron_set"):
        raise LangNeuronsError(f"the sweep re-selects neurons from statistics; method {args.method!r} consumes "
                               f"{cls.consumes} and returns a {cls.returns}")
    params = parse_params(args)
    if "top_rate" in params:
        raise LangNeuronsError("top_rate is the swept ratio; use --ratios")
    get_method(args.method, top_rate=ratios[0], **params)  # fail fast before loading anything big
    stats = load_stats(args.stats)
    if args.language not in stats.languages:
        raise LangNeuronsError(f"--stats {args.stats!r} has no language {args.language!r} "
                               f"(it has {', '.join(stats.languages)})")
    check_seq_len_early(args)
    with command_run(args, inputs) as run:  # torchrun: every rank evaluates its batches, rank 0 writes
        loaded = load_model_from_args(args)
        check_against_model(loaded, [stats_input("--stats", args.stats, stats)], args)
        start_checkpoints(run, args, loaded, inputs)
        result = selection_sweep(loaded, args.corpus, stats, args.language, ratios, method=args.method,
                                 method_params=params, langs=parse_langs(args.langs), max_tokens=args.max_tokens,
                                 seq_len=args.seq_len, batch_size=args.batch_size, progress=not args.no_progress)
        if run.is_main:
            result.save(args.out)
        run.finish()
    if not run.is_main:
        return 0
    change = result.change()
    lines = ["ratio".ljust(8) + "neurons".rjust(9) + "".join(f"{lang:>10}" for lang in result.languages)]
    for ratio, size, row in zip(result.ratios, result.neurons, change.tolist()):
        lines.append(f"{ratio:<8g}{size:>9d}" + "".join(f"{value:>+10.3f}" for value in row))
    print("PPL change against normal when deactivating " + args.language)
    print("\n".join(lines))
    print(f"wrote {args.out}/perplexity.csv, perplexity_change.csv, nll.csv, perplexity_change.png")
    return 0


def _embeddings(args: argparse.Namespace, neurons=None):
    from langneurons.analysis.embeddings import (
        read_parallel_sentences,
        sentence_embeddings,
    )
    from langneurons.cli._common import load_model_from_args, parse_langs
    from langneurons.errors import LangNeuronsError
    from langneurons.model.sites import locate_site

    langs = parse_langs(args.langs)
    read_parallel_sentences(args.corpus, langs, args.max_samples)  # alignment errors before loading the model
    loaded = load_model_from_args(args)
    num_layers = locate_site(loaded.model, "layer.out").num_layers
    if neurons is not None and neurons.num_layers != num_layers:
        raise LangNeuronsError(f"--neurons {args.neurons!r} has {neurons.num_layers} layers but --model "
                               f"{args.model!r} has {num_layers}")
    if neurons is not None:
        from langneurons.cli._common import check_against_model
        from langneurons.sets.compatibility import neurons_input

        check_against_model(loaded, [neurons_input("--neurons", args.neurons, neurons)], args)
    return sentence_embeddings(loaded, args.corpus, langs=langs, max_samples=args.max_samples,
                               max_length=args.max_length, batch_size=args.batch_size, progress=not args.no_progress)


def run_ses(args: argparse.Namespace) -> int:
    from langneurons.analysis.embeddings import sentence_similarity
    from langneurons.cli._common import load_neuron_set

    prepare_outputs(args, {"--out": args.out}, {"--model": args.model, "--corpus": args.corpus,
                                                "--neurons": args.neurons})
    neurons = load_neuron_set(args.neurons) if args.neurons else None
    with command_run(args, cache=False) as run:  # torchrun: every rank pools its batches, rank 0 writes
        result = sentence_similarity(_embeddings(args, neurons), neurons=neurons)
        if run.is_main:
            result.save(args.out)
    if not run.is_main:
        return 0
    mean = result.mean
    print(f"mean SES per layer: {' '.join(f'{v:.3f}' for v in mean.tolist())}")
    print(f"wrote {args.out}/ses.csv, ses.png, ses_pairs.png")
    return 0


def run_dominance(args: argparse.Namespace) -> int:
    from langneurons.analysis.embeddings import language_dominance

    prepare_outputs(args, {"--out": args.out}, {"--model": args.model, "--corpus": args.corpus})
    with command_run(args, cache=False) as run:  # torchrun: every rank pools its batches, rank 0 writes
        result = language_dominance(_embeddings(args))
        if run.is_main:
            result.save(args.out)
    if not run.is_main:
        return 0
    means = ", ".join(f"{lang} {v:.3f}" for lang, v in zip(result.languages, result.scores.mean(1).tolist()))
    print(f"dominance score (mean over layers): {means}")
    print(f"wrote {args.out}/dominance.csv, dominance_pairs.csv, dominance.png")
    return 0
