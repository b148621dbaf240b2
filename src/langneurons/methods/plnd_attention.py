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

"Remove the column and rerun" gives exactly these numbers (tested against brute force). The rotation
``R_t^T`` is read from the model's own rotary (:meth:`ModelGeometry.rotate` probed at each position) as
``(R_t^T x)[d] = c[t, d] x[d] + s[t, d] x[partner(d)]``, so the removed scores of every coordinate are two fused
multiply-adds on ``[T_chunk, D, S]`` before the softmax. All neurons are computed in parallel; memory is bounded
by ``memory_bytes`` by chunking query positions and coordinates; the chunk halves when an allocation fails, an
input is never skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from langneurons.errors import LangNeuronsError
from langneurons.model.geometry import ModelGeometry

#: ``[T_chunk, D_chunk, S]`` tensors alive at once (the removed scores, their softmax, the squared change)
_COPIES = 3
#: at most this many elements per chunk tensor (cache-sized chunks are faster than the largest that fit)
WORK_ELEMENTS = 1 << 21


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


@dataclass
class Rotation:
    """``(R_t^T x)[d] = c[t, d] x[d] + s[t, d] x[partner[d]]`` for every position ``t`` (``s is None``: no rotary)."""

    c: torch.Tensor | None
    s: torch.Tensor | None
    partner: torch.Tensor | None

    def apply(self, x: torch.Tensor, positions: slice | None = None) -> torch.Tensor:
        """``R^T x`` of ``x[..., n, D]`` at each of its positions (``positions`` of the tables)."""
        if self.s is None:
            return x
        c, s = (self.c, self.s) if positions is None else (self.c[positions], self.s[positions])
        return x * c + x.index_select(-1, self.partner) * s


def rotation(geometry: ModelGeometry, cos: torch.Tensor | None, sin: torch.Tensor | None, dim: int,
             dtype: torch.dtype, device: torch.device) -> Rotation:
    """The :class:`Rotation` of the model's rotary at positions ``cos`` / ``sin`` ``[n, r]``, read from
    ``geometry.rotate`` by two probes (all ones, then ``1..D``) and checked on a random vector."""
    if geometry.rotary_dim is None or cos is None:
        return Rotation(None, None, None)
    partner = torch.tensor([d if geometry.rotary_partner(d) is None else geometry.rotary_partner(d)
                            for d in range(dim)], device=device)
    n = cos.shape[0]
    ones = torch.ones(1, 1, n, dim, dtype=dtype, device=device)
    ramp = torch.arange(1, dim + 1, dtype=dtype, device=device).expand(1, 1, n, dim)
    first, second = (inverse_rotate(x, cos[None], sin[None], geometry)[0, 0] for x in (ones, ramp))
    index = torch.arange(dim, device=device)
    moved = (partner != index).to(dtype)
    gap = (partner - index).to(dtype)
    s = torch.where(moved > 0, (second - first * (index + 1).to(dtype)) / gap.where(moved > 0, torch.ones_like(gap)),
                    torch.zeros_like(first))
    result = Rotation(first - s, s, partner)
    probe = torch.randn(1, 1, n, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device, dtype)
    if not torch.allclose(result.apply(probe[0, 0]), inverse_rotate(probe, cos[None], sin[None], geometry)[0, 0],
                          rtol=1e-4, atol=1e-4):
        raise LangNeuronsError(f"model type {geometry.model_type!r}: its rotary embedding does not pair coordinates "
                               "as geometry.rotary_partner says; Q/K importance cannot follow it")
    return result


def chunk_bytes(rows: int, positions: int, head_dim: int, coords: int, itemsize: int) -> int:
    """Peak bytes of one chunk: the removed scores of ``coords`` coordinates for ``rows`` queries, with scratch."""
    return rows * positions * (_COPIES * coords + _COPIES) * itemsize


def plan_chunks(positions: int, head_dim: int, itemsize: int, memory_bytes: int) -> int:
    """Query rows per chunk so that :func:`chunk_bytes` fits ``memory_bytes`` (all ``head_dim`` coordinates),
    at most :data:`WORK_ELEMENTS` per chunk tensor. Raises when not even one row fits."""
    one = chunk_bytes(1, positions, head_dim, head_dim, itemsize)
    if one > memory_bytes:
        raise LangNeuronsError(f"PLND memory bound of {memory_bytes} bytes is below the minimum of {one} bytes for an "
                               f"input of {positions} tokens (head dim {head_dim}); raise memory_bytes")
    cache = max(1, WORK_ELEMENTS // (positions * head_dim))
    return max(1, min(positions, memory_bytes // one, cache))


def fixed_bytes(heads: int, kv_heads: int, positions: int, head_dim: int, itemsize: int,
                structures: tuple[str, ...]) -> int:
    """Bytes :func:`attention_importance` holds for a whole layer: pre-rotary queries / keys and the rotation."""
    count = (heads if "attn.q" in structures else 0) + (kv_heads if "attn.k" in structures else 0)
    return (count + 2) * positions * head_dim * itemsize


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "memory" in str(error).lower())


def _span(allowed: torch.Tensor) -> tuple[int, int]:
    """First and one-past-last key any of these query rows attends."""
    columns = allowed.any(0).nonzero().flatten()
    return int(columns[0]), int(columns[-1]) + 1


def _cap(scores: torch.Tensor, softcap: float | None) -> torch.Tensor:
    return scores if not softcap else torch.tanh(scores / softcap) * softcap


def attention_importance(inputs: LayerAttention, geometry: ModelGeometry, memory_bytes: int,
                         structures: tuple[str, ...] = ("attn.q", "attn.k", "attn.v")) -> dict[str, torch.Tensor]:
    """Importance of every ``attn.q`` / ``attn.k`` / ``attn.v`` coordinate of one layer for one input.

    Returns ``{structure: float[width]}`` (``H*D`` for q, ``H_kv*D`` for k and v, head-major) in the inputs'
    dtype. ``memory_bytes`` bounds what this function allocates: :func:`fixed_bytes` plus one chunk
    (:func:`chunk_bytes`).
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
    rows_per_chunk = plan_chunks(n, dim, itemsize, memory_bytes - fixed_bytes(heads, kv_heads, n, dim, itemsize, want))
    coords_per_chunk = dim
    group = heads // kv_heads
    squares = {s: torch.zeros(heads if s == "attn.q" else kv_heads, dim, dtype=inputs.query.dtype,
                              device=inputs.query.device) for s in want}
    turn = rotation(geometry, inputs.cos, inputs.sin, dim, inputs.query.dtype, inputs.query.device) if (
        "attn.q" in want or "attn.k" in want) else Rotation(None, None, None)
    q_pre = turn.apply(inputs.query) if "attn.q" in want else None
    k_pre = turn.apply(inputs.key) if "attn.k" in want else None
    for head in range(heads):
        g = head // group
        start = 0
        while start < n:
            stop = min(n, start + rows_per_chunk)
            try:
                parts = _chunk(inputs, turn, head, g, slice(start, stop), coords_per_chunk, q_pre, k_pre, want)
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


def _chunk(inputs: LayerAttention, turn: Rotation, head: int, g: int, rows: slice, coords_per_chunk: int,
           q_pre: torch.Tensor | None, k_pre: torch.Tensor | None, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Squared importances ``{structure: [D]}`` of one head's coordinates from one chunk of query rows.

    Q: ``Z_new[t, d, s] = c_q (Z[t, s] - scaling q~[t, d] (c[t, d] k'[s, d] + s[t, d] k'[s, p(d)]))``;
    K: ``Z_new[t, d, s] = c_k (Z[t, s] - scaling k~[s, d] (c[s, d] q'[t, d] + s[s, d] q'[t, p(d)]))``.
    """
    lo, hi = _span(inputs.allowed[rows])
    keys = slice(lo, hi)
    query, key = inputs.query[head, rows], inputs.key[g, keys]
    raw = query @ key.transpose(0, 1) * inputs.scaling  # [t, s]
    allowed = inputs.allowed[rows, keys]
    probs = torch.softmax(_cap(raw, inputs.softcap).masked_fill(~allowed, -math.inf), dim=-1)
    parts: dict[str, torch.Tensor] = {}
    if "attn.v" in want:
        parts["attn.v"] = (probs @ inputs.value[g, keys]).square().sum(0)
    if q_pre is not None:
        u = q_pre[head, rows] * inputs.scaling  # [t, D]
        own, other = (u, None) if turn.s is None else (u * turn.c[rows], u * turn.s[rows])
        keys_t = key.transpose(0, 1)  # [D, s]
        terms = [(own[:, :, None], keys_t[None])]
        if other is not None:
            terms.append((other[:, :, None], keys_t.index_select(0, turn.partner)[None]))
        scale = None if inputs.query_scale is None else inputs.query_scale[head, rows][:, :, None]
        parts["attn.q"] = _squared_change(raw, allowed, probs, terms, scale, inputs.softcap, coords_per_chunk)
    if k_pre is not None:
        u = k_pre[g, keys].transpose(0, 1) * inputs.scaling  # [D, s]
        own, other = (u, None) if turn.s is None else (u * turn.c[keys].T, u * turn.s[keys].T)
        terms = [(query[:, :, None], own[None])]
        if other is not None:
            terms.append((query.index_select(1, turn.partner)[:, :, None], other[None]))
        scale = None if inputs.key_scale is None else inputs.key_scale[g, keys].transpose(0, 1)[None]
        parts["attn.k"] = _squared_change(raw, allowed, probs, terms, scale, inputs.softcap, coords_per_chunk)
    return parts


def _squared_change(raw: torch.Tensor, allowed: torch.Tensor, probs: torch.Tensor,
                    terms: list[tuple[torch.Tensor, torch.Tensor]], scale: torch.Tensor | None,
                    softcap: float | None, coords_per_chunk: int) -> torch.Tensor:
    """``[D]``: ``sum_{t, s} (softmax_s(scale (raw - sum_j a_j b_j)) - P)^2`` for every coordinate ``d``.

    ``raw``, ``probs`` ``[t, s]``; each term is a pair broadcastable to ``[t, D, s]``; ``scale`` likewise or ``None``.
    """
    dim = max(a.shape[1] for pair in terms for a in pair)
    out = torch.empty(dim, dtype=raw.dtype, device=raw.device)
    blocked = ~allowed[:, None, :]
    for c in range(0, dim, coords_per_chunk):
        part = slice(c, min(dim, c + coords_per_chunk))
        (a, b), rest = terms[0], terms[1:]
        change = torch.addcmul(raw[:, None, :], a[:, part], b[:, part], value=-1.0)
        for a, b in rest:
            change.addcmul_(a[:, part], b[:, part], value=-1.0)
        if scale is not None:
            change.mul_(scale[:, part])
        if softcap:
            change = torch.tanh(change.div_(softcap)).mul_(softcap)
        change.masked_fill_(blocked, -math.inf)
        changed = torch.softmax(change, dim=-1)
        del change
        out[part] = changed.sub_(probs[:, None, :]).square_().sum(dim=(0, 2))
    return out
