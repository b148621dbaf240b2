"""Checks of a :class:`~langneurons.model.geometry.ModelGeometry` on a 4-token forward pass of the model.

* final norm + output head of the last layer's output reproduce the model's logits;
* where attention capture works, the attention function receives ``H`` query heads and ``H_kv`` key /
  value heads of dimension ``D``, and its value heads equal the value columns this geometry splits out
  of the projection (for a discovered fused projection of unknown layout, the layout that matches is
  taken).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.model.architectures import get_submodule
from langneurons.model.geometry import ModelGeometry


def _tolerance(tensor: torch.Tensor) -> float:
    """Absolute tolerance for comparing with ``tensor`` in its own dtype (float32, float64: 1e-4; half: 3e-2)."""
    scale = float(tensor.float().abs().max()) if tensor.numel() else 1.0
    return (1e-4 if tensor.dtype in (torch.float32, torch.float64) else 3e-2) * max(scale, 1.0)


def _value_heads(geometry: ModelGeometry, projected: torch.Tensor, layout: str) -> torch.Tensor:
    """``[B, H_kv, T, D]`` value heads of a projection output under ``layout``."""
    trial = replace(geometry, qkv_layout=layout)
    value = projected if projected.shape[-1] == geometry.widths["v"] else trial.split_qkv(projected)[2]
    return geometry.heads(value).transpose(1, 2)


@torch.inference_mode()
def validate_geometry(model: nn.Module, geometry: ModelGeometry) -> ModelGeometry:
    """Check ``geometry`` on the model (see the module docstring); returns it with ``attention_capture`` set."""
    from langneurons.model.attention import _capturing, attention_capture_problem, probe_input
    from langneurons.model.lens import decode_logits

    spec = geometry.spec
    layers = get_submodule(model, geometry.layers)
    ids = probe_input(model)
    source_path = spec.attn_qkv or spec.attn_v if spec is not None else None
    source = get_submodule(layers[0], source_path) if source_path else None
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, args, output):
            seen[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    handles = [layers[-1].register_forward_hook(keep("last"))]
    if source is not None:
        handles.append(source.register_forward_hook(keep("projected")))
    try:
        logits = getattr(model(input_ids=ids, use_cache=False), "logits", None)
    finally:
        for handle in handles:
            handle.remove()
    if logits is not None and not model.training and geometry.output_head is not None:
        lens = decode_logits(model, seen["last"], True, geometry).to(logits.device)
        if not torch.allclose(lens, logits.float(), rtol=0, atol=_tolerance(logits)):
            raise LangNeuronsError(
                f"model type {geometry.model_type!r}: final norm {geometry.final_norm!r} + output head "
                f"{geometry.output_head!r} of the last layer do not reproduce the model's logits (max difference "
                f"{float((lens - logits.float()).abs().max()):.3g}); register final_norm=... / head_pre=...")
    problem = attention_capture_problem(model)
    layout = geometry.qkv_layout
    if problem is None and "projected" in seen:
        captured: dict[str, torch.Tensor] = {}

        def grab(layer: int, inputs) -> None:
            captured.update(query=inputs.query, key=inputs.key, value=inputs.value)

        with _capturing(model, grab, {0}):
            model(input_ids=ids, use_cache=False)
        shapes = (captured["query"].shape[1], captured["key"].shape[1], captured["value"].shape[-1])
        if shapes != (geometry.num_heads, geometry.num_kv_heads, geometry.head_dim):
            raise LangNeuronsError(
                f"model type {geometry.model_type!r}: the attention function gets {shapes[0]} query heads, "
                f"{shapes[1]} key/value heads of dimension {shapes[2]}, but the geometry says {geometry.num_heads}, "
                f"{geometry.num_kv_heads}, {geometry.head_dim}")
        value = captured["value"].to(seen["projected"].device)
        candidates = [layout] if layout is not None else ["concat", "interleaved"]
        matching = [c for c in candidates
                    if torch.allclose(_value_heads(geometry, seen["projected"], c), value, rtol=0,
                                      atol=_tolerance(value) * 1e-2)]
        if layout is not None and not matching:
            raise LangNeuronsError(
                f"model type {geometry.model_type!r}: the value heads split out of {source_path!r} by the layout "
                f"{layout!r} are not the ones the attention function receives; register the right qkv_layout")
        layout = matching[0] if matching else layout
    return replace(geometry, qkv_layout=layout, attention_capture=problem is None)
