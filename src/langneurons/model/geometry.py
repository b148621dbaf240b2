"""The geometry of a loaded model: heads, key/value heads, head dim, where q / k / v sit, norm and head.

:func:`model_geometry` reads the head counts from the config (by the alias lists below), the layout
of the projections, the positional scheme, the final norm and the output head from the architecture
registry, checks them against the projection shapes of every layer and, unless ``validate=False``,
checks on a 4-token forward pass that

* the value heads split out of the projection by this geometry are the ones the model's attention
  function receives (where :mod:`langneurons.model.attention` can see them), and
* final norm + output head (+ logit scaling / soft-capping) of the last layer's output reproduce the
  model's own logits (:mod:`langneurons.model.lens`),

so a wrong mapping is caught on the first use. Canonical order everywhere is head-major: the query
columns are ``[q_0 | q_1 | ... | q_{H-1}]``, each ``head_dim`` wide, and key / value columns
``[k_0 | ... | k_{H_kv-1}]``; query head ``h`` reads key/value head ``h // (H / H_kv)``.

:func:`write_vectors` gives, for every neuron of a site, the vector it writes into the residual
stream, so contribution scores are ``|a_k| * ||write_vectors[k]||``.
"""

from __future__ import annotations

import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.model.architectures import ArchitectureSpec, get_submodule, resolve_architecture

HIDDEN_ALIASES = ["hidden_size", "n_embd", "d_model", "embed_dim"]
HEADS_ALIASES = ["num_attention_heads", "n_head", "num_heads", "attention_heads", "n_heads"]
KV_HEADS_ALIASES = ["num_key_value_heads", "num_kv_heads", "n_head_kv", "multi_query_group_num"]
HEAD_DIM_ALIASES = ["head_dim", "attention_head_size", "kv_channels"]
PARTIAL_ROTARY_ALIASES = ["partial_rotary_factor", "rotary_pct"]
QK_NORM_ALIASES = ["q_norm", "k_norm", "q_layernorm", "k_layernorm"]
#: config attributes applied to the output head's logits: multiplied, divided, soft-capped (in this order)
LOGIT_MULTIPLIER_ALIASES = ["logit_scale"]
LOGIT_DIVISOR_ALIASES = ["logits_scaling"]
LOGIT_SOFTCAP_ALIASES = ["final_logit_softcapping"]

#: sites whose neurons write into the residual stream through a projection: site -> spec attribute
WRITING_SITES = {"ffn.act": "ffn_down", "ffn.down_in": "ffn_down", "attn.o_in": "attn_o"}


def _falcon_layout(config: Any, num_heads: int) -> tuple[str, int]:
    """Falcon: new decoder architecture = grouped per kv head; else multi-query ``[q | k | v]`` or per head."""
    if getattr(config, "new_decoder_architecture", False):
        return "interleaved", int(getattr(config, "num_kv_heads", None) or num_heads)
    if getattr(config, "multi_query", False):
        return "concat", 1
    return "interleaved", num_heads


#: layout rules that read the config: name (an ``ArchitectureSpec.qkv_layout``) -> (layout, H_kv)
LAYOUT_RULES: dict[str, Callable[[Any, int], tuple[str, int]]] = {"falcon": _falcon_layout}


def config_value(config: Any, aliases: list[str]) -> Any:
    """The first alias attribute of ``config`` that is set (not ``None``), else ``None``."""
    for name in aliases:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return None


@dataclass(frozen=True)
class ModelGeometry:
    """Heads, layout, positions, final norm and output head of one loaded model.

    ``qkv_layout`` is ``"separate"``, ``"concat"`` or ``"interleaved"`` (see
    :class:`~langneurons.model.architectures.ArchitectureSpec`); ``positions`` is ``"rotary_half"``,
    ``"rotary_interleaved"``, ``"alibi"``, ``"absolute"`` or ``None`` (unknown); ``rotary_dim`` is the
    number of rotated coordinates at the start of each head (``None`` without rotary). ``qk_norm``
    names norms applied to q / k between the ``attn.q`` / ``attn.k`` sites and the rotary embedding
    (Qwen3, OLMo-2, Gemma-3): there the sites are pre-norm. Paths: ``layers`` and ``final_norm``,
    ``head_pre``, ``output_head`` from the ``*ForCausalLM`` module; ``attention`` from a decoder layer.
    The logits are ``softcap(head(head_pre(norm(h))) * logit_multiplier)`` with
    ``softcap(x) = c * tanh(x / c)`` when ``logit_softcap = c`` is set.
    """

    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_layout: str | None
    positions: str | None
    rotary_dim: int | None
    qk_norm: tuple[str, ...]
    layers: str
    attention: str | None
    final_norm: str | None
    head_pre: tuple[str, ...]
    output_head: str | None
    logit_multiplier: float = 1.0
    logit_softcap: float | None = None
    attention_capture: bool | None = None
    spec: ArchitectureSpec | None = field(default=None, compare=False, repr=False)

    @property
    def kv_group_size(self) -> int:
        """Query heads per key/value head, ``H / H_kv``."""
        return self.num_heads // self.num_kv_heads

    def kv_head_of(self, head: int | torch.Tensor) -> int | torch.Tensor:
        """The key/value head query head ``head`` reads: ``head // (H / H_kv)``."""
        return head // self.kv_group_size

    @property
    def widths(self) -> dict[str, int]:
        """Width of the canonical q / k / v vectors: ``H * D``, ``H_kv * D``, ``H_kv * D``."""
        kv = self.num_kv_heads * self.head_dim
        return {"q": self.num_heads * self.head_dim, "k": kv, "v": kv}

    def qkv_columns(self) -> dict[str, torch.Tensor]:
        """``long[width]`` per part ``"q"``, ``"k"``, ``"v"``: its columns in the fused projection output.

        For ``"separate"`` projections these index ``[q | k | v]`` concatenated.
        """
        heads, kv, dim = self.num_heads, self.num_kv_heads, self.head_dim
        if self.qkv_layout in ("separate", "concat"):
            q, k = heads * dim, kv * dim
            return {"q": torch.arange(q), "k": torch.arange(q, q + k), "v": torch.arange(q + k, q + 2 * k)}
        if self.qkv_layout != "interleaved":
            raise LangNeuronsError(f"model type {self.model_type!r}: the layout of the fused query-key-value "
                                   "projection is unknown; register it with langneurons.register_architecture("
                                   "model_type, ..., qkv_layout='concat' | 'interleaved')")
        group = self.kv_group_size
        block = (group + 2) * dim
        offsets = torch.arange(dim)
        q = [g * block + j * dim + offsets for g in range(kv) for j in range(group)]
        k = [g * block + group * dim + offsets for g in range(kv)]
        v = [g * block + (group + 1) * dim + offsets for g in range(kv)]
        return {"q": torch.cat(q), "k": torch.cat(k), "v": torch.cat(v)}

    def split_qkv(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``fused[..., (H + 2 H_kv) D]`` -> ``q[..., H D]``, ``k[..., H_kv D]``, ``v[..., H_kv D]`` (head-major)."""
        columns = self.qkv_columns()
        index = {part: cols.to(fused.device) for part, cols in columns.items()}
        return tuple(fused.index_select(-1, index[part]) for part in ("q", "k", "v"))  # type: ignore[return-value]

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """``x[..., n * D]`` -> ``[..., n, D]`` (a view)."""
        return x.unflatten(-1, (x.shape[-1] // self.head_dim, self.head_dim))

    def rotary_partner(self, coordinate: int) -> int | None:
        """The post-rotary coordinate that a pre-rotary coordinate ``coordinate`` of a head shares a rotation with.

        ``None`` when the coordinate is not rotated (no rotary, or beyond ``rotary_dim``).
        """
        self._known_positions()
        r = self.rotary_dim
        if r is None or coordinate >= r:
            return None
        if self.positions == "rotary_interleaved":
            return coordinate ^ 1
        return coordinate + r // 2 if coordinate < r // 2 else coordinate - r // 2

    def rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Apply the rotary embedding as the model does: ``x[B, n, T, D]``, ``cos``/``sin[B, T, rotary_dim]``.

        ``cos``/``sin`` are the ``position_embeddings`` the attention module receives
        (:attr:`langneurons.model.attention.AttentionInputs.cos`).
        """
        self._known_positions()
        if self.rotary_dim is None:
            return x
        r = cos.shape[-1]
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        rot, rest = x[..., :r], x[..., r:]
        if self.positions == "rotary_interleaved":
            turned = torch.stack((-rot[..., 1::2], rot[..., ::2]), dim=-1).flatten(-2)
        else:
            turned = torch.cat((-rot[..., r // 2:], rot[..., : r // 2]), dim=-1)
        return torch.cat((rot * cos + turned * sin, rest), dim=-1)

    def _known_positions(self) -> None:
        if self.positions is None:
            raise LangNeuronsError(f"model type {self.model_type!r}: the positional scheme is unknown; register it "
                                   "with langneurons.register_architecture(..., positions='rotary_half' | "
                                   "'rotary_interleaved' | 'alibi' | 'absolute')")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("spec")
        return out


def in_out_features(module: nn.Module) -> tuple[int, int] | None:
    """``(in, out)`` features of a linear layer (``nn.Linear`` or GPT-2's transposed ``Conv1D``), else ``None``."""
    if hasattr(module, "nf") and hasattr(module, "nx"):  # transformers.pytorch_utils.Conv1D: weight [in, out]
        return int(module.nx), int(module.nf)
    if isinstance(module, nn.Linear) or (hasattr(module, "in_features") and hasattr(module, "out_features")):
        return int(module.in_features), int(module.out_features)
    return None


def weight_in_out(module: nn.Module) -> torch.Tensor:
    """A linear layer's weight as ``[in, out]`` (``y = x @ W + b``): ``nn.Linear.weight.T`` or ``Conv1D.weight``."""
    weight = getattr(module, "weight", None)
    features = in_out_features(module)
    if weight is None or features is None or weight.dim() != 2:
        raise LangNeuronsError(f"cannot read the weight of {type(module).__name__} as a matrix")
    if hasattr(module, "nf") and hasattr(module, "nx"):  # Conv1D stores [in, out]
        return weight.detach()
    return weight.detach().t()  # nn.Linear and its subclasses store [out, in]


def write_vectors(model: nn.Module, site: str, layer: int) -> torch.Tensor:
    """``[width, hidden]``: row ``k`` is the vector neuron ``k`` of ``site`` at ``layer`` writes into the residual.

    ``ffn.down_in``: neuron ``k`` (the ``k``-th input of the down projection) adds ``a_k * v_k`` with
    ``v_k`` column ``k`` of ``W_down`` (an ``nn.Linear`` weight ``[hidden, d_ff]``; row ``k`` of a
    ``Conv1D`` weight), so ``sum_k a_k v_k + bias`` is the module output. ``attn.o_in``: column ``k`` of
    ``W_o``. ``ffn.act``: the same rows; for non-gated MLPs exact, but for **gated** MLPs the
    activation ``a_k = act(gate_k(x))`` writes ``up_k(x) * v_k`` (the ``up`` factor varies per token),
    so exact contributions of gated families use the site ``ffn.down_in``. A view of the weight, no copy.
    """
    if site not in WRITING_SITES:
        raise LangNeuronsError(f"the site {site!r} writes nothing into the residual stream directly; "
                               f"write vectors exist for {', '.join(WRITING_SITES)}")
    module = _layer_module(model, WRITING_SITES[site], layer)
    return weight_in_out(module)


def write_bias(model: nn.Module, site: str, layer: int) -> torch.Tensor | None:
    """``[hidden]``: the bias the projection after ``site`` adds (``None`` without one)."""
    module = _layer_module(model, WRITING_SITES.get(site, ""), layer) if site in WRITING_SITES else None
    bias = getattr(module, "bias", None)
    return None if bias is None else bias.detach()


def _layer_module(model: nn.Module, attribute: str, layer: int) -> nn.Module:
    spec = resolve_architecture(model)
    path = getattr(spec, attribute)
    layers = get_submodule(model, spec.layers)
    if path is None or layers is None or not 0 <= layer < len(layers):
        raise LangNeuronsError(f"model type {_model_type(model)!r}: no {attribute} module at layer {layer}")
    module = get_submodule(layers[layer], path)
    if module is None:
        raise LangNeuronsError(f"model type {_model_type(model)!r}: no module {path!r} in layer {layer}")
    return module


def _model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def _module_path(root: nn.Module, target: nn.Module | None) -> str | None:
    if target is None:
        return None
    return next((name for name, module in root.named_modules() if module is target), None)


def _rotary_dim(config: Any, head_dim: int) -> int:
    rope = getattr(config, "rope_parameters", None) or {}
    factor = rope.get("partial_rotary_factor") if isinstance(rope, dict) else None
    if factor is None:
        factor = config_value(config, PARTIAL_ROTARY_ALIASES)
    return int(head_dim * (1.0 if factor is None else float(factor)))


def build_geometry(model: nn.Module) -> ModelGeometry:
    """The geometry read from the config and the registry, checked against the projection shapes (no forward)."""
    spec = resolve_architecture(model)
    config = getattr(model, "config", None)
    model_type = _model_type(model)
    layers = get_submodule(model, spec.layers)
    hidden, heads = config_value(config, HIDDEN_ALIASES), config_value(config, HEADS_ALIASES)
    if hidden is None or heads is None:
        raise LangNeuronsError(f"model type {model_type!r}: the config names no hidden size or number of heads "
                               f"(looked for {HIDDEN_ALIASES} and {HEADS_ALIASES})")
    hidden, heads = int(hidden), int(heads)
    layout = spec.qkv_layout
    if layout in LAYOUT_RULES:
        layout, kv_heads = LAYOUT_RULES[layout](config, heads)
    else:
        kv_heads = int(config_value(config, KV_HEADS_ALIASES) or heads)
    head_dim = int(config_value(config, HEAD_DIM_ALIASES) or hidden // heads)
    positions = spec.positions
    if spec.alibi_flag and getattr(config, spec.alibi_flag, False):
        positions = "alibi"
    rotary_dim = _rotary_dim(config, head_dim) if positions and positions.startswith("rotary") else None
    attention = spec.attention_module
    first_attention = get_submodule(layers[0], attention) if attention else None
    qk_norm = tuple(f"{attention}.{name}" for name in QK_NORM_ALIASES
                    if first_attention is not None and isinstance(getattr(first_attention, name, None), nn.Module))
    final_norm = spec.final_norm if spec.final_norm and get_submodule(model, spec.final_norm) is not None else None
    head_pre = tuple(path for path in spec.head_pre if get_submodule(model, path) is not None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    multiplier = float(config_value(config, LOGIT_MULTIPLIER_ALIASES) or 1.0)
    divisor = config_value(config, LOGIT_DIVISOR_ALIASES)
    if divisor:
        multiplier /= float(divisor)
    softcap = config_value(config, LOGIT_SOFTCAP_ALIASES)
    has_attention = spec.attn_qkv is not None or spec.attn_q is not None
    geometry = ModelGeometry(
        model_type=model_type, num_layers=len(layers), hidden_size=hidden, num_heads=heads, num_kv_heads=kv_heads,
        head_dim=head_dim, qkv_layout=layout if has_attention else None, positions=positions, rotary_dim=rotary_dim,
        qk_norm=qk_norm, layers=spec.layers, attention=attention, final_norm=final_norm, head_pre=head_pre,
        output_head=_module_path(model, head), logit_multiplier=multiplier,
        logit_softcap=float(softcap) if softcap else None, spec=spec,
    )
    check_shapes(model, geometry, spec)
    return geometry


def check_shapes(model: nn.Module, geometry: ModelGeometry, spec: ArchitectureSpec) -> None:
    """Raise when the projections of some layer do not have the widths the geometry implies."""
    g = geometry
    if g.num_heads % g.num_kv_heads:
        raise LangNeuronsError(f"model type {g.model_type!r}: {g.num_heads} heads are not a multiple of "
                               f"{g.num_kv_heads} key/value heads")
    widths = g.widths
    expected: dict[str, tuple[int | None, int | None]] = {
        "attn_q": (g.hidden_size, widths["q"]), "attn_k": (g.hidden_size, widths["k"]),
        "attn_v": (g.hidden_size, widths["v"]), "attn_qkv": (g.hidden_size, sum(widths.values())),
        "attn_o": (widths["q"], None),
    }
    layers = get_submodule(model, spec.layers)
    for attribute, (want_in, want_out) in expected.items():
        path = getattr(spec, attribute)
        if path is None:
            continue
        for index, layer in enumerate(layers):
            module = get_submodule(layer, path)
            features = None if module is None else in_out_features(module)
            if features is None:
                continue  # not a plain linear layer (e.g. quantised): nothing to check against
            if (want_in is not None and features[0] != want_in) or (want_out is not None and features[1] != want_out):
                raise LangNeuronsError(
                    f"model type {g.model_type!r}: {path} of layer {index} maps {features[0]} -> {features[1]} "
                    f"features, but the config gives {g.num_heads} heads, {g.num_kv_heads} key/value heads of "
                    f"dimension {g.head_dim} (expected {want_in} -> {want_out or 'any'}); fix the config or "
                    "register the architecture")


_CACHE: "weakref.WeakKeyDictionary[nn.Module, ModelGeometry]" = weakref.WeakKeyDictionary()


def model_geometry(model: nn.Module, validate: bool = True) -> ModelGeometry:
    """The validated :class:`ModelGeometry` of ``model`` (computed once per model object).

    With ``validate`` a 4-token forward pass checks the value split against the model's attention
    inputs (where attention capture is possible) and the final norm / output head against the logits;
    on an unknown fused layout it picks the one that matches the model. Raises
    :class:`LangNeuronsError` naming the model type when something does not match.
    """
    cached = _CACHE.get(model)
    if cached is not None and (cached.attention_capture is not None or not validate):
        return cached
    geometry = build_geometry(model)
    if validate:
        from langneurons.model.geometry_check import validate_geometry

        geometry = validate_geometry(model, geometry)
    _CACHE[model] = geometry
    return geometry
