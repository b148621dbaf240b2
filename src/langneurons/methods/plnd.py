"""PLND: parallel language-specific neuron detection (Zhao et al. 2024, "How do Large Language Models Handle
Multilingualism?", section 2.2, eqs. 1-10), the importance of every neuron for one input, all in parallel.

The importance of a neuron for an input ``c`` is the norm of the change of its module's output when the
neuron is removed (eq. 1). ``Imp`` of every neuron of every layer comes out of ONE forward pass:

**FFN** (eqs. 4-5). With ``h_ffn`` ``[T, d_ff]`` the input of the down projection (the site ``ffn.down_in``;
``act(gate(x)) * up(x)`` for gated MLPs, the GELU output otherwise) and ``Mask[k]`` the ``k``-th one-hot,
removing neuron ``k`` (row ``k`` of ``W_down``, equivalently column ``k`` of ``W_up``: both zero
``h_ffn[:, k]``) changes the FFN output by ``(h_ffn * Mask[k]) W_down = h_ffn[:, k] W_down[k, :]``, an outer
product, so its Frobenius norm over the input's positions is::

    Imp(k | c) = || (h_ffn * Mask[k]) W_down ||_2 = ||h_ffn[:, k]||_2 * ||W_down[k, :]||_2          (4), (5)

``ffn_score="reference"`` is the reference code's variant instead, named as such: ``sum_t |up_proj(x)[t, k]|``
(the up projection's output; for non-gated MLPs the first FFN projection, our reading).

**Attention** (eqs. 6-10), the neurons being the coordinates of the ``attn.q`` / ``attn.k`` / ``attn.v`` sites
(column ``k`` of ``W_Q`` / ``W_K`` / ``W_V`` with its bias, pre-rotary, head-major):

* ``W_V`` (eq. 5 applied to ``W_V``): ``Imp(W_V[:, k]) = || softmax(QK^T/sqrt d) V - softmax(QK^T/sqrt d) V^(k) ||_F``
  over positions and every query head that reads value head ``g`` (grouped-query attention), before the
  output projection: ``sqrt(sum_{h in g} sum_t (P_h V_g[:, i])_t^2)`` for ``k = (g, i)``.
* ``W_Q`` (eqs. 7, 8, 10): ``Delta_k = W_Q(x)[:, k] W_K(x)[k, :]`` (eq. 7) and
  ``Imp(W_Q[:, k]) = || softmax((QK^T - Delta_k)/sqrt d) - softmax(QK^T/sqrt d) ||_F`` (eq. 8) over the
  ``(query, key)`` positions with the causal mask, for all ``k`` at once (eqs. 9-10).
* ``W_K``: symmetric; under grouped-query attention over every query head reading that key head.

Interpretation (ours, stated): with rotary embeddings, removing column ``k`` of ``W_Q`` zeroes that pre-rotary
coordinate, so ``Delta_k[t, s] = q_t[k] (R_t^T k'_s)[k]``, which mixes ``k`` with its rotary partner (see
``docs/geometry.md``); eq. 7's plain product holds without rotary. The norm of eq. 8 is taken over
``(t, s)`` (and heads), the paper's ``||.||_2`` of an ``l x l`` matrix read as Frobenius. Eq. 8 writes "≈"
for the attention-output change; we compute its right-hand side exactly, which equals removing the column
and rerunning (tested). The maths of the attention part is in :mod:`langneurons.methods.plnd_attention`.

Families whose attention cannot be captured (BLOOM, Falcon, XGLM) get FFN importance and one warning line.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.methods.plnd_attention import LayerAttention, attention_importance, norm_scale
from langneurons.model.architectures import get_submodule, resolve_architecture
from langneurons.model.geometry import model_geometry, write_vectors
from langneurons.model.sites import locate_site

#: the importance structures and the neuron-set site each is deactivated at
STRUCTURES = ("ffn", "attn.q", "attn.k", "attn.v")
SITE_OF = {"ffn": "ffn.down_in", "attn.q": "attn.q", "attn.k": "attn.k", "attn.v": "attn.v"}
ATTENTION = ("attn.q", "attn.k", "attn.v")
FFN_SCORES = ("paper", "reference")
#: default bound on the attention computation's working memory per layer (bytes)
DEFAULT_MEMORY = 1 << 30
#: where the up projection of a layer's FFN is, for ``ffn_score="reference"`` (first match whose width is d_ff)
UP_PROJECTION_ALIASES = ("mlp.up_proj", "mlp.c_fc", "mlp.fc1", "mlp.dense_h_to_4h", "fc1")
UP_SITE = "ffn.up"

#: ``sink(row_language, sample_id, {structure: float32[layers, width]}, tokens)`` for every input of a batch
Sink = Callable[[str, int, dict[str, torch.Tensor], int], None]


class UpProjectionSite:
    """A site provider for the up projection's output ``[B, T, d_ff]`` (the reference code's FFN score)."""

    site = UP_SITE

    def __init__(self, model: nn.Module, width: int) -> None:
        spec = resolve_architecture(model)
        layers = get_submodule(model, spec.layers)
        for path in UP_PROJECTION_ALIASES:
            modules = [get_submodule(layer, path) for layer in layers]
            if all(m is not None and getattr(m, "out_features", getattr(m, "nf", None)) == width for m in modules):
                self.modules, self.path = modules, path
                break
        else:
            raise LangNeuronsError(f"ffn_score='reference' needs an up projection of width {width} in every layer; "
                                   f"model type {getattr(model.config, 'model_type', '?')!r} has none of "
                                   f"{', '.join(UP_PROJECTION_ALIASES)}")
        self.num_layers = len(self.modules)

    @contextmanager
    def hooks(self, fn: Callable[[int, Any], Any]) -> Iterator[None]:
        def hook(layer: int):
            def call(module, args, output):
                fn(layer, output)
            return call

        handles = [module.register_forward_hook(hook(layer)) for layer, module in enumerate(self.modules)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _rms_eps(module: nn.Module, dim: int) -> float | None:
    """``eps`` when ``module`` computes ``w * x / sqrt(mean(x^2) + eps)`` over a last axis of ``dim``, else ``None``."""
    eps = next((float(getattr(module, name)) for name in ("variance_epsilon", "eps", "epsilon")
                if isinstance(getattr(module, name, None), (int, float))), None)
    weight = getattr(module, "weight", None)
    if eps is None or weight is None or weight.numel() != dim:
        return None
    probe = torch.randn(3, dim, generator=torch.Generator().manual_seed(0)).to(weight.device, weight.dtype)
    with torch.no_grad():
        out = module(probe).double()
        gain = module(torch.ones(1, dim, dtype=weight.dtype, device=weight.device)).double() * (1 + eps) ** 0.5
    x = probe.double()
    expected = gain * x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)
    tolerance = 1e-4 if weight.dtype in (torch.float32, torch.float64) else 3e-2
    return eps if torch.allclose(out, expected, rtol=tolerance, atol=tolerance) else None


class PLNDFeeder:
    """The PLND importance of every input of a batch, fed by the recorder (a site statistic).

    Declares the sites it needs (``ffn.down_in`` or the up projection, ``attn.scores`` for attention capture,
    and ``attn.q`` / ``attn.k`` on families with a q/k-norm); :attr:`providers` attaches them. Each row of a
    batch is one input (its real positions are ``BatchInfo.token_mask``, contiguous: left or right padding);
    after the forward pass ``sink`` gets each row's ``{structure: float32[layers, width]}``.
    """

    def __init__(self, model: nn.Module, sink: Sink, structures: tuple[str, ...] = STRUCTURES,
                 ffn_score: str = "paper", memory_bytes: int = DEFAULT_MEMORY,
                 dtype: torch.dtype = torch.float32) -> None:
        unknown = [s for s in structures if s not in STRUCTURES]
        if unknown or not structures:
            raise LangNeuronsError(f"unknown PLND structure(s) {unknown or structures}; choose from {STRUCTURES}")
        if ffn_score not in FFN_SCORES:
            raise LangNeuronsError(f"ffn_score must be one of {', '.join(FFN_SCORES)}, got {ffn_score!r}")
        if int(memory_bytes) < 1:
            raise LangNeuronsError(f"memory_bytes must be positive, got {memory_bytes}")
        self.model, self.sink, self.ffn_score = model, sink, ffn_score
        self.memory_bytes, self.dtype = int(memory_bytes), dtype
        self.geometry = geometry = model_geometry(model)
        self.skipped: dict[str, str] = {}
        wanted = list(dict.fromkeys(structures))
        providers: list[Any] = []
        self.widths: dict[str, int] = {}
        if "ffn" in wanted:
            down = locate_site(model, "ffn.down_in")
            self.widths["ffn"] = int(down.width)
            if ffn_score == "paper":
                providers.append(down)
                self._write_norms = [write_vectors(model, "ffn.down_in", layer).float().norm(dim=1)
                                     for layer in range(down.num_layers)]
            else:
                providers.append(UpProjectionSite(model, int(down.width)))
        self._norm_eps: dict[str, float] = {}
        attention = [s for s in wanted if s in ATTENTION]
        if attention:
            from langneurons.model.attention import attention_capture_problem, attention_site

            problem = attention_capture_problem(model) or self._qk_problem(attention)
            if problem and problem.startswith("qk:"):
                attention = [s for s in attention if s == "attn.v"]
                self.skipped.update({s: problem[3:] for s in ("attn.q", "attn.k") if s in wanted})
                problem = None
            if problem:
                self.skipped.update({s: problem for s in attention})
                attention = []
            if attention:
                providers.append(attention_site(model))
                widths = geometry.widths
                self.widths.update({s: widths[s[-1]] for s in attention})
                for part in self._norm_eps:
                    providers.append(locate_site(model, f"attn.{part}"))
        for reason in dict.fromkeys(self.skipped.values()):
            names = ", ".join(s for s, r in self.skipped.items() if r == reason)
            warnings.warn(f"PLND importance of {names} is not available: {reason}", LangNeuronsWarning, stacklevel=3)
        self.structures = tuple(s for s in wanted if s in self.widths)
        self.providers = providers
        self.sites = tuple(p.site for p in providers)
        self.num_layers = geometry.num_layers

    def _qk_problem(self, attention: list[str]) -> str | None:
        """Find the per-head RMS q/k-norms (their ``eps``); ``"qk:reason"`` when Q / K cannot be computed."""
        if not set(attention) & {"attn.q", "attn.k"}:
            return None
        g = self.geometry
        if g.positions is None:
            return "qk:the positional scheme of this model type is unknown (register positions=...)"
        layers = get_submodule(self.model, g.layers)
        for path in g.qk_norm:
            part = path.rsplit(".", 1)[-1][0]  # q_norm / q_layernorm -> "q"
            eps = {_rms_eps(get_submodule(layer, path), g.head_dim) for layer in layers}
            if None in eps or len(eps) != 1:
                return (f"qk:the {path} of model type {g.model_type!r} is not an RMS norm over each head (e.g. one "
                        "over all heads); Q/K importance through it is not implemented (FFN and V are)")
            self._norm_eps[part] = eps.pop()
        return None

    # -- the statistic protocol -----------------------------------------------------------------------
    def begin_batch(self, batch: Any, batch_size: int, seq_len: int) -> None:
        mask = batch.token_mask
        spans = []
        for row in range(batch_size):
            real = torch.arange(seq_len) if mask is None else mask[row].nonzero().flatten().cpu()
            if real.numel() == 0:
                raise LangNeuronsError("PLND got an empty input (no real token)")
            start, stop = int(real[0]), int(real[-1]) + 1
            if stop - start != real.numel():
                raise LangNeuronsError("PLND inputs must be contiguous rows (left or right padding only)")
            spans.append(slice(start, stop))
        self._spans, self._shape = spans, (batch_size, seq_len)
        self._languages = batch.row_languages(batch_size)
        self._ids = (batch.sample_ids.tolist() if batch.sample_ids is not None else list(range(batch_size)))
        self._results = [{s: torch.zeros(self.num_layers, w) for s, w in self.widths.items()}
                         for _ in range(batch_size)]
        self._pre: dict[str, torch.Tensor] = {}

    def update(self, layer: int, value: Any, site: str = "ffn.down_in") -> None:
        from langneurons.stats.base import as_rows

        if site == "ffn.down_in" or site == UP_SITE:
            value = as_rows(value, *self._shape)  # OPT's FFN flattens [batch * seq, width]
            for row, span in enumerate(self._spans):
                self._results[row]["ffn"][layer] = self._ffn(layer, value[row, span])
        elif site in ("attn.q", "attn.k"):
            self._pre[site[-1]] = as_rows(value, *self._shape)
        else:
            for row, span in enumerate(self._spans):
                for structure, values in self._attention(value, row, span).items():
                    self._results[row][structure][layer] = values.float().cpu()

    def end_batch(self) -> None:
        for row, result in enumerate(self._results):
            span = self._spans[row]
            self.sink(self._languages[row], self._ids[row], result, span.stop - span.start)
        self._results, self._pre = [], {}

    # -- per layer and input ---------------------------------------------------------------------------
    def _ffn(self, layer: int, h: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
        """``float32[d_ff]``: ``||h[:, k]|| * ||W_down[k]||`` (paper) or ``sum_t |up[t, k]|`` (reference)."""
        parts = []
        for start in range(0, h.shape[-1], chunk):
            block = h[:, start:start + chunk].to(self.dtype)
            reference = self.ffn_score == "reference"
            parts.append(block.abs().sum(0) if reference else torch.linalg.vector_norm(block, dim=0))
        values = torch.cat(parts).float().cpu()
        return values if self.ffn_score == "reference" else values * self._write_norms[layer].cpu()

    def _attention(self, captured: Any, row: int, span: slice) -> dict[str, torch.Tensor]:
        g, dtype = self.geometry, self.dtype
        if captured.key.shape[-2] != captured.query.shape[-2]:
            raise LangNeuronsError("PLND runs without a KV cache (queries and keys must be the same positions)")
        pick = (lambda t: t[row] if t.shape[0] > 1 else t[0])  # noqa: E731 - batch axis of 1 broadcasts
        query = pick(captured.query)[:, span].to(dtype)
        key = pick(captured.key)[:, span].to(dtype)
        value = pick(captured.value)[:, span].to(dtype)
        allowed = _allowed(captured, row, span)
        cos = sin = None
        if g.rotary_dim is not None:
            if captured.cos is None:
                raise LangNeuronsError(f"model type {g.model_type!r}: the attention module received no rotary "
                                       "cos/sin; Q/K importance cannot follow its rotary embedding")
            cos, sin = pick(captured.cos)[span].to(dtype), pick(captured.sin)[span].to(dtype)
        scales = {}
        for part, eps in self._norm_eps.items():
            pre = pick(self._pre[part])[span].to(dtype)
            scales[part] = norm_scale(g.heads(pre).transpose(0, 1), eps)
        inputs = LayerAttention(query, key, value, allowed, captured.scaling, cos, sin,
                                captured.kwargs.get("softcap") or None, scales.get("q"), scales.get("k"))
        converted = [t for t in (query, key, value) if t.dtype != captured.query.dtype]
        held = sum(t.numel() * t.element_size() for t in [*converted, *scales.values(), allowed])
        structures = tuple(s for s in ATTENTION if s in self.widths)
        return attention_importance(inputs, g, self.memory_bytes - held, structures)


def _allowed(captured: Any, row: int, span: slice) -> torch.Tensor:
    """``bool[n, n]``: query ``t`` attends key ``s`` among the row's real positions (never a float ``[T, S]`` copy
    of a causal-only mask); a mask that adds a bias to the scores is refused."""
    mask, n = captured.attention_mask, span.stop - span.start
    if mask is None:  # causal only (SDPA without padding)
        positions = torch.arange(n, device=captured.query.device)
        return positions[:, None] >= positions[None, :]
    mask = mask[row if mask.shape[0] > 1 else 0, 0, span, span]
    if mask.dtype == torch.bool:
        return mask
    allowed = mask > torch.finfo(mask.dtype).min / 2
    if bool(mask.masked_fill(~allowed, 0).ne(0).any()):
        raise LangNeuronsError("the attention mask adds a bias to the scores; PLND Q/K/V importance assumes a plain "
                               "mask")
    return allowed


def plnd_widths(model: nn.Module, structures: tuple[str, ...] = STRUCTURES) -> dict[str, int]:
    """Neurons per layer of each structure: ``d_ff`` for ``ffn``, ``H*D`` for ``attn.q``, ``H_kv*D`` for k and v."""
    widths = model_geometry(model).widths
    out = {}
    for structure in structures:
        if structure not in STRUCTURES:
            raise LangNeuronsError(f"unknown PLND structure {structure!r}; choose from {STRUCTURES}")
        out[structure] = int(locate_site(model, "ffn.down_in").width) if structure == "ffn" else widths[structure[-1]]
    return out


def plnd_importance(model: nn.Module, input_ids: torch.Tensor, structures: tuple[str, ...] = STRUCTURES,
                    ffn_score: str = "paper", memory_bytes: int = DEFAULT_MEMORY,
                    dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """PLND importance of every neuron for ONE unpadded input ``input_ids`` ``long[T]`` (or ``[1, T]``).

    Returns ``{"ffn": float32[layers, d_ff], "attn.q": float32[layers, H*D], "attn.k": float32[layers, H_kv*D],
    "attn.v": float32[layers, H_kv*D]}`` (the structures that exist on this family; the others get a one-line
    warning). ``memory_bytes`` bounds the attention computation's working memory; ``dtype`` is the compute dtype.
    """
    from langneurons.recording.recorder import Batch, run_batches
    from langneurons.stats.base import BatchInfo

    ids = torch.as_tensor(input_ids, dtype=torch.long)
    ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise LangNeuronsError(f"plnd_importance takes one input long[T], got shape {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        raise LangNeuronsError("plnd_importance got an empty input")
    found: list[dict[str, torch.Tensor]] = []
    feeder = PLNDFeeder(model, lambda lang, sample, result, tokens: found.append(result), structures, ffn_score,
                        memory_bytes, dtype)
    run_batches(model, feeder.providers, [Batch(BatchInfo("input"), ids)], [feeder], progress=False)
    return found[0]
