"""Padded batches of token rows of different lengths, with the right positions on either padding side.

Every path that runs rows of different lengths through a model (parallel corpora, last-token work, task
scoring, generation) pads them here:

* :func:`pad_rows` right- or left-aligns rows into ``input_ids[B, T]`` with ``attention_mask[B, T]``;
* :func:`position_ids` gives each real token its position counted from the row's first real token
  (``cumsum(mask) - 1``; padding gets 0), so families with absolute positions (GPT-2, OPT) see the same
  positions under left padding as unpadded (rotary families are shift-invariant, but get them too);
* :func:`last_index` is the index of each row's last real token, right for both sides (``mask.sum - 1``
  is only right under right padding);
* :func:`fit_rows` cuts rows longer than a window, from the START for last-token work (the end is what
  counts there) or from the end otherwise, and says how many were cut;
* :func:`forward_kwargs` adds ``position_ids`` to a forward call when the model's forward accepts them.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from langneurons.errors import LangNeuronsError

Side = Literal["right", "left"]


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, side: Side = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids long[B, T], attention_mask long[B, T])`` of ``rows`` padded to the longest on ``side``."""
    if side not in ("right", "left"):
        raise LangNeuronsError(f"padding side must be 'right' or 'left', got {side!r}")
    if not rows:
        raise LangNeuronsError("no rows to pad")
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(0, len(row)) if side == "right" else slice(length - len(row), length)
        input_ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    return input_ids, mask


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """``long[B, T]``: position of each real token from its row's first real token; 0 on padding."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp_min(0) * mask


def last_index(attention_mask: torch.Tensor | None, seq_len: int | None = None, batch_size: int | None = None
               ) -> torch.Tensor:
    """``long[B]``: index of each row's last real token (left or right padding); ``T - 1`` without a mask."""
    if attention_mask is None:
        if seq_len is None or batch_size is None:
            raise ValueError("without a mask, give seq_len and batch_size")
        return torch.full((batch_size,), seq_len - 1, dtype=torch.long)
    mask = attention_mask.bool()
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask, positions, torch.full_like(positions, -1)).max(-1).values.clamp_min(0)


def fit_rows(rows: Sequence[Sequence[int]], max_length: int | None, keep: Literal["start", "end"] = "start"
             ) -> tuple[list[list[int]], int]:
    """Rows cut to ``max_length`` tokens and how many were cut.

    ``keep="end"`` keeps each row's LAST ``max_length`` tokens (cut from the start: last-token work);
    ``keep="start"`` keeps the first ones.
    """
    if max_length is None:
        return [list(row) for row in rows], 0
    if max_length < 1:
        raise LangNeuronsError(f"the maximum length must be at least 1, got {max_length}")
    cut, out = 0, []
    for row in rows:
        row = list(row)
        if len(row) > max_length:
            cut += 1
            row = row[-max_length:] if keep == "end" else row[:max_length]
        out.append(row)
    return out, cut


def accepts_position_ids(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes a ``position_ids`` argument (BLOOM's does not: ALiBi)."""
    try:
        parameters = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "position_ids" in parameters


def forward_kwargs(module: nn.Module, attention_mask: torch.Tensor | None) -> dict[str, Any]:
    """``attention_mask`` (and ``position_ids`` from it, when the forward accepts them) for a padded batch."""
    if attention_mask is None:
        return {}
    kwargs: dict[str, Any] = {"attention_mask": attention_mask}
    if accepts_position_ids(module):
        kwargs["position_ids"] = position_ids(attention_mask)
    return kwargs
