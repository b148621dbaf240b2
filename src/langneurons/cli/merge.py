"""``langneurons merge``: add statistics recorded over disjoint shards."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("merge", help="merge statistics of disjoint corpus shards by addition")
    parser.add_argument("stats", nargs="+", help="statistics directories")
    parser.add_argument("--out", required=True, help="merged statistics directory")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from langneurons.stats import load_stats

    merged = load_stats(args.stats[0])
    for path in args.stats[1:]:
        merged = merged.merge(load_stats(path))
    merged.save(args.out)
    print(f"wrote {args.out}: {len(args.stats)} shards, tokens {dict(zip(merged.languages, merged.token_count.tolist()))}")
    return 0
