"""Peak memory of `langneurons record` for 1x and 10x the corpus: it must not grow with the corpus.

Writes a synthetic two-language corpus of ``--tokens`` tokens per language (1x) and ten times that (10x),
then, in this process, records each with ``langneurons.record`` (streamed corpus) and, for contrast,
with the corpus packed in memory first (``load_corpus``, what the reference codebases do). The peak
resident set size of each run is measured from a reset high-water mark (Linux ``/proc/self/clear_refs``)
and reported above the resident size before the run. Like ``langneurons record``, it sets
``TOKENIZERS_PARALLELISM=false`` unless set: the Rust tokenizer's worker threads fragment the heap, which
shows as a slow creep of the peak with the corpus (set ``TOKENIZERS_PARALLELISM=true`` to see it).
Prints, last, ``peak 10x/1x = <ratio>``.

    python benchmarks/peak_memory.py [--tokens 200000 --vocab 4000]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import random
import re
import tempfile
from pathlib import Path

import torch

import langneurons as ln
from langneurons.corpus import load_corpus
from langneurons.testing import tiny_model, train_byte_tokenizer

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
        corpora = {"1x": write_corpus(root / "1x", documents, seed=1),
                   "10x": write_corpus(root / "10x", 10 * documents, seed=1)}
        kwargs = dict(tokenizer=tokenizer, seq_len=args.seq_len, batch_size=args.batch_size, progress=False)

        def streamed(corpus: Path) -> None:
            stats = ln.record(model, corpus, **kwargs)
            tokens.append(int(stats.token_count.sum()))

        def in_memory(corpus: Path) -> None:
            ln.record(model, load_corpus(corpus, tokenizer, args.seq_len), **kwargs)

        tokens: list[int] = []
        streamed(corpora["1x"])  # warm-up: imports, kernels, allocator pools
        tokens.clear()
        peaks = {}
        for name, fn in (("langneurons record (streamed)", streamed), ("corpus packed in memory first", in_memory)):
            peaks[name] = {size: peak_mib(lambda fn=fn, path=path: fn(path)) for size, path in corpora.items()}
        sizes = {size: sum(f.stat().st_size for f in path.iterdir()) / 2**20 for size, path in corpora.items()}
    print(f"model: tiny llama (hidden 32, 2 layers), vocab {args.vocab}, seq {args.seq_len}, batch {args.batch_size}; "
          f"{torch.get_num_threads()} threads, TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}; corpus 1x: {tokens[0]:,} tokens ({sizes['1x']:.1f} MiB), 10x: {tokens[1]:,} tokens "
          f"({sizes['10x']:.1f} MiB), 2 languages")
    for name, peak in peaks.items():
        print(f"{name:>32}: peak above start 1x {peak['1x']:7.1f} MiB, 10x {peak['10x']:7.1f} MiB")
    streamed_peak = peaks["langneurons record (streamed)"]
    print(f"peak 10x/1x = {max(streamed_peak['10x'], 1.0) / max(streamed_peak['1x'], 1.0):.2f}")


if __name__ == "__main__":
    main()
