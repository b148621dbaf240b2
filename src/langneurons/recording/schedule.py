"""The batch schedule of a recording: which windows form batch ``g``, and which process runs it.

Languages come one after the other; within a language the windows of the ``--shard I/N`` (every
``N``-th window, starting at ``I``) are grouped into batches of ``batch_size`` in corpus order (the last
batch of a language may be smaller). Batches are numbered ``g = 0, 1, ...`` across languages. Rank
``r`` of ``W`` data-parallel processes runs the batches with ``g % W == r``, so every rank runs whole
batches exactly as a single process would (same windows, same batch shapes, bit-identical
activations), and a checkpoint can name its position by ``g``. Windows are produced lazily: batches
that are skipped (other ranks', or already done before a resume) are never stacked or run. With the token
counts of every chunk known (:mod:`langneurons.data.rank_windows`), :func:`indexed_schedule` does not even
tokenize them: a rank tokenizes only the documents of its own batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from langneurons.data.corpus import PackedCorpus
from langneurons.data.rank_windows import LanguageIndex, select_windows
from langneurons.data.streaming import iter_documents
from langneurons.errors import LangNeuronsError
from langneurons.data.streaming import StreamingCorpus


@dataclass
class PlannedBatch:
    """Batch ``index`` of the schedule: ``language`` and the corpus indices and rows of its windows."""

    index: int
    language: str
    window_ids: list[int]
    rows: list[torch.Tensor]

    def input_ids(self) -> torch.Tensor:
        """``long[batch, seq]``."""
        return torch.stack(self.rows)


def language_windows(corpus: PackedCorpus | StreamingCorpus, language: str) -> Iterator[torch.Tensor]:
    """Windows ``long[seq]`` of ``language``, in corpus order."""
    if isinstance(corpus, PackedCorpus):
        return iter(corpus.windows[language])
    return corpus.windows(language)


def batch_schedule(corpus: PackedCorpus | StreamingCorpus, batch_size: int, shard_index: int = 0,
                   num_shards: int = 1) -> Iterator[PlannedBatch]:
    """Every batch of the run, in order (windows of ``--shard shard_index/num_shards`` only)."""
    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0 <= shard_index < num_shards:
        raise LangNeuronsError(f"shard index {shard_index} is not in [0, {num_shards})")
    index = 0
    for language in corpus.languages:
        ids: list[int] = []
        rows: list[torch.Tensor] = []
        for window_id, window in enumerate(language_windows(corpus, language)):
            if window_id % num_shards != shard_index:
                continue
            ids.append(window_id)
            rows.append(window)
            if len(rows) == batch_size:
                yield PlannedBatch(index, language, ids, rows)
                index += 1
                ids, rows = [], []
        if rows:
            yield PlannedBatch(index, language, ids, rows)
            index += 1


@dataclass
class ScheduleCursor:
    """How many batches the schedule had once it was walked to the end (``None`` before)."""

    length: int | None = None


def select_batches(schedule: Iterator[PlannedBatch], runs: Callable[[int], bool], start: int = 0,
                   cursor: ScheduleCursor | None = None) -> Iterator[PlannedBatch]:
    """The batches of ``schedule`` this process runs: ``runs(index)`` and not before ``start``."""
    seen = 0
    for planned in schedule:
        seen = planned.index + 1
        if planned.index >= start and runs(planned.index):
            yield planned
    if cursor is not None:
        cursor.length = seen


def indexed_schedule(corpus: StreamingCorpus, indexes: dict[str, LanguageIndex], batch_size: int,
                     shard_index: int, num_shards: int, runs: Callable[[int], bool],
                     cursor: ScheduleCursor | None = None) -> Iterator[PlannedBatch]:
    """The batches of :func:`batch_schedule` with ``runs(index)``, tokenizing only the chunks of their windows."""
    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    if not 0 <= shard_index < num_shards:
        raise LangNeuronsError(f"shard index {shard_index} is not in [0, {num_shards})")
    index = 0
    for language in corpus.languages:
        ids = [w for w in range(indexes[language].windows) if w % num_shards == shard_index]
        groups = [ids[start:start + batch_size] for start in range(0, len(ids), batch_size)]
        wanted = [(index + number, group) for number, group in enumerate(groups) if runs(index + number)]
        index += len(groups)
        if not wanted:
            continue
        stream = select_windows(corpus.tokenizer, iter_documents(corpus.files[language].path), indexes[language],
                                [w for _, group in wanted for w in group])
        rows: dict[int, torch.Tensor] = {}
        for number, group in wanted:
            while any(w not in rows for w in group):
                window_id, window = next(stream)
                rows[window_id] = window
            yield PlannedBatch(number, language, group, [rows.pop(w) for w in group])
    if cursor is not None:
        cursor.length = index


def expected_tokens(source: PackedCorpus | StreamingCorpus, parts: int = 1) -> int | None:
    """Tokens one of ``parts`` shards / ranks will run: exact for a packed corpus; for a streamed one an upper
    bound from ``max_tokens`` (every language capped at ``max_tokens // seq_len`` windows), else ``None``."""
    if isinstance(source, PackedCorpus):
        return sum(int(w.numel()) for w in source.windows.values()) // parts
    if source.max_tokens is None:
        return None
    return len(source.languages) * (source.max_tokens // source.seq_len) * source.seq_len // parts


def estimated_tokens(source: PackedCorpus | StreamingCorpus, parts: int = 1, sample: int = 64) -> int:
    """:func:`expected_tokens`, or for a streamed corpus without ``max_tokens`` an estimate (for the progress
    bar's total): each file's document count (known from the scan) times the mean tokens (+ EOS) of its first
    ``sample`` documents, in whole windows."""
    expected = expected_tokens(source, parts)
    if expected is not None:
        return expected
    total = 0
    for entry in source.files.values():
        documents = [doc for _, doc in zip(range(sample), iter_documents(entry.path))]
        if not documents:
            continue
        ids = source.tokenizer(documents, add_special_tokens=False)["input_ids"]
        mean = sum(len(row) + 1 for row in ids) / len(ids)
        total += int(mean * entry.documents) // source.seq_len * source.seq_len
    return total // parts
