"""The logit lens: decode any layer's residual stream through the model's output head.

``logits = softcap(head(head_pre(final_norm(h))) * logit_multiplier)`` with the modules and numbers of
:class:`~langneurons.model.geometry.ModelGeometry` (the final norm is optional; ``head_pre`` is OPT's
``project_out`` where present; the multiplier is Cohere's ``logit_scale`` or Granite's
``1 / logits_scaling``; the soft-cap is Gemma-2's ``final_logit_softcapping``). For the last layer with
the final norm this equals the model's own logits, which :func:`model_geometry` checks on load.

Positions are decoded ``chunk_size`` at a time, so at most ``[chunk_size, vocab]`` logits exist at once
(never the ``[T, vocab]`` logits of every layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.model.architectures import get_submodule
from langneurons.model.geometry import ModelGeometry, model_geometry


def _device_of(module: nn.Module) -> torch.device | None:
    for parameter in module.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return None


def _head_modules(model: nn.Module, geometry: ModelGeometry, final_norm: bool) -> list[nn.Module]:
    paths = ([geometry.final_norm] if final_norm and geometry.final_norm else []) + list(geometry.head_pre)
    if geometry.output_head is None:
        raise LangNeuronsError(f"model type {geometry.model_type!r} has no output head (get_output_embeddings)")
    modules = [get_submodule(model, path) for path in [*paths, geometry.output_head]]
    if any(module is None for module in modules):
        raise LangNeuronsError(f"model type {geometry.model_type!r}: a module of the output head is missing")
    return modules  # type: ignore[return-value]


def decode_logits(model: nn.Module, hidden: torch.Tensor, final_norm: bool = True,
                  geometry: ModelGeometry | None = None) -> torch.Tensor:
    """``float32[..., vocab]``: the logits of hidden states ``hidden[..., hidden_size]`` (all at once)."""
    geometry = geometry or model_geometry(model)
    x = hidden
    for module in _head_modules(model, geometry, final_norm):
        device = _device_of(module)
        x = module(x if device is None else x.to(device))
    logits = x.float()
    if geometry.logit_multiplier != 1.0:
        logits = logits * geometry.logit_multiplier
    if geometry.logit_softcap:
        logits = torch.tanh(logits / geometry.logit_softcap) * geometry.logit_softcap
    return logits


@torch.inference_mode()
def logit_lens(model: nn.Module, hidden: torch.Tensor, final_norm: bool = True, top_k: int = 10,
               chunk_size: int = 256, geometry: ModelGeometry | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` tokens of ``hidden[..., hidden_size]`` decoded through the output head, ``chunk_size`` rows at a time.

    Returns ``ids long[..., k]`` and ``probs float32[..., k]`` (softmax over the whole vocabulary,
    highest first), on ``hidden``'s device.
    """
    geometry = geometry or model_geometry(model)
    if hidden.shape[-1] != geometry.hidden_size:
        raise LangNeuronsError(f"the logit lens takes hidden states of width {geometry.hidden_size}, "
                               f"got {hidden.shape[-1]}")
    if chunk_size < 1:
        raise LangNeuronsError(f"chunk_size must be at least 1, got {chunk_size}")
    rows = hidden.reshape(-1, hidden.shape[-1])
    ids = torch.empty(rows.shape[0], top_k, dtype=torch.long, device=hidden.device)
    probs = torch.empty(rows.shape[0], top_k, dtype=torch.float32, device=hidden.device)
    for start in range(0, rows.shape[0], chunk_size):
        logits = decode_logits(model, rows[start:start + chunk_size], final_norm, geometry)
        if top_k > logits.shape[-1]:
            raise LangNeuronsError(f"top_k={top_k} is larger than the vocabulary ({logits.shape[-1]})")
        top = torch.softmax(logits, dim=-1).topk(top_k, dim=-1)
        ids[start:start + chunk_size] = top.indices.to(hidden.device)
        probs[start:start + chunk_size] = top.values.to(hidden.device)
    shape = (*hidden.shape[:-1], top_k)
    return ids.reshape(shape), probs.reshape(shape)


@dataclass
class LayerLens:
    """The logit lens of several layers: ``ids long[L, B, T, k]``, ``probs float32[L, B, T, k]`` for ``layers``."""

    layers: list[int]
    ids: torch.Tensor
    probs: torch.Tensor
    final_norm: bool


@torch.inference_mode()
def layer_logit_lens(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     layers: Sequence[int] | None = None, final_norm: bool = True, top_k: int = 10,
                     chunk_size: int = 256) -> LayerLens:
    """Run ``input_ids[B, T]`` once and decode the output (``layer.out``) of every layer (or of ``layers``).

    Each layer is decoded inside its hook, chunked over positions, so only the top-``k`` of every layer
    are kept. With ``attention_mask`` (left or right padding) the model gets position ids counted from
    each row's first real token; padded positions are decoded too (mask them out afterwards).
    """
    from langneurons.data.batching import forward_kwargs
    from langneurons.model.sites import input_device, locate_site, site_hooks

    geometry = model_geometry(model)
    chosen = list(range(geometry.num_layers)) if layers is None else [int(layer) for layer in layers]
    if any(not 0 <= layer < geometry.num_layers for layer in chosen):
        raise LangNeuronsError(f"layers must lie in 0..{geometry.num_layers - 1}, got {chosen}")
    input_ids = input_ids if input_ids.dim() == 2 else input_ids.unsqueeze(0)
    results: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def decode(layer: int, hidden: torch.Tensor) -> None:
        results[layer] = logit_lens(model, hidden, final_norm, top_k, chunk_size, geometry)

    device = input_device(model)
    mask = None if attention_mask is None else attention_mask.to(device)
    with site_hooks(locate_site(model, "layer.out"), decode, layers=set(chosen)):
        model(input_ids=input_ids.to(device), use_cache=False, **forward_kwargs(model, mask))
    ids = torch.stack([results[layer][0] for layer in chosen])
    probs = torch.stack([results[layer][1] for layer in chosen])
    return LayerLens(chosen, ids, probs, final_norm)
