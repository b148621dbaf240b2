"""Peak memory of `langneurons record` for 1x and 10x the corpus: it must not grow with the corpus.

Writes a synthetic two-language corpus of ``--tokens`` tokens per language (1x) and ten times that (10x),
then, in this process, records each with ``langneurons.record`` (streamed corpus) and, for contrast,
with the corpus packed in memory first (``load_corpus``, what the reference codebases do). The peak
resident set size of each run is measured from a reset high-water mark (Linux ``/proc/self/clear_refs``)
and reported above the resident size before the run (streamed: the median of alternating rounds).
Like ``langneurons record``, it sets ``TOKENIZERS_PARALLELISM=false`` unless set: the Rust tokenizer's
worker threads fragment the heap, which shows as a slow creep of the peak with the corpus (set
``TOKENIZERS_PARALLELISM=true`` to see it).
Prints, last, ``peak 10x/1x = <ratio>`` (largest over smallest of ``--sizes``).

    python benchmarks/peak_memory.py [--tokens 200000 --vocab 4000 --sizes 1,10 --rounds 3]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import random
import re
import statistics
import tempfile
from pathlib import Path

import torch

import langneurons as ln
from langneurons.data.corpus import load_corpus
from langneurons.testbed.tiny import tiny_model, train_byte_tokenizer

ALPHABETS = {"aa": "abcdefghijklmnopqrstuvwxyz", "bb": "абвгдежзийклмнопрстуфхцчшщыэюя"}


def rss_kib(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


def release() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def peak_mib(fn) -> float:
    """Peak RSS while ``fn`` runs, above the RSS just before, in MiB."""
    release()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    fn()
    return (rss_kib("VmHWM") - before) / 1024


def write_corpus(directory: Path, documents: int, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    for lang, alphabet in ALPHABETS.items():
        with open(directory / f"{lang}.txt", "w", encoding="utf-8") as handle:
            for _ in range(documents):
                words = ("".join(rng.choices(alphabet, k=rng.randint(2, 9))) for _ in range(rng.randint(20, 80)))
                handle.write(" ".join(words) + ".\n")
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200_000, help="tokens per language in the 1x corpus (about)")
    parser.add_argument("--vocab", type=int, default=4000)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the streamed runs (median)")
    parser.add_argument("--sizes", default="1,10", help="corpus sizes in multiples of --tokens (first and last compared)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # as `langneurons record` does

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sample = write_corpus(root / "sample", 2000)
        texts = [line for path in sorted(sample.iterdir()) for line in path.read_text().splitlines()]
        tokenizer = train_byte_tokenizer(texts, root / "tokenizer", vocab_size=args.vocab)
        per_document = sum(len(ids) for ids in tokenizer(texts[:200])["input_ids"]) / 200
        documents = max(1, round(args.tokens / per_document))
        model = tiny_model("llama", vocab_size=len(tokenizer), max_position_embeddings=args.seq_len)
        multiples = [int(part) for part in args.sizes.split(",")]
        corpora = {f"{m}x": write_corpus(root / f"{m}x", m * documents, seed=1) for m in multiples}
        kwargs = dict(tokenizer=tokenizer, seq_len=args.seq_len, batch_size=args.batch_size, progress=False)

        def streamed(corpus: Path) -> None:
            stats = ln.record(model, corpus, **kwargs)
            if len(tokens) < len(corpora):
                tokens.append(int(stats.token_count.sum()))

        def in_memory(corpus: Path) -> None:
            ln.record(model, load_corpus(corpus, tokenizer, args.seq_len), **kwargs)

        tokens: list[int] = []
        streamed(next(iter(corpora.values())))  # warm-up: imports, kernels, allocator pools
        tokens.clear()
        peaks: dict[str, dict[str, float]] = {}
        rounds: dict[str, list[float]] = {size: [] for size in corpora}
        for _ in range(args.rounds):  # 1x, 10x, 1x, 10x, ...: the allocator's state adds noise
            for size, path in corpora.items():
                rounds[size].append(peak_mib(lambda path=path: streamed(path)))
        peaks["langneurons record (streamed)"] = {size: statistics.median(values) for size, values in rounds.items()}
        peaks["corpus packed in memory first"] = {size: peak_mib(lambda path=path: in_memory(path))
                                                  for size, path in corpora.items()}
        sizes = {size: sum(f.stat().st_size for f in path.iterdir()) / 2**20 for size, path in corpora.items()}
    first, last = list(corpora)[0], list(corpora)[-1]
    listing = ", ".join(f"{size}: {count:,} tokens ({sizes[size]:.1f} MiB)" for size, count in zip(corpora, tokens))
    print(f"model: tiny llama (hidden 32, 2 layers), vocab {args.vocab}, seq {args.seq_len}, batch {args.batch_size}; "
          f"{torch.get_num_threads()} threads, TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}; "
          f"2 languages, corpus {listing}; streamed: median of {args.rounds} alternating rounds")
    for name, peak in peaks.items():
        print(f"{name:>32}: peak above start " + ", ".join(f"{size} {value:6.1f} MiB" for size, value in peak.items()))
    print(f"{'streamed rounds':>32}: " + "; ".join(
        f"{size} " + ", ".join(f"{value:.1f}" for value in values) for size, values in rounds.items()) + " MiB")
    streamed_peak = peaks["langneurons record (streamed)"]
    print(f"peak {last}/{first} = {max(streamed_peak[last], 1.0) / max(streamed_peak[first], 1.0):.2f}")


if __name__ == "__main__":
    main()
