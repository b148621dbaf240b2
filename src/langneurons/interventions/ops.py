"""The low level of neuron edits: one operation on one site tensor, and where in the sequence it applies.

An :class:`Op` edits the neuron vector ``x[..., width]`` of one layer at one site:

* which neurons: ``ids`` (``long[n]``, the same neurons in every row: the common, cheap case, applied with
  ``index_copy``) or ``mask`` (``bool[B, width]``, row ``i`` has its own neurons, applied with ``torch.where``);
* what: ``zero``, ``set`` (``x := v``), ``raise`` (``x := max(x, v)``), ``scale`` (``x := x * v``), ``add``
  (``x := x + v``);
* values ``v`` (float64 master copy, cast once per device and dtype): a scalar, per neuron (``[n]`` with ids,
  ``[width]`` with a mask) or per row and neuron (``[B, n]`` / ``[B, width]``);
* positions: ``all``, ``last`` (each row's last real token of the forward call, from its attention mask, left
  or right padding), ``prompt`` (every position of a call that does not continue a KV cache: a plain forward
  or the first forward of ``generate``), ``generated`` (every position of a call that continues a KV cache:
  the later forwards of ``generate``, which hold only the new tokens).

:class:`PositionState` learns, per forward call, the attention mask and whether the call continues a cache,
from a forward pre-hook on the model's body (``model.base_model``), so it sees calls through the top module
and direct calls of the body alike.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from langneurons.data.batching import last_index
from langneurons.errors import LangNeuronsError

KINDS = ("zero", "set", "raise", "scale", "add")
POSITIONS = ("all", "last", "prompt", "generated")


@dataclass
class Op:
    """One edit of one layer's neuron vector at one site (see the module docstring)."""

    kind: str
    positions: str = "all"
    ids: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    values: Callable[[], torch.Tensor] | torch.Tensor | None = None
    rows: int | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def per_row(self) -> bool:
        return self.rows is not None

    def master_values(self) -> torch.Tensor | None:
        if callable(self.values):
            self.values = self.values()
        return self.values

    def prepared(self, batch: int, device: torch.device, dtype: torch.dtype):
        """``(ids, mask, values)`` on ``device`` / ``dtype`` for a batch of ``batch`` rows (cached)."""
        key = (batch if self.rows is not None else None, device, dtype)
        if key not in self._cache:
            values = self.master_values()
            mask = self.mask
            if self.rows is not None and batch != self.rows:
                if batch % self.rows:
                    raise LangNeuronsError(f"a per-row edit for {self.rows} rows met a batch of {batch} rows")
                # generate() expands each input into consecutive rows (beams, num_return_sequences)
                repeat = batch // self.rows
                mask = None if mask is None else mask.repeat_interleave(repeat, 0)
                if values is not None and values.dim() == 2:
                    values = values.repeat_interleave(repeat, 0)
            self._cache[key] = (
                None if self.ids is None else self.ids.to(device),
                None if mask is None else mask.to(device),
                None if values is None else values.to(device, dtype),
            )
        return self._cache[key]


def stack_module(model: nn.Module) -> nn.Module:
    """The parent of the decoder-layer list (falls back to the base model or the model itself)."""
    from langneurons.model.architectures import get_submodule, resolve_architecture

    try:
        path = resolve_architecture(model).layers
    except LangNeuronsError:
        path = ""
    parent = get_submodule(model, path.rpartition(".")[0]) if "." in path else None
    return parent if parent is not None else (getattr(model, "base_model", None) or model)


def _cache_length(cache: Any) -> int:
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    if isinstance(cache, (tuple, list)) and cache and cache[0] is not None and len(cache[0]):
        return int(cache[0][0].shape[-2])
    return 0


class PositionState:
    """Per forward call: the 2D attention mask (past + current tokens) and whether a KV cache is continued."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.shape: tuple[int, int] | None = None  # (batch, positions) of the current forward
        self.cached = self.opaque = False
        self._masks: dict = {}
        self._signature: inspect.Signature | None = None

    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if args:
            if self._signature is None:
                self._signature = inspect.signature(module.forward)
            try:
                kwargs = {**self._signature.bind_partial(*args).arguments, **kwargs}
            except TypeError:
                pass
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids")
        ids = kwargs.get("inputs_embeds") if ids is None else ids
        self.shape = tuple(ids.shape[:2]) if isinstance(ids, torch.Tensor) and ids.dim() >= 2 else None
        self.mask = mask if isinstance(mask, torch.Tensor) and mask.dim() == 2 else None
        self.opaque = mask is not None and self.mask is None  # a 4D / dict mask: no last token to read
        self.cached = _cache_length(cache) > 0
        self._masks = {}

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.mask, self.shape, self.cached, self.opaque, self._masks = None, None, False, False, {}

    def attach(self, model: nn.Module) -> list:
        """Hook the module that runs the decoder layers (it gets the ids, the 2D mask and the cache in every
        family: ``model.model`` for Llama, ``model.model.decoder`` for OPT, whose top module skips OPTModel)."""
        body = stack_module(model)
        return [body.register_forward_pre_hook(self.pre_hook, with_kwargs=True),
                body.register_forward_hook(self.post_hook, with_kwargs=True)]

    def positions(self, which: str, x: torch.Tensor) -> torch.Tensor | bool | None:
        """``None`` (every position), ``False`` (none) or ``bool[B, T]`` for ``x[B, T, W]``."""
        if which == "all":
            return None
        if which == "prompt":
            return False if self.cached else None
        if which == "generated":
            return None if self.cached else False
        batch, length = x.shape[0], x.shape[1]
        key = (batch, length, x.device)
        if key not in self._masks:
            mask = self.mask
            if self.opaque and length > 1:
                raise LangNeuronsError("positions='last' needs a 2D attention mask [batch, positions]; "
                                       "this forward got another kind of mask")
            if mask is not None and (mask.shape[0] != batch or mask.shape[1] < length):
                raise LangNeuronsError(f"positions='last': the attention mask {tuple(mask.shape)} does not fit "
                                       f"a site tensor of {batch} rows x {length} positions")
            current = None if mask is None else mask[:, -length:]
            last = last_index(current, seq_len=length, batch_size=batch).to(x.device)
            chosen = torch.zeros(batch, length, dtype=torch.bool, device=x.device)
            chosen[torch.arange(batch, device=x.device), last] = True
            self._masks[key] = chosen
        return self._masks[key]


def _new(kind: str, old: torch.Tensor, values: torch.Tensor | None) -> torch.Tensor:
    if kind == "zero":
        return torch.zeros_like(old)
    if kind == "set":
        return values.expand_as(old)
    if kind == "raise":
        return torch.maximum(old, values)
    if kind == "scale":
        return old * values
    if kind == "add":
        return old + values
    raise LangNeuronsError(f"unknown edit kind {kind!r}; known: {', '.join(KINDS)}")


def apply_op(op: Op, x: torch.Tensor, state: PositionState | None) -> torch.Tensor:
    """``x[..., width]`` with ``op`` applied (a new tensor; ``x`` itself is not written)."""
    shape = getattr(state, "shape", None)
    if x.dim() == 2 and shape is not None and x.shape[0] == shape[0] * shape[1] and (
            op.per_row or op.positions == "last"):  # a flattened [B * T, W] site tensor (OPT's FFN)
        return apply_op(op, x.view(*shape, x.shape[-1]), state).view(x.shape)
    if (op.per_row or op.positions == "last") and x.dim() != 3:
        raise LangNeuronsError(f"per-row edits and positions='last' need a site tensor [batch, positions, width], "
                               f"got {tuple(x.shape)}")
    where = None if op.positions == "all" else (state or PositionState()).positions(op.positions, x)
    if where is False:
        return x
    ids, mask, values = op.prepared(x.shape[0], x.device, x.dtype)
    if values is not None and values.dim() == 2:
        values = values.unsqueeze(1)  # [B, 1, n | W]: the same at every position of a row
    if ids is not None:
        if where is None and op.kind in ("zero", "set") and (values is None or values.dim() <= 1):
            source = torch.zeros((), dtype=x.dtype, device=x.device) if values is None else values
            return x.index_copy(-1, ids, source.expand(*x.shape[:-1], ids.numel()))  # the hot path
        old = x.index_select(-1, ids)
        new = _new(op.kind, old, values)
        if where is not None:
            new = torch.where(where.unsqueeze(-1), new, old)
        return x.index_copy(-1, ids, new.expand_as(old))
    chosen = mask.unsqueeze(1)  # [B, 1, W]
    if where is not None:
        chosen = chosen & where.unsqueeze(-1)
    if op.kind == "zero":
        return x.masked_fill(chosen, 0)
    return torch.where(chosen, _new(op.kind, x, values), x)


def _simple(op: Op) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(ids, float64[n] values)`` of a shared-id ``zero`` / ``set`` at every position, else None."""
    if op.ids is None or op.per_row or op.positions != "all" or op.kind not in ("zero", "set"):
        return None
    values = op.master_values()
    if values is None:
        return op.ids, torch.zeros(op.ids.numel(), dtype=torch.float64)
    if values.dim() > 1:
        return None
    return op.ids, values.double().expand(op.ids.numel())


def merge_ops(ops: list[Op]) -> list[Op]:
    """Fold each run of shared-id ``zero`` / ``set`` edits at every position into one ``set`` (later edits win),
    so the common case stays one ``index_copy`` per layer."""
    merged: list[Op] = []
    pending: dict[int, float] = {}

    def flush() -> None:
        if pending:
            ids = torch.tensor(sorted(pending), dtype=torch.long)
            merged.append(Op("set", "all", ids, None, torch.tensor([pending[i] for i in ids.tolist()],
                                                                    dtype=torch.float64)))
            pending.clear()

    for op in ops:
        simple = _simple(op)
        if simple is not None:
            pending.update(zip(simple[0].tolist(), simple[1].tolist()))
            continue
        flush()
        merged.append(op)
    flush()
    return merged
