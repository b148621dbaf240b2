"""The contract between the recorder and the statistics it feeds.

The recorder runs batches of one language at a time. Before each forward pass it calls
``begin_batch`` with a :class:`BatchInfo`; the site hook of every layer calls ``update`` with the
activations ``[batch, seq, width]`` of that layer, on the model's device; ``end_batch`` follows the
forward pass. Statistics reduce inside ``update`` and never keep raw activations, so any number of
them (per-language counts, per-sample pooled vectors, ...) can share one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from langneurons.errors import LangNeuronsError


@dataclass
class BatchInfo:
    """What the statistics need to know about the batch being run.

    Attributes:
        language: language of every sequence in the batch.
        token_mask: ``bool[batch, seq]`` of the positions that count (``None``: all of them).
        sample_ids: ``long[batch]`` index of each sequence in its corpus, for per-sample statistics.
    """

    language: str
    token_mask: torch.Tensor | None = None
    sample_ids: torch.Tensor | None = None

    def num_tokens(self, batch_size: int, seq_len: int) -> int:
        return batch_size * seq_len if self.token_mask is None else int(self.token_mask.sum())


class SiteStatistic(Protocol):
    """A streaming statistic fed by the recorder."""

    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None: ...

    def update(self, layer: int, activations: torch.Tensor) -> None: ...

    def end_batch(self) -> None: ...


class PerLanguageBatches:
    """``begin_batch`` of statistics kept per language (``languages``, ``token_count[language]``).

    Selects the batch's language row (``_current``), keeps the flattened token mask (``_mask``,
    ``bool[batch * seq]`` or ``None``) and counts the batch's tokens.
    """

    languages: list[str]
    token_count: torch.Tensor
    _current: int
    _mask: torch.Tensor | None

    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None:
        if batch.language not in self.languages:
            raise LangNeuronsError(f"language {batch.language!r} is not one of {self.languages}")
        self._current = self.languages.index(batch.language)
        self._mask = None if batch.token_mask is None else batch.token_mask.reshape(-1)
        self.token_count[self._current] += batch.num_tokens(batch_size, seq_len)
