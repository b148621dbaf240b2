"""``langneurons merge``: add statistics recorded over disjoint shards."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    from langneurons.cli._common import add_force_option

    parser = subparsers.add_parser("merge", help="merge statistics of disjoint corpus shards by addition")
    parser.add_argument("stats", nargs="+", help="statistics directories")
    parser.add_argument("--out", required=True, help="merged statistics directory")
    add_force_option(parser)
    parser.set_defaults(func=run)


def shard_key(meta: dict) -> tuple | None:
    """What identifies a shard of one corpus: its ``--shard I/N`` and the corpus files' checksums."""
    parameters, corpus = meta.get("parameters") or {}, meta.get("corpus") or {}
    files = corpus.get("files") or {}
    if "num_shards" not in parameters or not files:
        return None
    checksums = tuple(sorted((lang, entry.get("sha256")) for lang, entry in files.items()))
    return (parameters.get("shard_index"), parameters.get("num_shards"), corpus.get("seq_len"),
            corpus.get("max_tokens"), checksums)


def run(args: argparse.Namespace) -> int:
    from langneurons.cli._common import prepare_outputs
    from langneurons.errors import LangNeuronsError
    from langneurons.stats import load_stats

    prepare_outputs(args, {"--out": args.out}, {"STATS": args.stats})
    shards = [load_stats(path) for path in args.stats]  # every input is verified before anything is written
    seen: dict[tuple, str] = {}
    for path, stats in zip(args.stats, shards):
        key = shard_key(stats.meta)
        if key is not None and key in seen:
            raise LangNeuronsError(f"{path!r} and {seen[key]!r} hold the same shard ({key[0]}/{key[1]}) of the "
                                   "same corpus; merging them would count it twice")
        if key is not None:
            seen[key] = path
    merged = shards[0]
    for stats in shards[1:]:
        merged = merged.merge(stats)
    merged.save(args.out)
    print(f"wrote {args.out}: {len(args.stats)} shards, tokens {dict(zip(merged.languages, merged.token_count.tolist()))}")
    return 0
