"""The contract between the recorder and the statistics it feeds.

One pass attaches any set of sites and feeds any set of statistics. Each statistic declares the sites it
needs (``sites``, e.g. ``("ffn.act",)`` or ``("ffn.down_in", "attn.q", "attn.k")``; empty: whatever one site
is attached). Before each forward pass the recorder calls ``begin_batch`` with a :class:`BatchInfo`; the hook
of every site and layer calls ``update(layer, activations, site=...)`` with that layer's activations
``[batch, seq, width]`` on the model's device (or, for a site provider such as attention capture, whatever
object the provider hands over); ``end_batch`` follows the forward pass. Statistics reduce inside ``update``
and never keep raw activations, so any number of them can share one pass.

A batch may mix languages and items: ``BatchInfo.languages`` gives each row's language and
``BatchInfo.sample_ids`` its item, so the K translations of one parallel item run together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from langneurons.data.batching import last_index as _last_index
from langneurons.errors import LangNeuronsError


@dataclass
class BatchInfo:
    """What the statistics need to know about the batch being run.

    Attributes:
        language: language of every row (one-language batches); ``None`` when rows differ.
        token_mask: ``bool[batch, seq]`` of the positions that count (``None``: all of them); left or right
            padding, and a BOS may be left out.
        sample_ids: ``long[batch]`` index of each row's sample / parallel item, for per-sample statistics.
        languages: one language per row (a batch may mix them); ``None``: every row is ``language``.
        last_index: ``long[batch]`` index of each row's last real token (the recorder sets it from the
            attention mask; :meth:`last_positions` computes it when it is not set).
    """

    language: str | None = None
    token_mask: torch.Tensor | None = None
    sample_ids: torch.Tensor | None = None
    languages: list[str] | None = None
    last_index: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.languages is not None:
            self.languages = list(self.languages)
            distinct = set(self.languages)
            if self.language is None and len(distinct) == 1:
                self.language = self.languages[0]
            elif self.language is not None and distinct != {self.language}:
                raise LangNeuronsError(f"batch language {self.language!r} disagrees with its rows' languages "
                                       f"{sorted(distinct)}")
        elif self.language is None:
            raise LangNeuronsError("a batch needs its language (language=...) or one per row (languages=[...])")

    @property
    def mixed(self) -> bool:
        """Whether the rows have different languages."""
        return self.language is None

    def row_languages(self, batch_size: int) -> list[str]:
        """The language of each of the ``batch_size`` rows."""
        if self.languages is None:
            return [self.language] * batch_size
        if len(self.languages) != batch_size:
            raise LangNeuronsError(f"a batch of {batch_size} rows has {len(self.languages)} row languages")
        return self.languages

    def num_tokens(self, batch_size: int, seq_len: int) -> int:
        return batch_size * seq_len if self.token_mask is None else int(self.token_mask.sum())

    def last_positions(self, batch_size: int, seq_len: int) -> torch.Tensor:
        """``long[batch]``: :attr:`last_index`, or the last counted position of each row when it is not set."""
        if self.last_index is not None:
            return self.last_index
        return _last_index(self.token_mask, seq_len, batch_size)


def as_rows(activations: torch.Tensor, batch_size: int, seq_len: int) -> torch.Tensor:
    """``[batch, seq, width]`` view of a site's tensor (OPT's FFN flattens it to ``[batch * seq, width]``)."""
    if activations.dim() == 3 and tuple(activations.shape[:2]) == (batch_size, seq_len):
        return activations
    if activations.numel() != batch_size * seq_len * activations.shape[-1]:
        raise LangNeuronsError(f"site tensor of shape {tuple(activations.shape)} does not fit a batch of "
                               f"{batch_size} x {seq_len} positions")
    return activations.reshape(batch_size, seq_len, activations.shape[-1])


class SiteStatistic(Protocol):
    """A streaming statistic fed by the recorder (``sites``: the sites it needs)."""

    sites: tuple[str, ...]

    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None: ...

    def update(self, layer: int, activations: Any, site: str = "ffn.act") -> None: ...

    def end_batch(self) -> None: ...


class PerLanguageBatches:
    """``begin_batch`` of statistics kept per language (``languages``, ``token_count[language]``).

    Groups the batch's rows by language (``_groups``: ``(language index, rows long[n] or None for all rows)``),
    keeps the token mask (``_mask``, ``bool[batch, seq]`` or ``None``) and counts each language's tokens.
    A one-language batch is one group of all rows (``_current`` is its language index).
    """

    languages: list[str]
    token_count: torch.Tensor
    _current: int | None
    _mask: torch.Tensor | None
    _groups: list[tuple[int, torch.Tensor | None]]
    _batch_size: int

    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None:
        rows = batch.row_languages(batch_size)
        unknown = [lang for lang in dict.fromkeys(rows) if lang not in self.languages]
        if unknown:
            raise LangNeuronsError(f"language {unknown[0]!r} is not one of {self.languages}")
        self._mask, self._batch_size = batch.token_mask, batch_size
        if not batch.mixed:
            self._current = self.languages.index(batch.language)
            self._groups = [(self._current, None)]
            self.token_count[self._current] += batch.num_tokens(batch_size, seq_len)
            return
        self._current, self._groups = None, []
        for lang in dict.fromkeys(rows):
            index = torch.tensor([i for i, row in enumerate(rows) if row == lang], dtype=torch.long)
            k = self.languages.index(lang)
            self._groups.append((k, index))
            count = len(index) * seq_len if self._mask is None else int(self._mask[index.to(self._mask.device)].sum())
            self.token_count[k] += count

    def group_rows(self, activations: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        """``(language index, flat[n, width])`` per language group: its rows' counted positions of ``activations``
        (``[batch, seq, width]``, or any ``[..., width]`` in a one-language batch)."""
        width = activations.shape[-1]
        if self._groups == [(self._current, None)]:
            flat = activations.reshape(-1, width)
            if self._mask is not None:
                flat = flat[self._mask.reshape(-1).to(flat.device)]
            return [(self._current, flat)]
        acts = activations.reshape(self._batch_size, -1, width)
        out = []
        for k, rows in self._groups:
            chosen = acts.index_select(0, rows.to(acts.device))
            flat = chosen.reshape(-1, width)
            if self._mask is not None:
                flat = flat[self._mask[rows.to(self._mask.device)].reshape(-1).to(flat.device)]
            out.append((k, flat))
        return out

    def end_batch(self) -> None:
        self._mask = None
