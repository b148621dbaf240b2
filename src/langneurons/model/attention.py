"""Attention internals (queries and keys after rotary, values, the mask) without turning SDPA off.

Most transformers-5 families compute attention by calling
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)`` with
``(module, query, key, value, attention_mask, scaling=..., **kwargs)``, after the rotary embedding and
the KV cache. :func:`capture_attention` wraps that mapping's entry for the model's implementation
(``sdpa``, ``eager``, a flash kernel, ...) while the context is open, calls the original function
unchanged and returns exactly what it returns (bit-identical outputs), and hands the inputs of the
attention modules of the chosen layers to ``fn(layer, AttentionInputs)``. It restores the mapping on
exit. Families that compute attention themselves (BLOOM's ALiBi baddbmm, Falcon, XGLM) get a one-line
:class:`LangNeuronsError`; :func:`supports_attention_capture` says beforehand.

The wrapped entry is process-wide while the context is open; calls from attention modules of other
models go through unchanged.
"""

from __future__ import annotations

import sys
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.model.architectures import get_submodule, resolve_architecture


@dataclass
class AttentionInputs:
    """What one attention module hands to its attention function.

    Attributes:
        query: ``[B, H, T, D]`` after the rotary embedding (and after q-norm where the family has one).
        key: ``[B, H_kv, S, D]`` after the rotary embedding; ``S`` counts cached positions too.
        value: ``[B, H_kv, S, D]``.
        attention_mask: exactly as the model passes it: a 4-D ``[B, 1, T, S]`` tensor, ``bool`` (True =
            attend; SDPA) or additive float (0 / large negative; eager), or ``None``, which under SDPA
            means causal only (query ``t`` sees keys ``<= S - T + t``; no padding in the batch).
        scaling: the factor on ``q k^T`` (``D ** -0.5`` unless the family says otherwise).
        module: the attention module.
        cos, sin: the rotary ``position_embeddings`` ``[B, T, rotary_dim]`` the module received, or ``None``.
        kwargs: the other keyword arguments (``dropout``, ``sliding_window``, ``softcap``, ...).

    Tensors are the model's own: read them, do not modify them in place.
    """

    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    attention_mask: torch.Tensor | None
    scaling: float
    module: nn.Module
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def additive_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[B or 1, 1, T, S]``: 0 where a query attends a key, the dtype's minimum elsewhere."""
        t, s = self.query.shape[-2], self.key.shape[-2]
        low = torch.finfo(dtype).min
        mask = self.attention_mask
        if mask is None:
            queries = torch.arange(t, device=self.query.device)[:, None] + (s - t)
            allowed = torch.arange(s, device=self.query.device)[None, :] <= queries
            return torch.zeros(1, 1, t, s, dtype=dtype, device=self.query.device).masked_fill(~allowed, low)
        mask = mask[..., :s]
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, low)
        return mask.to(dtype).clamp_min(low)

    def attention_weights(self) -> torch.Tensor:
        """``float32[B, H, T, S]``: ``softmax(q k^T * scaling + mask)``, query head h on key head ``h // (H / H_kv)``.

        A reference computation (with the family's ``softcap`` when it passes one); not what SDPA runs.
        """
        group = self.query.shape[1] // self.key.shape[1]
        key = self.key.float().repeat_interleave(group, dim=1)
        scores = self.query.float() @ key.transpose(-1, -2) * self.scaling
        softcap = self.kwargs.get("softcap")
        if softcap:
            scores = torch.tanh(scores / softcap) * softcap
        return torch.softmax(scores + self.additive_mask(torch.float32), dim=-1)


#: ``fn(layer, inputs)``; its return value is ignored
AttentionFunction = Callable[[int, AttentionInputs], None]


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention module of every decoder layer (the registry's ``attn`` or the parent of ``attn_o``)."""
    spec = resolve_architecture(model)
    path = spec.attention_module
    layers = get_submodule(model, spec.layers)
    modules = [get_submodule(layer, path) if path else None for layer in layers]
    if any(module is None for module in modules):
        raise LangNeuronsError(f"model type {_model_type(model)!r}: no attention module mapped in every layer; "
                               "register attn=... (or attn_o=...) with langneurons.register_architecture")
    return modules  # type: ignore[return-value]


def _model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def _implementation(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "_attn_implementation", None) or "eager"


def _interface_of(module: nn.Module):
    """The ``AttentionInterface`` the module's modeling file dispatches through, or ``None``."""
    from transformers.modeling_utils import AttentionInterface

    interface = getattr(sys.modules.get(type(module).__module__), "ALL_ATTENTION_FUNCTIONS", None)
    return interface if isinstance(interface, AttentionInterface) else None


def _eager_default(module: nn.Module) -> Callable | None:
    return getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)


def _static_problem(model: nn.Module) -> str | None:
    try:
        modules = attention_modules(model)
    except LangNeuronsError as exc:
        return str(exc)
    implementation = _implementation(model)
    for module in modules:
        interface = _interface_of(module)
        if interface is None or (implementation == "eager" and "eager" not in interface
                                 and _eager_default(module) is None):
            return (f"model type {_model_type(model)!r} computes attention itself ({type(module).__name__}); "
                    "attention-internal statistics are not available, FFN sites are")
    return None


def _restore(interface, implementation: str, had_local: bool, previous: Any) -> None:
    local = getattr(interface, "_local_mapping", None)
    if had_local:
        interface[implementation] = previous
    elif local is not None:
        local.pop(implementation, None)


@contextmanager
def _capturing(model: nn.Module, fn: AttentionFunction, layers: set[int] | None) -> Iterator[None]:
    """Wrap the attention function(s) of ``model``'s modules; no support check."""
    modules = attention_modules(model)
    targets = {id(module): layer for layer, module in enumerate(modules) if layers is None or layer in layers}
    rotary: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    implementation = _implementation(model)

    def remember_rotary(module, args, kwargs):
        embeddings = kwargs.get("position_embeddings")
        if isinstance(embeddings, (tuple, list)) and len(embeddings) == 2:
            rotary[id(module)] = (embeddings[0], embeddings[1])

    def make_wrapper(original: Callable | None) -> Callable:
        def wrapper(module, query, key, value, attention_mask, *args, **kwargs):
            function = original if original is not None else _eager_default(module)
            if function is None:
                raise LangNeuronsError(f"{type(module).__name__} has no eager attention function")
            result = function(module, query, key, value, attention_mask, *args, **kwargs)
            layer = targets.get(id(module))
            if layer is not None:
                scaling = kwargs.get("scaling")
                cos, sin = rotary.get(id(module), (None, None))
                extra = {name: value_ for name, value_ in kwargs.items() if name != "scaling"}
                fn(layer, AttentionInputs(query, key, value, attention_mask,
                                          float(query.shape[-1] ** -0.5 if scaling is None else scaling),
                                          module, cos, sin, extra))
            return result

        return wrapper

    interfaces = {id(i): i for i in (_interface_of(m) for m in modules) if i is not None}
    saved, handles = [], []
    try:
        for module in modules:
            if id(module) in targets:
                handles.append(module.register_forward_pre_hook(remember_rotary, with_kwargs=True))
        for interface in interfaces.values():
            local = getattr(interface, "_local_mapping", {})
            had_local, previous = implementation in local, local.get(implementation)
            original = interface[implementation] if implementation in interface else None
            interface[implementation] = make_wrapper(original)
            saved.append((interface, had_local, previous))
        yield
    finally:
        for interface, had_local, previous in reversed(saved):
            _restore(interface, implementation, had_local, previous)
        for handle in handles:
            handle.remove()


def probe_input(model: nn.Module, length: int = 4) -> torch.Tensor:
    """``long[1, length]`` token ids ``3, 4, 5, ...`` (past the usual special ids) on the model's input device."""
    from langneurons.model.sites import input_device

    vocab = int(getattr(getattr(model, "config", None), "vocab_size", None) or length + 3)
    return ((torch.arange(length) + 3) % max(vocab, 1)).unsqueeze(0).to(input_device(model))


_SUPPORT: "weakref.WeakKeyDictionary[nn.Module, dict[str, str | None]]" = weakref.WeakKeyDictionary()


@torch.inference_mode()
def attention_capture_problem(model: nn.Module) -> str | None:
    """Why :func:`capture_attention` cannot work on ``model`` (one line), or ``None`` when it can.

    Checked once per model and attention implementation: the attention modules dispatch through the
    attention interface, and on a 4-token forward pass every layer's module calls it exactly once and
    the logits stay bit-identical.
    """
    implementation = _implementation(model)
    known = _SUPPORT.setdefault(model, {})
    if implementation in known:
        return known[implementation]
    problem = _static_problem(model)
    if problem is None:
        ids = probe_input(model)
        calls = [0] * len(attention_modules(model))

        def count(layer: int, inputs: AttentionInputs) -> None:
            calls[layer] += 1

        plain = model(input_ids=ids, use_cache=False)
        with _capturing(model, count, None):
            captured = model(input_ids=ids, use_cache=False)
        same = getattr(plain, "logits", None) is None or model.training or torch.equal(plain.logits, captured.logits)
        if any(c != 1 for c in calls) or not same:
            problem = (f"model type {_model_type(model)!r} computes attention itself under "
                       f"attn_implementation={implementation!r} (attention-function calls per layer {calls}); "
                       "attention-internal statistics are not available, FFN sites are")
    known[implementation] = problem
    return problem


def supports_attention_capture(model: nn.Module) -> bool:
    """Whether :func:`capture_attention` works on ``model`` under its current attention implementation."""
    return attention_capture_problem(model) is None


@contextmanager
def capture_attention(model: nn.Module, fn: AttentionFunction, layers: set[int] | None = None) -> Iterator[None]:
    """Call ``fn(layer, AttentionInputs)`` for the attention of every layer (or of ``layers``) while open.

    Works with SDPA, eager and the other registered implementations; the model's outputs are
    bit-identical to a run without the context. Raises :class:`LangNeuronsError` for families that do
    not dispatch through the attention interface.
    """
    problem = attention_capture_problem(model)
    if problem is not None:
        raise LangNeuronsError(problem)
    with _capturing(model, fn, None if layers is None else set(layers)):
        yield


#: The name of the attention-internal pseudo-site (its hook hands an :class:`AttentionInputs`, not a tensor).
ATTENTION_SITE = "attn.scores"


class AttentionSite:
    """A site provider (``.site``, ``.num_layers``, ``.hooks(fn, layers)``) for the recorder and statistics.

    ``fn(layer, AttentionInputs)`` is called once per layer and forward pass; it must not return a value.
    Raises at construction for families whose attention cannot be captured.
    """

    site = ATTENTION_SITE
    width = None

    def __init__(self, model: nn.Module, layers: set[int] | None = None) -> None:
        problem = attention_capture_problem(model)
        if problem is not None:
            raise LangNeuronsError(problem)
        self.model = model
        self.num_layers = len(attention_modules(model))
        self.hooked_layers = None if layers is None else sorted(set(layers))

    def hooks(self, fn: AttentionFunction, layers: set[int] | None = None):
        chosen = layers if layers is not None else self.hooked_layers
        return capture_attention(self.model, fn, None if chosen is None else set(chosen))

    def describe(self) -> dict[str, Any]:
        return {"site": self.site, "num_layers": self.num_layers, "implementation": _implementation(self.model)}


def attention_site(model: nn.Module, layers: set[int] | None = None) -> AttentionSite:
    """The attention-internal site provider of ``model`` (of ``layers`` only, if given); raises when the family
    does not support attention capture."""
    return AttentionSite(model, layers)
