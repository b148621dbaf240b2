"""``langneurons lingua-franca``: similarity maps, LRDS / SADS, key linguistic regions, their deactivation and
their evolution over checkpoints and model sizes (Zeng et al. 2024, "Converging to a Lingua Franca")."""

from __future__ import annotations

import argparse

from langneurons.cli._common import (add_force_option, add_list_option, add_model_options, add_placement_options,
                                     prepare_outputs)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "lingua-franca", help="similarity map, LRDS / SADS, key linguistic regions, deactivation, evolution",
        description="Per-sample activation vectors on a parallel corpus (mean over each line's tokens at --site, "
                    "all layers concatenated and normalised), their similarity map, LRDS and SADS (whole model and "
                    "per layer) and the key linguistic regions (z-score of each neuron's contribution above "
                    "--threshold). With --ppl-corpus: Table 1 (perplexity increase when each region, or a random "
                    "set, is deactivated). With --checkpoints / --models: the same metrics over training and size. "
                    "Writes lrds_sads.csv, key_neurons.csv, key_region_sizes.csv, similarity.npy, key_regions.neurons, "
                    "figures and meta.json into --out.",
    )
    add_model_options(parser)
    add_placement_options(parser)
    parser.add_argument("--parallel", required=True,
                        help="parallel corpus: a folder of line-aligned {lang}.txt files, or one .jsonl with a field "
                             "per language")
    add_list_option(parser, "--langs", "languages (default: every language)")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="items per language (default: all items non-blank in every language; paper: 100)")
    parser.add_argument("--sample-seed", type=int, default=None,
                        help="draw --max-samples items at random with this seed (default: the first ones)")
    parser.add_argument("--pooling", default="mean", choices=["mean", "sum"],
                        help="mean (the paper) or sum (their LLaMA code) over each line's tokens")
    parser.add_argument("--bos", action="store_true",
                        help="prepend the BOS token (run, but left out of the mean; default: the line as written)")
    parser.add_argument("--max-length", type=int, default=512, help="cut longer lines to this many tokens (counted)")
    parser.add_argument("--batch-size", type=int, default=16, help="lines per forward pass (whole items)")
    parser.add_argument("--padding-side", default="right", choices=["right", "left"], help="padding side (masked)")
    parser.add_argument("--storage", default="auto", choices=["auto", "memory", "memmap"],
                        help="vector storage (auto: float32, float16 above 2^28 values, memory-mapped with "
                             "--storage-dir)")
    parser.add_argument("--storage-dir", default=None, help="scratch folder for memory-mapped vectors")
    parser.add_argument("--threshold", type=float, default=2.0, help="z-score threshold of the key regions (paper: 2)")
    parser.add_argument("--ppl-corpus", default=None,
                        help="folder of {lang}.txt files for the deactivation table (held-out text; none: no table)")
    parser.add_argument("--seq-len", type=int, default=None, help="perplexity window length (default: model context)")
    parser.add_argument("--max-tokens", type=int, default=None, help="perplexity tokens per language")
    parser.add_argument("--ppl-batch-size", type=int, default=8, help="perplexity windows per forward pass")
    parser.add_argument("--random-percent", type=float, default=10.0,
                        help="share (%%) of all neurons in the random deactivation column (paper: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random set")
    parser.add_argument("--task", default=None,
                        help="task scored under the same conditions and at every checkpoint: a name (cloze, mgsm, "
                             "xquad, mpararel; read from --task-data) or a .jsonl / .tsv task file")
    parser.add_argument("--task-data", default=None, help="data folder of the named tasks (default: $LANGNEURONS_DATA "
                                                         "or ../shared/data)")
    parser.add_argument("--task-limit", type=int, default=None, help="task items per language")
    parser.add_argument("--task-batch-size", type=int, default=8, help="task rows per forward pass")
    parser.add_argument("--checkpoints", nargs="+", default=[], metavar="CKPT",
                        help="training checkpoints in order: model folders or hub revisions of --model")
    parser.add_argument("--models", nargs="+", default=[], metavar="MODEL",
                        help="models of several sizes (hub ids or folders), plotted against their parameters")
    parser.add_argument("--save-vectors", default=None, metavar="DIR",
                        help="also save the main model's pooled vectors (for `identify --method key_regions`)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--no-plots", action="store_true", help="no figures")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_force_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.analysis.evolution import check_points, model_points
    from langneurons.analysis.lingua_franca import lingua_franca, prepare_parallel
    from langneurons.cli._common import check_placement, load_model_from_args, parse_langs
    from langneurons.data.files import find_corpus_files
    from langneurons.errors import LangNeuronsError
    from langneurons.methods.key_regions import KeyRegions
    from langneurons.sets.artefacts import Target

    check_placement(args)
    outputs = [Target("--out", args.out)]
    if args.save_vectors:
        outputs.append(Target("--save-vectors", args.save_vectors))
    if args.storage_dir:
        outputs.append(Target("--storage-dir", args.storage_dir, role="workdir"))
    prepare_outputs(args, outputs, {"--model": args.model, "--parallel": args.parallel, "--ppl-corpus": args.ppl_corpus,
                                    "--checkpoints": args.checkpoints, "--models": args.models,
                                    "--task-data": args.task_data})
    # everything a user can get wrong, before any model is loaded
    KeyRegions(threshold=args.threshold)
    if not 0 < args.random_percent <= 100:
        raise LangNeuronsError(f"--random-percent must be in (0, 100], got {args.random_percent:g}")
    parallel = prepare_parallel(args.parallel, parse_langs(args.langs), args.max_samples, args.sample_seed)
    if args.ppl_corpus is not None:
        find_corpus_files(args.ppl_corpus, parallel.languages)
    check_points(model_points(args.model, args.checkpoints, args.models, args.revision))
    task = None
    if args.task is not None:
        from langneurons.evaluation.tasks import load_task

        task = load_task(args.task, args.task_data, langs=parallel.languages, limit=args.task_limit)
    loaded = load_model_from_args(args)
    result = lingua_franca(
        loaded, parallel, site=args.site, pooling=args.pooling, threshold=args.threshold, add_bos=args.bos,
        max_length=args.max_length, batch_size=args.batch_size, padding_side=args.padding_side, storage=args.storage,
        storage_dir=args.storage_dir, ppl_corpus=args.ppl_corpus, random_percent=args.random_percent, seed=args.seed,
        seq_len=args.seq_len, max_tokens=args.max_tokens, ppl_batch_size=args.ppl_batch_size,
        checkpoints=args.checkpoints, models=args.models, task=task, task_batch_size=args.task_batch_size,
        device=args.device, dtype=args.dtype,
        device_map=args.device_map, offload_folder=args.offload_folder, progress=not args.no_progress)
    result.save(args.out, plot=not args.no_plots)
    if args.save_vectors:
        result.vectors.save(args.save_vectors)
    print(format_result(result))
    print(f"wrote {args.out}: lrds_sads.csv, key_neurons.csv, key_region_sizes.csv, similarity.npy, "
          f"key_regions.neurons" + (", deactivation.csv" if result.deactivation is not None else "")
          + (", task_accuracy.csv" if result.tasks is not None else "")
          + "".join(f", {e.name}.csv" for e in result.evolutions))
    return 0


def format_result(result) -> str:
    """The headline numbers as text lines."""
    a = result.alignment
    lines = [f"LRDS {a.lrds:.4f}  SADS {a.sads:.4f}  ({len(result.languages)} languages x {result.num_items} items)",
             "layer " + " ".join(f"{m:>7d}" for m in range(a.num_layers)),
             "LRDS  " + " ".join(f"{v:>7.4f}" for v in a.layer_lrds.tolist()),
             "SADS  " + " ".join(f"{v:>7.4f}" for v in a.layer_sads.tolist()),
             f"key neurons (SKLR {result.sklr}): " + ", ".join(f"{k} {n}" for k, n in result.regions.sizes().items())]
    note = result.regions.parameters.get("note")
    if note:
        lines.append(f"note: {note}")
    if result.deactivation is not None:
        own = result.deactivation.own_increase()
        lines.append("own perplexity increase (%): " + ", ".join(f"{k} {v:.1f}" for k, v in own.items()))
    if result.tasks is not None:
        summary = result.tasks.summary()
        lines.append(f"{summary['task']} accuracy, full model / own region deactivated: " + ", ".join(
            f"{k} {summary['task_full_model'][k]:.3f}/{v:.3f}" for k, v in summary["task_own_region"].items()))
    for evolution in result.evolutions:
        for p, x in zip(evolution.points, evolution.x()):
            accuracy = "" if not p.task_accuracy else f"  task {sum(p.task_accuracy.values()) / len(p.task_accuracy):.3f}"
            lines.append(f"{evolution.name} {p.label}: {evolution.axis} {x:g}  LRDS {p.lrds:.4f}  SADS {p.sads:.4f}  "
                         f"SKLR {p.sklr}{accuracy}")
    return "\n".join(lines)
