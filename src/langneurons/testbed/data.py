"""Corpus reading, held-out split, token streams and window sampling for toy-model training.

A language's text is its documents (one per line) each followed by EOS, tokenized without special
tokens and concatenated into one stream. A training window is either ``seq_len`` stream tokens from
a random offset (how :func:`langneurons.data.corpus.pack_windows` feeds text to a model) or, with
probability ``bos_rate``, ``<s>`` followed by ``seq_len - 1`` stream tokens (what a tokenizer called
with special tokens gives), so the model handles both.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Sequence

from langneurons.errors import LangNeuronsError


def corpus_langs(corpus_dir: str | Path, langs: Sequence[str] | None = None) -> list[str]:
    """Languages to use: ``langs`` (checked to exist) or every ``{lang}.txt`` in the folder."""
    from langneurons.data.corpus import find_corpus_files

    return list(find_corpus_files(corpus_dir, list(langs) if langs else None, suffixes=(".txt",)))


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (an error if there is none)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise LangNeuronsError(f"empty corpus file: {path}")
    return lines


def read_refs_file(path: str | Path) -> set[str]:
    """The set of references listed one per line in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise LangNeuronsError(f"held-out refs file not found: {path}")
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def split_language(
    corpus_dir: str | Path, lang: str, holdout: int = 200, holdout_refs: set[str] | None = None
) -> tuple[list[str], list[str]]:
    """(train lines, held-out lines) of one language.

    With ``holdout_refs`` the held-out lines are those whose reference (``{lang}.refs``, same line
    count as ``{lang}.txt``) is in the set; otherwise the last ``holdout`` lines.
    """
    corpus = Path(corpus_dir)
    txt = corpus / f"{lang}.txt"
    if holdout_refs is None:
        lines = read_lines(txt)
        if holdout < 0 or holdout >= len(lines):
            raise LangNeuronsError(f"--holdout {holdout} leaves no training text in {txt} ({len(lines)} lines)")
        return (lines[: len(lines) - holdout], lines[len(lines) - holdout :]) if holdout else (lines, [])
    refs_path = corpus / f"{lang}.refs"
    if not refs_path.is_file():
        raise LangNeuronsError(f"--holdout-refs needs {refs_path} (one reference per line of {txt.name})")
    raw = txt.read_text(encoding="utf-8").splitlines()
    refs = refs_path.read_text(encoding="utf-8").splitlines()
    if len(raw) != len(refs):
        raise LangNeuronsError(f"{txt} has {len(raw)} lines but {refs_path} has {len(refs)}")
    train, held = [], []
    for line, ref in zip(raw, refs):
        line = line.strip()
        if line:
            (held if ref.strip() in holdout_refs else train).append(line)
    if not train and not held:
        raise LangNeuronsError(f"empty corpus file: {txt}")
    if not train:
        raise LangNeuronsError(f"every line of {txt} is held out by --holdout-refs")
    return train, held


def token_stream(tokenizer, lines: Sequence[str]):
    """1-D LongTensor: each line's tokens (no special tokens) followed by EOS, concatenated."""
    import torch

    from langneurons.testbed.tokenizer import encode_lines

    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for row in encode_lines(tokenizer, lines):
        ids.extend(row)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


class WindowSampler:
    """Random training windows with languages drawn evenly (round-robin over batch slots)."""

    def __init__(self, streams: dict, seq_len: int, bos_id: int, seed: int = 0, bos_rate: float = 0.5):
        import torch

        self.langs = list(streams)
        self.streams = streams
        self.seq_len = seq_len
        self.bos_id = bos_id
        self.bos_rate = bos_rate
        self.generator = torch.Generator().manual_seed(seed)
        self.slot = 0
        for lang, stream in streams.items():
            if len(stream) < 2:
                raise LangNeuronsError(f"too little training text for {lang} ({len(stream)} tokens)")

    def batch(self, batch_size: int):
        """(input_ids, attention_mask) of ``batch_size`` windows; short streams are padded."""
        import torch

        rows = []
        for _ in range(batch_size):
            lang = self.langs[self.slot % len(self.langs)]
            self.slot += 1
            stream = self.streams[lang]
            with_bos = float(torch.rand((), generator=self.generator)) < self.bos_rate
            body = self.seq_len - 1 if with_bos else self.seq_len
            hi = max(1, len(stream) - body + 1)
            start = int(torch.randint(0, hi, (1,), generator=self.generator))
            piece = stream[start : start + body]
            rows.append(torch.cat([torch.tensor([self.bos_id]), piece]) if with_bos else piece)
        width = max(len(r) for r in rows)
        ids = torch.full((batch_size, width), self.bos_id, dtype=torch.long)
        mask = torch.zeros((batch_size, width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return ids, mask


def eval_windows(
    stream, seq_len: int, bos_id: int, pad_id: int, max_tokens: int | None = None, bos: bool = False
):
    """Windows covering ``stream`` (its first ``max_tokens`` tokens) for scoring.

    Every window's first token is context only and the others are scored. With ``bos`` each window
    is ``<s>`` + ``seq_len - 1`` new tokens, so every stream token is scored; without, windows of
    ``seq_len`` stream tokens overlap by one token, so every token but the stream's first is scored.
    Returns (input_ids, attention_mask).
    """
    import torch

    if max_tokens is not None:
        stream = stream[:max_tokens]
    body = seq_len - 1
    count = len(stream) if bos else max(1, len(stream) - 1)
    n = max(1, math.ceil(count / body))
    ids = torch.full((n, seq_len), pad_id, dtype=torch.long)
    mask = torch.zeros((n, seq_len), dtype=torch.long)
    for i in range(n):
        if bos:
            piece = torch.cat([torch.tensor([bos_id]), stream[i * body : (i + 1) * body]])
        else:
            piece = stream[i * body : i * body + seq_len]
        ids[i, : len(piece)] = piece
        mask[i, : len(piece)] = 1
    return ids, mask


def unigram_ppl(train_stream, eval_tokens, vocab_size: int) -> float:
    """Perplexity of an add-one-smoothed unigram model (counts from ``train_stream``) on ``eval_tokens``."""
    import torch

    counts = torch.bincount(train_stream, minlength=vocab_size).double() + 1.0
    logp = counts.log() - counts.sum().log()
    if len(eval_tokens) == 0:
        return float("nan")
    return float(torch.exp(-logp[eval_tokens].mean()))


def parse_steps(value: str | Iterable[int] | None) -> list[int]:
    """``"100,500"`` (or an iterable of ints) to a sorted list of positive steps."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            steps = [int(part) for part in value.split(",") if part.strip()]
        except ValueError as exc:
            raise LangNeuronsError(f"bad step list {value!r}: expected e.g. 100,500") from exc
    else:
        steps = [int(s) for s in value]
    if any(s <= 0 for s in steps):
        raise LangNeuronsError(f"steps must be positive: {value!r}")
    return sorted(set(steps))
