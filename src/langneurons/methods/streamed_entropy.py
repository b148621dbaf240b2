"""The entropy selection of :mod:`langneurons.methods.entropy`, streamed over chunks of a pooled vector.

For selections over far more items than fit in memory (every weight entry of a large model for the
parameter-variation baseline), the values ``v[language, item]`` are produced chunk by chunk (a
callable returning a fresh iterator per pass) and never held all at once. The result is exactly what
:func:`~langneurons.methods.entropy.entropy_select` gives on ``v[:, None, :]``:

* the two percentiles (``filter_rate``, ``activation_bar_ratio``: the ``k``-th smallest of all
  ``K x N`` values) by an exact radix selection on the IEEE-754 bit patterns of the (non-negative)
  float64 values: one histogram pass on the top bits, then the values of the one bucket holding the
  ``k``-th are collected (or refined by further histogram passes when that bucket is huge);
* one more pass keeps, per chunk, the lowest-entropy items that pass the filter and merges them into
  a pool of at most the budget, ordered by (entropy, position) as the in-memory sort.

Memory: one chunk, the histogram (2^21 counts) and the pool (budget x (16 + K) bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Iterable

import torch

from langneurons.errors import LangNeuronsError
from langneurons.methods.entropy import entropy_select, language_entropy

Chunks = Callable[[], Iterable[torch.Tensor]]
_DIGIT_BITS = 21


@dataclass
class PooledSelection:
    """An entropy selection over a pooled vector of ``N`` items (any number of chunks)."""

    selected: torch.Tensor  # long[n] pooled indices, in selection order (entropy, then position)
    entropy: torch.Tensor  # float64[n] entropy of each selected item
    membership: torch.Tensor  # bool[K, n] languages each selected item is assigned to
    filter_value: float
    activation_bar: float
    total: int  # N
    passing: int  # items with some value above the filter


def _bits(values: torch.Tensor) -> torch.Tensor:
    return values.double().contiguous().view(torch.int64)


def streamed_kth_values(chunks: Chunks, ranks: list[int], collect_limit: int = 1 << 24) -> list[float]:
    """The ``k``-th smallest (1-based ``ranks``) of all non-negative values the chunks yield, exactly."""
    states = {k: {"rank": k, "prefix": 0, "shift": 63, "count": None, "value": None} for k in set(ranks)}
    while any(state["value"] is None for state in states.values()):
        pending = [s for s in states.values() if s["value"] is None]
        collected: dict[int, list[torch.Tensor]] = {id(s): [] for s in pending}
        histograms: dict[int, torch.Tensor] = {}
        for chunk in chunks():
            bits = _bits(chunk).flatten()
            if bits.numel() and int(bits.min()) < 0:
                raise LangNeuronsError("streamed selection needs non-negative values")
            for state in pending:
                inside = bits[(bits >> state["shift"]) == state["prefix"]]
                if state["count"] is not None and state["count"] <= collect_limit:
                    collected[id(state)].append(inside)
                    continue
                low = max(state["shift"] - _DIGIT_BITS, 0)
                digits = (inside >> low) & ((1 << (state["shift"] - low)) - 1)
                counts = torch.bincount(digits, minlength=1 << (state["shift"] - low))
                histograms[id(state)] = histograms[id(state)] + counts if id(state) in histograms else counts
        for state in pending:
            if id(state) not in histograms:
                values = torch.cat(collected[id(state)])
                state["value"] = float(values.view(torch.float64).kthvalue(state["rank"]).values)
                continue
            cumulative = histograms[id(state)].cumsum(0)
            digit = int(torch.searchsorted(cumulative, torch.tensor(state["rank"])))
            low = max(state["shift"] - _DIGIT_BITS, 0)
            state["rank"] -= int(cumulative[digit - 1]) if digit else 0
            state["prefix"] = (state["prefix"] << (state["shift"] - low)) | digit
            state["shift"], state["count"] = low, int(histograms[id(state)][digit])
            if low == 0:
                state["value"] = float(torch.tensor([state["prefix"]], dtype=torch.int64).view(torch.float64))
    return [states[k]["value"] for k in ranks]


def _rank(total: int, ratio: float) -> int:
    """Same ``k`` as :func:`langneurons.methods.entropy.kth_percentile_value`."""
    return min(max(round(total * ratio), 1), total)


def streamed_entropy_select(chunks: Chunks, top_rate: float, filter_rate: float, activation_bar_ratio: float,
                            collect_limit: int = 1 << 24, shape: tuple[int, int] | None = None) -> PooledSelection:
    """:func:`entropy_select` on the concatenation (along items) of the chunks ``v[K, n_c]``, streamed.

    ``shape`` is ``(K, N)`` when known (else one extra pass counts the items).
    """
    if shape is None:
        counted = [tuple(chunk.shape) for chunk in chunks()]
        shape = (counted[0][0] if counted else 0, sum(n for _, n in counted))
    num_langs, total = shape
    if total == 0 or num_langs == 0:
        raise LangNeuronsError("nothing to select from: no values")
    filter_value, bar = streamed_kth_values(
        chunks, [_rank(total * num_langs, filter_rate), _rank(total * num_langs, activation_bar_ratio)], collect_limit)
    budget = round(total * top_rate)
    pool_index = torch.zeros(0, dtype=torch.long)
    pool_entropy = torch.zeros(0, dtype=torch.float64)
    pool_member = torch.zeros(num_langs, 0, dtype=torch.bool)
    offset, passing = 0, 0
    for chunk in chunks():
        values = chunk.double()
        if values.shape[0] != num_langs:
            raise LangNeuronsError(f"a chunk has {values.shape[0]} languages, expected {num_langs}")
        candidates = (values > filter_value).any(0).nonzero().flatten()
        passing += int(candidates.numel())
        entropy = language_entropy(values[:, None, candidates]).flatten()
        index = torch.cat([pool_index, candidates + offset])  # ascending: the pool precedes this chunk
        entropy = torch.cat([pool_entropy, entropy])
        member = torch.cat([pool_member, values[:, candidates] > bar], dim=1)
        keep = torch.sort(torch.sort(entropy, stable=True).indices[:budget]).values  # back in position order
        pool_index, pool_entropy, pool_member = index[keep], entropy[keep], member[:, keep]
        offset += values.shape[1]
    if offset != total:
        raise LangNeuronsError(f"the chunks hold {offset} items, expected {total}")
    order = torch.sort(pool_entropy, stable=True).indices
    return PooledSelection(pool_index[order], pool_entropy[order], pool_member[:, order], filter_value, bar,
                           total, passing)


def pooled_entropy_select(values: torch.Tensor, top_rate: float, filter_rate: float,
                          activation_bar_ratio: float) -> PooledSelection:
    """The in-memory version: :func:`entropy_select` on ``values[K, N]`` seen as one layer of ``N`` items."""
    selection = entropy_select(values[:, None, :], top_rate, filter_rate, activation_bar_ratio)
    selected = selection.selected
    passing = int(torch.isfinite(selection.entropy).sum())
    return PooledSelection(selected, selection.entropy.flatten()[selected], selection.membership[:, 0, selected],
                           selection.filter_value, selection.activation_bar, int(values.shape[1]), passing)
