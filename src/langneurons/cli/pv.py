"""``langneurons pv``: the parameter-variation baseline of the LAPE paper (section 3.1 d).

    langneurons pv identify   --base BASE --finetuned en=PATH --finetuned zh=PATH ... --out DIR
    langneurons pv perplexity --model BASE --corpus valid/ --parameters DIR --out DIR
"""

from __future__ import annotations

import argparse

from langneurons.cli._common import (
    add_corpus_options,
    add_force_option,
    add_list_option,
    add_loading_options,
    add_resume_options,
    command_run,
    load_model_from_args,
    parse_langs,
    prepare_outputs,
    start_checkpoints,
    with_checkpoints,
)
from langneurons.errors import LangNeuronsError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pv", help="parameter variation: language-specific weights from per-language fine-tuned models",
        description="The LAPE paper's parameter-variation baseline: compare a base model with one fine-tuned "
                    "model per language, select the lowest-entropy 1%% of MHA/FFN weight entries, and measure "
                    "perplexity with them zeroed.",
    )
    actions = parser.add_subparsers(dest="pv_command", metavar="ACTION")

    ident = actions.add_parser("identify", help="select language-specific parameters",
                               description="Writes a parameter set (tensors.safetensors + meta.json).")
    ident.add_argument("--base", required=True, help="base model (directory or hub id)")
    add_list_option(ident, "--finetuned", "models fine-tuned on one language each, at least 2: --finetuned en=A "
                    "zh=B (or the flag repeated)", default=[], metavar="LANG=PATH", required=True, split_commas=False)
    ident.add_argument("--out", required=True, help="output directory of the parameter set")
    ident.add_argument("--top-rate", type=float, default=0.01, help="share of all considered entries selected")
    ident.add_argument("--filter-rate", type=float, default=0.95,
                       help="percentile an entry's normalised value must exceed in some language")
    ident.add_argument("--activation-bar-ratio", type=float, default=0.95,
                       help="percentile a language's normalised value must exceed to be assigned the entry")
    ident.add_argument("--eps", type=float, default=1e-8, help="added to |base weight| in the rate of change")
    ident.add_argument("--max-values-in-memory", type=int, default=1 << 27,
                       help="above languages x entries, the selection is streamed matrix by matrix")
    add_force_option(ident)
    ident.set_defaults(func=run_identify)

    ppl = actions.add_parser("perplexity", help="perplexity per language with each language's parameters zeroed",
                             description="Rows: normal, random, one per zeroed language; columns: evaluated "
                                         "language. Writes perplexity.csv, nll.csv, meta.json, perplexity_change.png.")
    ppl.add_argument("--model", required=True, help="the base model the parameter set was found on")
    add_loading_options(ppl)
    add_corpus_options(ppl, "validation directory of {lang}.txt or {lang}.jsonl files")
    ppl.add_argument("--parameters", required=True, help="parameter set written by `langneurons pv identify`")
    ppl.add_argument("--out", required=True, help="output directory")
    ppl.add_argument("--seed", type=int, default=0, help="seed of the random row")
    ppl.add_argument("--no-random", action="store_true", help="skip the random row")
    add_resume_options(ppl)
    ppl.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force_option(ppl)
    ppl.set_defaults(func=run_perplexity)

    parser.set_defaults(func=lambda args: parser.print_help() or 2)


def parse_finetuned(items: list[str]) -> dict[str, str]:
    """``["en=PATH", "zh=PATH"]`` -> ``{"en": "PATH", "zh": "PATH"}`` with one-line errors."""
    result: dict[str, str] = {}
    for item in items:
        lang, sep, path = item.partition("=")
        lang, path = lang.strip(), path.strip()
        if not sep or not lang or not path:
            raise LangNeuronsError(f"--finetuned {item!r}: expected LANG=PATH")
        if lang in result:
            raise LangNeuronsError(f"--finetuned: language {lang!r} given twice")
        result[lang] = path
    if len(result) < 2:
        raise LangNeuronsError(f"--finetuned: need models of at least 2 languages, got {len(result)}")
    return result


def run_identify(args: argparse.Namespace) -> int:
    from langneurons.methods.parameter_variation import identify_parameters

    finetuned = parse_finetuned(args.finetuned)  # fail fast, before reading any weights
    prepare_outputs(args, {"--out": args.out}, {"--base": args.base, "--finetuned": list(finetuned.values())})
    parameters = identify_parameters(args.base, finetuned, top_rate=args.top_rate, filter_rate=args.filter_rate,
                                     activation_bar_ratio=args.activation_bar_ratio, eps=args.eps,
                                     max_values_in_memory=args.max_values_in_memory)
    parameters.save(args.out)
    sizes = ", ".join(f"{lang} {size}" for lang, size in parameters.sizes().items())
    print(f"{parameters.parameters['selected_before_assignment']} of {parameters.total} entries selected "
          f"({len(parameters.shapes)} matrices); per language: {sizes}")
    print(f"wrote {args.out}")
    return 0


def run_perplexity(args: argparse.Namespace) -> int:
    from langneurons.cli.perplexity import format_matrix
    from langneurons.methods.parameter_variation import parameter_perplexity_matrix
    from langneurons.sets.parameterset import load_parameters

    from langneurons.cli._common import check_seq_len_early, warn_empty_languages
    from langneurons.data.corpus import default_seq_len
    from langneurons.evaluation.perplexity import corpus_windows
    from langneurons.sets.compatibility import Input, check_model

    inputs = {"--model": args.model, "--corpus": args.corpus, "--parameters": args.parameters}
    prepare_outputs(args, with_checkpoints(args, {"--out": args.out}), inputs)
    parameters = load_parameters(args.parameters)  # fail fast before loading the model
    warn_empty_languages(parameters, f"--parameters {args.parameters!r}", "parameters")
    check_seq_len_early(args)
    with command_run(args, inputs) as run:  # torchrun: every rank evaluates its batches, rank 0 writes
        loaded = load_model_from_args(args)
        check_model([Input("--parameters", args.parameters, {"source": parameters.source})], loaded.model,
                    f"--model {args.model!r}")
        start_checkpoints(run, args, loaded, inputs)
        windows = corpus_windows(args.corpus, loaded.tokenizer, args.seq_len or default_seq_len(loaded.model),
                                 args.batch_size, parse_langs(args.langs), args.max_tokens)
        matrix = parameter_perplexity_matrix(
            loaded, windows, parameters, batch_size=args.batch_size, random_seed=args.seed,
            include_random=not args.no_random, progress=not args.no_progress,
        )
        matrix.meta["corpus"]["path"] = str(args.corpus)
        matrix.meta.update(run.report())
        if run.is_main:
            matrix.save(args.out)
        run.finish()
    if not run.is_main:
        return 0
    print(format_matrix(matrix))
    print(f"wrote {args.out}/perplexity.csv, nll.csv, perplexity_change.png")
    return 0
