"""PLND importance of the attention neurons of one input and one layer (Zhao et al. 2024, eqs. 6-10), exact.

The neurons are the coordinates of the ``attn.q``, ``attn.k`` and ``attn.v`` sites: column ``k`` of
``W_Q`` / ``W_K`` / ``W_V`` (with its bias), i.e. coordinate ``(head, i)`` of the pre-rotary projection
output. For query head ``h`` reading key/value head ``g = h // (H / H_kv)``, positions ``t`` (query) and
``s`` (key), post-rotary ``q'_t = R_t q~_t`` and ``k'_s = R_s k~_s``, scores
``Z[t, s] = scaling * q'_t . k'_s`` (soft-capped where the family does), ``P = softmax(Z + mask)``:

* **V**: removing value coordinate ``(g, i)`` changes the heads' outputs ``O_h = P_h V_g`` (before the
  output projection) only in column ``i``, by ``P_h V_g[:, i]``; the importance is the Frobenius norm of
  the change over every query head of group ``g``: ``sqrt(sum_{h in g} sum_t O_h[t, i]^2)``.
* **Q** (eqs. 7-8, 10): removing coordinate ``(h, i)`` of the pre-rotary query removes from the unscaled
  score ``Delta_i[t, s] = q~_t[i] * (R_t^T k'_s)[i]`` (rotations are orthogonal:
  ``q'_t . k'_s = q~_t . R_t^T k'_s``; without rotary ``(R_t^T k'_s)[i] = k_s[i]`` and this is eq. 7's
  ``W_Q(x)[:, k] W_K(x)[k, :]``). The importance is
  ``|| softmax(Z - scaling Delta_i + mask) - softmax(Z + mask) ||_F`` over ``(t, s)``, the causal (and any
  sliding-window / padding) mask included.
* **K**: removing coordinate ``(g, i)`` of the pre-rotary key removes ``k~_s[i] * (R_s^T q'_t)[i]``
  from every score of every query head of group ``g``; the importance is the Frobenius norm over
  ``(h in g, t, s)``.
* **q/k-norm** (Qwen3, Gemma-3: an RMS norm over each head between the site and rotary): removing
  pre-norm coordinate ``i`` of ``x`` rescales the normalised head by
  ``c_i = sqrt(mean(x^2) + eps) / sqrt(mean(x^2) - x_i^2 / D + eps)``, so the new score is
  ``c_i * (Z_raw - scaling Delta_i)`` with ``Delta_i`` from the post-norm ``q~``. A norm over all heads
  (OLMo-2) couples every head; it is refused here (FFN and V importance are unaffected).

"Remove the column and rerun" gives exactly these numbers (tested against brute force). All neurons are
computed in parallel; memory is bounded by ``memory_bytes`` by chunking query positions and coordinates
(``[T_chunk, D_chunk, S]`` at a time); the chunk halves when an allocation fails, an input is never
skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from langneurons.errors import LangNeuronsError
from langneurons.model.geometry import ModelGeometry

#: ``[T_chunk, S, D]`` tensors alive at once while the rotated operand is built (its temporaries)
_ROTATE_COPIES = 5
#: ``[T_chunk, S, D_chunk]`` tensors alive at once while the removed scores are softmaxed (scores, softmax, scratch)
_CHANGE_COPIES = 3


@dataclass
class LayerAttention:
    """One input's attention at one layer, unpadded (``n`` real positions), in the compute dtype.

    ``query`` ``[H, n, D]`` and ``key`` ``[H_kv, n, D]`` as the attention function receives them (after
    rotary and q/k-norm), ``value`` ``[H_kv, n, D]``, ``allowed`` ``bool[n, n]`` (query ``t`` attends key
    ``s``), ``cos`` / ``sin`` ``[n, rotary_dim]`` or ``None``, ``query_scale`` / ``key_scale``
    ``[heads, n, D]``: the q/k-norm factor ``c_i`` of removing each pre-norm coordinate (``None``: no norm).
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    allowed: torch.Tensor
    scaling: float
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None
    softcap: float | None = None
    query_scale: torch.Tensor | None = None
    key_scale: torch.Tensor | None = None


def norm_scale(pre_norm: torch.Tensor, eps: float) -> torch.Tensor:
    """``[..., D]``: ``c_i = sqrt(mean(x^2) + eps) / sqrt(mean(x^2) - x_i^2 / D + eps)`` of an RMS norm over ``D``."""
    x2 = pre_norm.square()
    width = x2.shape[-1]
    mean = x2.mean(-1, keepdim=True)
    return ((mean + eps) / ((mean - x2 / width).clamp_min(0) + eps)).sqrt()


def inverse_rotate(x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                   geometry: ModelGeometry) -> torch.Tensor:
    """``R^T x``: undo the rotary embedding (``geometry.rotate`` with the angle negated); no rotary: ``x``."""
    if geometry.rotary_dim is None or cos is None:
        return x
    return geometry.rotate(x, cos, -sin)


def chunk_bytes(rows: int, positions: int, head_dim: int, coords: int, itemsize: int) -> int:
    """Peak bytes of one chunk: the rotated operand's construction, or the operand plus the removed scores."""
    per_row = max(_ROTATE_COPIES * head_dim, head_dim + _CHANGE_COPIES * coords)
    return rows * positions * per_row * itemsize


def plan_chunks(positions: int, head_dim: int, itemsize: int, memory_bytes: int) -> int:
    """Query rows per chunk so that :func:`chunk_bytes` fits ``memory_bytes`` (all ``head_dim`` coordinates).

    Raises when not even one row fits (the bound is below the minimum for an input of ``positions`` tokens).
    """
    one = chunk_bytes(1, positions, head_dim, head_dim, itemsize)
    if one > memory_bytes:
        raise LangNeuronsError(f"PLND memory bound of {memory_bytes} bytes is below the minimum of {one} bytes for an "
                               f"input of {positions} tokens (head dim {head_dim}); raise memory_bytes")
    return max(1, min(positions, memory_bytes // one))


def fixed_bytes(heads: int, kv_heads: int, positions: int, head_dim: int, itemsize: int,
                structures: tuple[str, ...]) -> int:
    """Bytes :func:`attention_importance` holds for a whole layer: the pre-rotary queries and keys it rebuilds."""
    count = (heads if "attn.q" in structures else 0) + (kv_heads if "attn.k" in structures else 0)
    return count * positions * head_dim * itemsize


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "memory" in str(error).lower())


def _span(allowed: torch.Tensor) -> tuple[int, int]:
    """First and one-past-last key any of these query rows attends."""
    columns = allowed.any(0).nonzero().flatten()
    return int(columns[0]), int(columns[-1]) + 1


def _scores(inputs: LayerAttention, head: int, group: int, rows: slice, keys: slice) -> tuple[torch.Tensor, ...]:
    """Raw scaled scores ``[t, s]`` of ``head`` for query ``rows`` / key ``keys``, the mask and the probabilities."""
    raw = inputs.query[head, rows] @ inputs.key[group, keys].transpose(0, 1) * inputs.scaling
    allowed = inputs.allowed[rows, keys]
    probs = torch.softmax(_cap(raw, inputs.softcap).masked_fill(~allowed, -math.inf), dim=-1)
    return raw, allowed, probs


def _cap(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    return scores if not softcap else torch.tanh(scores / softcap) * softcap


def _removed_change(raw: torch.Tensor, allowed: torch.Tensor, probs: torch.Tensor, coefficient: torch.Tensor,
                    operand: torch.Tensor, scale: torch.Tensor | None, scaling: float, softcap: float | None,
                    coords: slice) -> torch.Tensor:
    """``[coords]``: sum over ``(t, s)`` of ``(softmax(c (Z_raw - scaling u o)) - P)^2`` for each removed coordinate.

    ``raw``, ``probs`` ``[t, s]``; ``coefficient`` broadcastable to ``[t, D, s]`` (the removed coordinate's value),
    ``operand`` ``[t, D, s]`` (the other side, rotated into the removed coordinate's frame), ``scale`` (q/k-norm)
    broadcastable to ``[t, D, s]`` or ``None``.
    """
    change = operand[:, coords].mul(coefficient[:, coords]).mul_(-scaling).add_(raw[:, None, :])
    if scale is not None:
        change.mul_(scale[:, coords])
    if softcap:
        change = torch.tanh(change.div_(softcap)).mul_(softcap)
    change.masked_fill_(~allowed[:, None, :], -math.inf)
    changed = torch.softmax(change, dim=-1)
    del change
    return changed.sub_(probs[:, None, :]).square_().sum(dim=(0, 2))


def attention_importance(inputs: LayerAttention, geometry: ModelGeometry, memory_bytes: int,
                         structures: tuple[str, ...] = ("attn.q", "attn.k", "attn.v")) -> dict[str, torch.Tensor]:
    """Importance of every ``attn.q`` / ``attn.k`` / ``attn.v`` coordinate of one layer for one input.

    Returns ``{structure: float[width]}`` (``H*D`` for q, ``H_kv*D`` for k and v, head-major) in the inputs'
    dtype. ``memory_bytes`` bounds what this function allocates: the pre-rotary queries / keys
    (:func:`fixed_bytes`) plus one chunk (:func:`chunk_bytes`).
    """
    heads, n, dim = inputs.query.shape
    kv_heads = inputs.key.shape[0]
    if inputs.key.shape[1] != n or inputs.value.shape[1] != n:
        raise LangNeuronsError(f"attention of {n} queries over {inputs.key.shape[1]} keys: PLND needs one input "
                               "without a cache")
    if not bool(inputs.allowed.any(-1).all()):
        raise LangNeuronsError("a query position attends no key; the input's mask is broken")
    want = tuple(s for s in ("attn.q", "attn.k", "attn.v") if s in structures)
    itemsize = inputs.query.element_size()
    budget = memory_bytes - fixed_bytes(heads, kv_heads, n, dim, itemsize, want)
    rows_per_chunk = plan_chunks(n, dim, itemsize, budget)
    coords_per_chunk = dim
    group = heads // kv_heads
    squares = {s: torch.zeros(heads if s == "attn.q" else kv_heads, dim, dtype=inputs.query.dtype,
                              device=inputs.query.device) for s in want}
    cos, sin = _angles(inputs.cos), _angles(inputs.sin)
    q_pre = inverse_rotate(inputs.query[None], cos, sin, geometry)[0] if "attn.q" in want else None
    k_pre = inverse_rotate(inputs.key[None], cos, sin, geometry)[0] if "attn.k" in want else None
    for head in range(heads):
        g = head // group
        start = 0
        while start < n:
            stop = min(n, start + rows_per_chunk)
            try:
                parts = _chunk(inputs, geometry, head, g, slice(start, stop), coords_per_chunk, q_pre, k_pre, want)
            except Exception as error:  # noqa: BLE001 - only allocation failures are retried, with a smaller chunk
                if not _is_oom(error):
                    raise
                if rows_per_chunk > 1:
                    rows_per_chunk //= 2
                elif coords_per_chunk > 1:
                    coords_per_chunk //= 2
                else:
                    raise LangNeuronsError(f"out of memory in PLND even with one query position and one "
                                           f"coordinate per chunk ({n} tokens)") from None
                continue
            for structure, values in parts.items():
                squares[structure][head if structure == "attn.q" else g] += values
            start = stop
    return {s: v.sqrt().flatten() for s, v in squares.items()}


def _angles(table: torch.Tensor | None) -> torch.Tensor | None:
    """``[n, r]`` rotary table as ``[1, n, r]`` (the batch axis ``geometry.rotate`` expects)."""
    return None if table is None else table[None]


def _chunk(inputs: LayerAttention, geometry: ModelGeometry, head: int, g: int, rows: slice, coords_per_chunk: int,
           q_pre: torch.Tensor | None, k_pre: torch.Tensor | None, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Squared importances ``{structure: [D]}`` of one head's coordinates from one chunk of query rows."""
    lo, hi = _span(inputs.allowed[rows])
    keys = slice(lo, hi)
    raw, allowed, probs = _scores(inputs, head, g, rows, keys)
    dim = inputs.query.shape[-1]
    cos, sin = inputs.cos, inputs.sin
    parts: dict[str, torch.Tensor] = {}
    if "attn.v" in want:
        parts["attn.v"] = (probs @ inputs.value[g, keys]).square().sum(0)
    if q_pre is not None:
        # R_t^T k'_s for every query row t of the chunk: keys rotated back by each query's angle -> [t, s, D]
        keys_t = inputs.key[g, keys][None, None].expand(raw.shape[0], 1, -1, -1)
        operand = inverse_rotate(keys_t, None if cos is None else cos[rows][:, None],
                                 None if sin is None else sin[rows][:, None], geometry)[:, 0]
        operand = operand.transpose(1, 2).contiguous()  # [t, D, s]
        coefficient = q_pre[head, rows][:, :, None]  # [t, D, 1]
        scale = None if inputs.query_scale is None else inputs.query_scale[head, rows][:, :, None]
        parts["attn.q"] = _by_coordinates(raw, allowed, probs, coefficient, operand, scale, inputs, coords_per_chunk)
        del operand
    if k_pre is not None:
        # R_s^T q'_t for every key s: the chunk's queries rotated back by each key's angle -> [t, s, D]
        queries = inputs.query[head, rows][None, :, None].expand(1, -1, hi - lo, -1)
        operand = inverse_rotate(queries, None if cos is None else cos[None, keys],
                                 None if sin is None else sin[None, keys], geometry)[0]
        operand = operand.transpose(1, 2).contiguous()  # [t, D, s]
        coefficient = k_pre[g, keys].transpose(0, 1)[None]  # [1, D, s]
        scale = None if inputs.key_scale is None else inputs.key_scale[g, keys].transpose(0, 1)[None]
        parts["attn.k"] = _by_coordinates(raw, allowed, probs, coefficient, operand, scale, inputs, coords_per_chunk)
    return parts


def _by_coordinates(raw: torch.Tensor, allowed: torch.Tensor, probs: torch.Tensor, coefficient: torch.Tensor,
                    operand: torch.Tensor, scale: torch.Tensor | None, inputs: LayerAttention,
                    coords_per_chunk: int) -> torch.Tensor:
    dim = operand.shape[1]
    out = torch.empty(dim, dtype=raw.dtype, device=raw.device)
    for c in range(0, dim, coords_per_chunk):
        part = slice(c, min(dim, c + coords_per_chunk))
        out[part] = _removed_change(raw, allowed, probs, coefficient, operand, scale, inputs.scaling, inputs.softcap,
                                    part)
    return out
