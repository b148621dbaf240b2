"""Per-item statistics of a Sharing Matters pass (fed by the one recorder, next to last-token pooled vectors).

* :class:`DeadTokens`: for every input (language ``k``, item ``i``) and layer, the number of neurons that stay
  at or below the threshold at EVERY counted token of the input (the paper's Figure 6: "a neuron is counted when
  it stays inactive for every token of one test input sequence"), and, per item and layer, the number of
  neurons that do so in every language of the item. ``int32[K, N, L]`` and ``int32[N, L]``: counts only.
* :class:`LastHidden`: the last layer's output (the residual stream before the final norm) at each input's last
  token, ``float32[K, N, hidden]``, for effective scores through the final norm.

Both need the K translations of an item in one batch (``parallel_batches`` keeps them together) and the
batch's ``sample_ids`` (the item of each row) and ``languages``.
"""

from __future__ import annotations

from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.stats.base import BatchInfo, as_rows


class _PerItemRows:
    """Row bookkeeping: each row's language index and item id, and the rows of each item of the batch."""

    languages: list[str]

    def _begin(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None:
        if batch.sample_ids is None:
            raise LangNeuronsError(f"{type(self).__name__} needs sample ids (the item of each row)")
        rows = batch.row_languages(batch_size)
        unknown = [lang for lang in dict.fromkeys(rows) if lang not in self.languages]
        if unknown:
            raise LangNeuronsError(f"language {unknown[0]!r} is not one of {self.languages}")
        self._batch, self._shape = batch, (batch_size, seq_len)
        self._lang = torch.tensor([self.languages.index(lang) for lang in rows], dtype=torch.long)
        self._items = batch.sample_ids.cpu().long()

    def end_batch(self) -> None:
        self._batch = None


class DeadTokens(_PerItemRows):
    """Counts of neurons inactive (``<= threshold``) at every counted token (see the module docstring)."""

    def __init__(self, languages: list[str], num_items: int, num_layers: int, threshold: float = 0.0,
                 site: str = "ffn.act") -> None:
        self.languages, self.threshold = list(languages), float(threshold)
        self.sites = (site,)
        self.dead = torch.zeros(len(languages), num_items, num_layers, dtype=torch.int32)
        self.dead_every_language = torch.zeros(num_items, num_layers, dtype=torch.int32)
        self.seen = torch.zeros(len(languages), num_items, dtype=torch.bool)
        self.width: int | None = None

    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None:
        self._begin(batch, batch_size, seq_len)
        self._groups = []
        for item in self._items.unique().tolist():
            rows = (self._items == item).nonzero().flatten()
            if len(rows) != len(self.languages) or set(self._lang[rows].tolist()) != set(range(len(self.languages))):
                raise LangNeuronsError(f"item {item} is not in one batch with all its {len(self.languages)} languages")
            self._groups.append((item, rows))
        self.seen[self._lang, self._items] = True

    def update(self, layer: int, activations: torch.Tensor, site: str | None = None) -> None:
        acts = as_rows(activations, *self._shape)
        mask = self._batch.token_mask
        dead = acts <= self.threshold
        if mask is not None:
            dead = dead | ~mask.to(acts.device).unsqueeze(-1)
        dead = dead.all(1)  # [B, W]: inactive at every counted token
        self.width = int(dead.shape[-1])
        self.dead[self._lang, self._items, layer] = dead.sum(-1).to(torch.int32).cpu()
        for item, rows in self._groups:
            self.dead_every_language[item, layer] = int(dead[rows.to(dead.device)].all(0).sum())


class LastHidden(_PerItemRows):
    """The last layer's output at each input's last token: ``float32[K, N, hidden]``."""

    def __init__(self, languages: list[str], num_items: int, num_layers: int, hidden_size: int,
                 site: str = "layer.out") -> None:
        self.languages, self.last_layer = list(languages), num_layers - 1
        self.sites = (site,)
        self.hidden = torch.zeros(len(languages), num_items, hidden_size, dtype=torch.float32)

    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None:
        self._begin(batch, batch_size, seq_len)

    def update(self, layer: int, activations: Any, site: str | None = None) -> None:
        if layer != self.last_layer:
            return
        hidden = activations[0] if isinstance(activations, tuple) else activations
        hidden = as_rows(hidden, *self._shape)
        size, length = hidden.shape[:2]
        last = self._batch.last_positions(size, length).to(hidden.device)
        self.hidden[self._lang, self._items] = hidden[torch.arange(size, device=hidden.device), last].float().cpu()
