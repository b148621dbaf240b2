"""Each data-parallel rank tokenizes only its share of a corpus, and still makes exactly the single-process windows.

A language's token stream (documents joined with EOS, cut into windows of ``seq_len``: the one packer,
:mod:`langneurons.data.streaming`) is read in chunks of :data:`~langneurons.data.streaming.TOKENIZE_CHUNK`
documents. Where window ``w`` starts depends on the token count of everything before it, so the ranks first
*count* together: :func:`index_language` has rank ``part`` of ``parts`` tokenize chunks ``c % parts == part``
and sums the counts over the ranks (``all_sum``) in rounds of ``parts`` chunks, stopping at the ``max_tokens``
cap. Then each rank tokenizes only the chunks that overlap its own windows (:func:`select_windows`). A rank
thus tokenizes about ``2 / parts`` of the corpus (its share of the counting, and its windows) instead of all of
it; the other ranks' documents are only read (and hashed by :func:`~langneurons.data.streaming.scan_file`).

:class:`RankWindows` holds the batches one rank runs of a corpus cut into batches of ``batch_size`` windows
per language, numbered across languages (batch ``g`` of the whole run); it is a
:class:`~langneurons.data.corpus.PackedCorpus`, so every function that takes one takes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from langneurons.data.corpus import PackedCorpus
from langneurons.data.streaming import TOKENIZE_CHUNK, StreamingCorpus, _chunks, iter_documents, open_corpus
from langneurons.errors import LangNeuronsError

AllSum = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class LanguageIndex:
    """Tokens each chunk of a language adds to its stream (EOS joins included) and the windows it makes."""

    chunk_tokens: list[int]
    seq_len: int
    windows: int

    @property
    def tokens(self) -> int:
        return sum(self.chunk_tokens)


def _chunk_summary(tokenizer: Any, documents: list[str]) -> tuple[int, int, int]:
    """``(tokens, documents, leading empty documents)`` of one chunk, without EOS joins."""
    encoded = tokenizer(documents, add_special_tokens=False)["input_ids"]
    leading = next((i for i, ids in enumerate(encoded) if len(ids)), len(encoded))
    return sum(len(ids) for ids in encoded), len(encoded), leading


def _joined(summary: tuple[int, int, int], before: int, eos: int | None) -> int:
    """Tokens a chunk adds to the stream when ``before`` tokens precede it (an EOS before every document that
    follows a token: the rule of :func:`~langneurons.data.streaming.iter_windows`)."""
    tokens, documents, leading = summary
    if eos is None:
        return tokens
    if before > 0:
        return tokens + documents
    return tokens + (documents - leading - 1 if leading < documents else 0)


def index_language(tokenizer: Any, documents: Iterable[str], seq_len: int, max_tokens: int | None = None,
                   part: int = 0, parts: int = 1, all_sum: AllSum | None = None, name: str = "corpus"
                   ) -> LanguageIndex:
    """Count the tokens of every chunk of ``documents``, the chunks split over ``parts`` ranks (see the module
    doc; every rank calls this with the same documents). Stops once the ``max_tokens // seq_len`` windows
    are complete. Raises when not even one window can be made, as the packer does."""
    if parts > 1 and all_sum is None:
        raise LangNeuronsError("counting over several ranks needs all_sum")
    eos = getattr(tokenizer, "eos_token_id", None)
    limit = None if max_tokens is None else max_tokens // seq_len
    counts: list[int] = []
    total = 0
    chunks = _chunks(documents, TOKENIZE_CHUNK)
    finished = False
    while not finished:
        summaries = torch.zeros(parts, 4, dtype=torch.int64)  # tokens, documents, leading, present
        for slot in range(parts):
            chunk = next(chunks, None)
            if chunk is None:
                finished = True
                break
            if slot == part:
                summaries[slot, :3] = torch.tensor(_chunk_summary(tokenizer, chunk))
            summaries[slot, 3] = 1 if slot == part else 0
        if parts > 1:
            summaries = all_sum(summaries)
        for slot in range(parts):
            if not int(summaries[slot, 3]):
                break
            added = _joined(tuple(int(v) for v in summaries[slot, :3]), total, eos)
            counts.append(added)
            total += added
        if limit is not None and total // seq_len >= limit:
            finished = True
    windows = total // seq_len if limit is None else min(total // seq_len, limit)
    if windows == 0:
        raise LangNeuronsError(f"{name} has {total} tokens, fewer than one window of --seq-len {seq_len}")
    return LanguageIndex(counts, seq_len, windows)


def select_windows(tokenizer: Any, documents: Iterable[str], index: LanguageIndex, wanted: Iterable[int]
                   ) -> Iterator[tuple[int, torch.Tensor]]:
    """``(window id, long[seq_len])`` for the ``wanted`` windows, in order, bit-identical to the packer's.

    Only the chunks that overlap a wanted window are tokenized; the others are read and skipped.
    """
    length = index.seq_len
    targets = sorted({int(w) for w in wanted if 0 <= int(w) < index.windows})
    if not targets:
        return
    eos = getattr(tokenizer, "eos_token_id", None)
    buffer: list[int] = []
    buffer_start = 0
    position, cursor = 0, 0  # stream offset of the chunk; next target
    for number, chunk in enumerate(_chunks(documents, TOKENIZE_CHUNK)):
        if cursor == len(targets) or number >= len(index.chunk_tokens):
            return
        size = index.chunk_tokens[number]
        start, end = position, position + size
        position = end
        if end <= targets[cursor] * length:
            continue  # ends before the next wanted window: not needed
        if start != buffer_start + len(buffer):
            buffer, buffer_start = [], start
        seen = start
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            if seen and eos is not None:
                buffer.append(eos)
                seen += 1
            buffer.extend(ids)
            seen += len(ids)
        while cursor < len(targets) and (targets[cursor] + 1) * length <= buffer_start + len(buffer):
            offset = targets[cursor] * length - buffer_start
            yield targets[cursor], torch.tensor(buffer[offset: offset + length], dtype=torch.long)
            cursor += 1
        keep_from = targets[cursor] * length if cursor < len(targets) else buffer_start + len(buffer)
        if keep_from > buffer_start:
            drop = min(keep_from - buffer_start, len(buffer))
            del buffer[:drop]
            buffer_start += drop


def index_corpus(corpus: StreamingCorpus, part: int = 0, parts: int = 1, all_sum: AllSum | None = None
                 ) -> dict[str, LanguageIndex]:
    """:func:`index_language` for every language of ``corpus``; fills the files' window and token counts."""
    indexes = {}
    for lang, entry in corpus.files.items():
        indexes[lang] = index_language(corpus.tokenizer, iter_documents(entry.path), corpus.seq_len,
                                       corpus.max_tokens, part, parts, all_sum,
                                       name=f"language {lang!r} ({entry.path.name})")
        entry.windows, entry.tokens = indexes[lang].windows, indexes[lang].windows * corpus.seq_len
    return indexes


@dataclass
class RankWindows(PackedCorpus):
    """The batches of windows one rank runs: ``batches[g]`` ``long[b, seq]`` of language ``batch_language[g]``.

    Batch ``g`` is batch ``g - first[lang]`` of its language (batches of ``batch_size`` windows in corpus
    order); ``windows`` holds, per language, this rank's windows stacked (all of them in a single process).
    """

    batch_size: int = 8
    first: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    batches: dict[int, torch.Tensor] = field(default_factory=dict)

    def num_batches(self, language: str) -> int:
        return -(-self.counts[language] // self.batch_size)

    def batch(self, language: str, number: int) -> torch.Tensor:
        """Batch ``number`` of ``language`` (this rank must hold it)."""
        return self.batches[self.first[language] + number]

    def batch_tokens(self, language: str, number: int) -> int:
        windows = min(self.batch_size, self.counts[language] - number * self.batch_size)
        return windows * self.seq_len


def _layout(counts: dict[str, int], batch_size: int) -> dict[str, int]:
    first, total = {}, 0
    for lang, windows in counts.items():
        first[lang] = total
        total += -(-windows // batch_size)
    return first


def from_packed(packed: PackedCorpus, batch_size: int) -> RankWindows:
    """Every batch of an in-memory corpus (a single process)."""
    if isinstance(packed, RankWindows):
        if packed.batch_size != batch_size:
            raise LangNeuronsError(f"the windows were batched by {packed.batch_size}, not {batch_size}")
        return packed
    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    counts = {lang: int(w.shape[0]) for lang, w in packed.windows.items()}
    first = _layout(counts, batch_size)
    batches = {first[lang] + b: w[b * batch_size:(b + 1) * batch_size]
               for lang, w in packed.windows.items() for b in range(-(-counts[lang] // batch_size))}
    return RankWindows(dict(packed.windows), packed.files, packed.seq_len, packed.max_tokens, batch_size, first,
                       counts, batches)


def load_rank_windows(directory: str | Path, tokenizer: Any, seq_len: int, batch_size: int,
                      langs: Sequence[str] | None = None, max_tokens: int | None = None,
                      owns: Callable[[int], bool] = lambda g: True, part: int = 0, parts: int = 1,
                      all_sum: AllSum | None = None) -> RankWindows:
    """The batches ``g`` with ``owns(g)`` of a corpus directory, tokenizing only this rank's share.

    In a single process (``parts == 1``) every window is made by one streaming pass (as
    :func:`~langneurons.data.corpus.load_corpus`); else the ranks count together first (see the module doc).
    """
    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    corpus = open_corpus(directory, tokenizer, seq_len, list(langs) if langs else None, max_tokens)
    if parts == 1:
        windows = {lang: torch.stack(list(corpus.windows(lang))) for lang in corpus.languages}
        packed = PackedCorpus(windows, corpus.provenance()["files"], seq_len, max_tokens)
        whole = from_packed(packed, batch_size)
        whole.batches = {g: b for g, b in whole.batches.items() if owns(g)}
        return whole
    indexes = index_corpus(corpus, part, parts, all_sum)
    counts = {lang: index.windows for lang, index in indexes.items()}
    first = _layout(counts, batch_size)
    batches: dict[int, torch.Tensor] = {}
    stacked: dict[str, torch.Tensor] = {}
    for lang, index in indexes.items():
        mine = [b for b in range(-(-counts[lang] // batch_size)) if owns(first[lang] + b)]
        wanted = [w for b in mine for w in range(b * batch_size, min((b + 1) * batch_size, counts[lang]))]
        rows = dict(select_windows(tokenizer, iter_documents(corpus.files[lang].path), index, wanted))
        for b in mine:
            ids = range(b * batch_size, min((b + 1) * batch_size, counts[lang]))
            batches[first[lang] + b] = torch.stack([rows[w] for w in ids])
        stacked[lang] = torch.stack([rows[w] for w in wanted]) if wanted else torch.zeros(0, seq_len, dtype=torch.long)
    return RankWindows(stacked, corpus.provenance()["files"], seq_len, max_tokens, batch_size, first, counts, batches)
