"""``langneurons record``: per-language activation statistics of a model over a corpus.

Runs as one process, or as one rank of a data-parallel run under torchrun
(``torchrun --nproc-per-node N -m langneurons record ...``), where rank 0 writes the summed result.
"""

from __future__ import annotations

import argparse

from langneurons.cli._common import (
    add_corpus_options,
    add_force_option,
    add_model_options,
    add_placement_options,
    check_placement,
    check_seq_len_early,
    parse_langs,
    prepare_outputs,
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "record", help="record activation statistics over a per-language corpus",
        description="One streaming pass over {lang}.txt / {lang}.jsonl files that keeps, per language and neuron, "
                    "the count of positive activations, their sum and sum of squares, and the token count. "
                    "Under torchrun every rank runs its share of the batches and rank 0 writes the sum.",
    )
    add_model_options(parser)
    add_corpus_options(parser, "directory of {lang}.txt (one document per line) or {lang}.jsonl (text field)")
    parser.add_argument("--out", required=True, help="output statistics directory")
    add_placement_options(parser)
    parser.add_argument("--shard", default=None, metavar="I/N", help="record only shard I of N (merge them later)")
    parser.add_argument("--reduce-dtype", default="float32", choices=["float32", "float64"],
                        help="dtype of per-batch block sums on the CPU (float64: exact, slower); "
                             "accumulation is float64")
    parser.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                        help="write the partial statistics atomically every N windows (per rank)")
    parser.add_argument("--checkpoint-dir", default=None,
                        help="where checkpoints go (default: OUT.checkpoint next to --out)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint (start afresh when there is none)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_force_option(parser)
    parser.set_defaults(func=run)


def parse_shard(value: str | None) -> tuple[int, int]:
    from langneurons.errors import LangNeuronsError

    if value is None:
        return 0, 1
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise LangNeuronsError(f"--shard must look like I/N (e.g. 0/4), got {value!r}") from None
    return index, count


def run(args: argparse.Namespace) -> int:
    import os

    # One tokenizer thread per process (unless the user says otherwise): the corpus is tokenized while it
    # streams, and the Rust tokenizer's worker threads would fragment the heap (memory creeping up with the
    # corpus) and oversubscribe the CPUs under torchrun. Single-threaded tokenization keeps up with recording.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from langneurons.recording import distributed
    from langneurons.sets.artefacts import Target
    from langneurons.recording.checkpoint import CheckpointStore, default_checkpoint_dir
    from langneurons.recording.recorder import record

    check_placement(args)
    shard_index, num_shards = parse_shard(args.shard)
    checkpoint_dir = args.checkpoint_dir or (
        default_checkpoint_dir(args.out) if args.checkpoint_every is not None or args.resume else None)
    outputs = [Target("--out", args.out)]
    if checkpoint_dir is not None:
        outputs.append(Target("--checkpoint-dir", checkpoint_dir, role="workdir"))
    prepare_outputs(args, outputs, {"--model": args.model, "--corpus": args.corpus})  # fail now, not after hours
    check_seq_len_early(args)
    context, device = distributed.setup(args.device)
    try:
        stats = record(
            args.model, args.corpus, langs=parse_langs(args.langs), max_tokens=args.max_tokens,
            seq_len=args.seq_len, batch_size=args.batch_size, device=device, dtype=args.dtype, site=args.site,
            revision=args.revision, device_map=args.device_map, offload_folder=args.offload_folder,
            trust_remote_code=args.trust_remote_code, attn_implementation=args.attn_implementation,
            reduce_dtype=args.reduce_dtype,
            shard_index=shard_index, num_shards=num_shards, progress=not args.no_progress,
            checkpoint_dir=checkpoint_dir, checkpoint_every=args.checkpoint_every, resume=args.resume,
        )
        if context.is_main:
            stats.save(args.out)
        distributed.barrier(context)  # the result is on disk before any checkpoint goes
        if checkpoint_dir is not None:
            CheckpointStore(checkpoint_dir, context.rank).clear()
    finally:
        distributed.teardown(context)
    if context.is_main:
        tokens = ", ".join(f"{lang} {n}" for lang, n in zip(stats.languages, stats.token_count.tolist()))
        ranks = f" ({context.world_size} ranks)" if context.is_distributed else ""
        print(f"wrote {args.out}: {stats.num_layers} layers x {stats.width} neurons at {args.site}{ranks}; "
              f"tokens: {tokens}")
    return 0
