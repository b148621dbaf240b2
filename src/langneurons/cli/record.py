"""``langneurons record``: per-language activation statistics of a model over a corpus."""

from __future__ import annotations

import argparse

from langneurons.cli._common import add_corpus_options, add_model_options, parse_langs


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "record", help="record activation statistics over a per-language corpus",
        description="One streaming pass over {lang}.txt / {lang}.jsonl files that keeps, per language and neuron, "
                    "the count of positive activations, their sum and sum of squares, and the token count.",
    )
    add_model_options(parser)
    add_corpus_options(parser, "directory of {lang}.txt (one document per line) or {lang}.jsonl (text field)")
    parser.add_argument("--out", required=True, help="output statistics directory")
    parser.add_argument("--device-map", default=None, help="accelerate device map, e.g. auto, for big models")
    parser.add_argument("--shard", default=None, metavar="I/N", help="record only shard I of N (merge them later)")
    parser.add_argument("--reduce-dtype", default="float32", choices=["float32", "float64"],
                        help="dtype of per-batch block sums (float64: exact, slower); accumulation is float64")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    from langneurons.recorder import record

    shard_index, num_shards = parse_shard(args.shard)
    stats = record(
        args.model, args.corpus, langs=parse_langs(args.langs), max_tokens=args.max_tokens, seq_len=args.seq_len,
        batch_size=args.batch_size, device=args.device, dtype=args.dtype, site=args.site, revision=args.revision,
        device_map=args.device_map, reduce_dtype=args.reduce_dtype, shard_index=shard_index, num_shards=num_shards, progress=not args.no_progress,
    )
    stats.save(args.out)
    tokens = ", ".join(f"{lang} {n}" for lang, n in zip(stats.languages, stats.token_count.tolist()))
    print(f"wrote {args.out}: {stats.num_layers} layers x {stats.width} neurons at {args.site}; tokens: {tokens}")
    return 0
