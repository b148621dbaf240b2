"""Where the neurons live in each model family: a registry of module names, not branches.

An :class:`ArchitectureSpec` names, relative to the causal LM, the list of decoder layers and,
relative to one decoder layer, the FFN activation module (whose output is the neuron activation
``act_fn(W_1 x)``), the down projection (whose input is the vector fed to ``W_down``) and the
attention projections. Specs are keyed on ``config.model_type``; a model type that is not
registered is mapped by trying the alias lists below, and every mapping is validated on the loaded
model (see :func:`langneurons.model.sites.validate_site` and
:func:`langneurons.model.geometry.model_geometry`).

The geometry fields (``qkv_layout``, ``positions``, ``final_norm``, ``head_pre``) are data too: the
head counts are read from the config by alias lists in :mod:`langneurons.model.geometry` and checked
against the projection shapes there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from torch import nn

from langneurons.errors import LangNeuronsError


@dataclass(frozen=True)
class ArchitectureSpec:
    """Module names of one model family.

    Attributes:
        layers: dotted path, from the ``*ForCausalLM`` module, of the ``ModuleList`` of decoder layers.
        ffn_act: path, from a decoder layer, of the activation module; its output ``[..., d_ff]``
            is the neuron activation (``act_fn(gate_proj(x))`` for gated MLPs).
        ffn_down: path, from a decoder layer, of the down projection; its input ``[..., d_ff]``
            is the neuron vector multiplied by ``W_down``.
        attn_q, attn_k, attn_v: paths of the separate query / key / value projections, if any.
        attn_qkv: path of a fused query-key-value projection, if the family fuses them.
        attn_o: path of the attention output projection; its input is the concatenated heads.
        gated: whether the FFN is gated (``act(gate) * up``), for documentation and provenance.
        attn: path, from a decoder layer, of the attention module (the ``module`` an attention
            function is called with); ``None`` means the parent of ``attn_o``.
        qkv_layout: how the query / key / value columns sit in the projection outputs: ``"separate"``
            (three modules), ``"concat"`` (one fused output ``[q | k | v]``), ``"interleaved"`` (one
            fused output, per key/value head ``g`` the block ``[q_{g r} .. q_{g r + r - 1} | k_g | v_g]``
            with ``r = H / H_kv``; ``r = 1`` is BLOOM's and GPT-NeoX's per-head ``[q_h | k_h | v_h]``), or the
            name of a rule in :data:`langneurons.model.geometry.LAYOUT_RULES` that reads the config
            (``"falcon"``). ``None``: unknown (a discovered fused family; inferred on load when possible).
        positions: ``"rotary_half"`` (rotary on pairs ``(i, i + r/2)``), ``"rotary_interleaved"`` (pairs
            ``(2i, 2i + 1)``), ``"alibi"``, ``"absolute"`` (learned / sinusoidal embeddings) or ``None``.
        alibi_flag: a config attribute that, when true, replaces the rotary embedding by ALiBi (Falcon).
        final_norm: path, from the ``*ForCausalLM`` module, of the norm after the last layer (``None``
            when the model has none).
        head_pre: paths of modules applied between the final norm and the output head, when present
            (OPT's ``project_out``); a path missing from the loaded model is skipped.
    """

    layers: str
    ffn_act: str
    ffn_down: str
    attn_o: str | None = None
    attn_q: str | None = None
    attn_k: str | None = None
    attn_v: str | None = None
    attn_qkv: str | None = None
    gated: bool = False
    attn: str | None = None
    qkv_layout: str | None = "separate"
    positions: str | None = "rotary_half"
    alibi_flag: str | None = None
    final_norm: str | None = "model.norm"
    head_pre: tuple[str, ...] = ()
    notes: str = ""

    @property
    def attention_module(self) -> str | None:
        """Path, from a decoder layer, of the attention module (``attn`` or the parent of ``attn_o``)."""
        if self.attn is not None:
            return self.attn
        return self.attn_o.rsplit(".", 1)[0] if self.attn_o and "." in self.attn_o else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_LLAMA_LIKE = ArchitectureSpec(
    layers="model.layers",
    ffn_act="mlp.act_fn",
    ffn_down="mlp.down_proj",
    attn_q="self_attn.q_proj",
    attn_k="self_attn.k_proj",
    attn_v="self_attn.v_proj",
    attn_o="self_attn.o_proj",
    gated=True,
)

_NEOX_LIKE = dict(ffn_act="mlp.act", ffn_down="mlp.dense_4h_to_h")

_REGISTRY: dict[str, ArchitectureSpec] = {
    "cohere": replace(_LLAMA_LIKE, positions="rotary_interleaved"),
    **{
        name: _LLAMA_LIKE
        for name in (
            "llama",
            "mistral",
            "mixtral_dense",
            "qwen2",
            "qwen3",
            "gemma",
            "gemma2",
            "gemma3_text",
            "olmo",
            "olmo2",
            "granite",
            "stablelm",
        )
    },
    "bloom": ArchitectureSpec(
        layers="transformer.h",
        ffn_act="mlp.gelu_impl",
        ffn_down="mlp.dense_4h_to_h",
        attn_qkv="self_attention.query_key_value",
        attn_o="self_attention.dense",
        qkv_layout="interleaved",
        positions="alibi",
        final_norm="transformer.ln_f",
    ),
    "gpt2": ArchitectureSpec(
        layers="transformer.h", ffn_act="mlp.act", ffn_down="mlp.c_proj", attn_qkv="attn.c_attn", attn_o="attn.c_proj",
        qkv_layout="concat", positions="absolute", final_norm="transformer.ln_f",
    ),
    "opt": ArchitectureSpec(
        layers="model.decoder.layers",
        ffn_act="activation_fn",
        ffn_down="fc2",
        attn_q="self_attn.q_proj",
        attn_k="self_attn.k_proj",
        attn_v="self_attn.v_proj",
        attn_o="self_attn.out_proj",
        positions="absolute",
        final_norm="model.decoder.final_layer_norm",
        head_pre=("model.decoder.project_out",),
    ),
    "xglm": ArchitectureSpec(
        layers="model.layers",
        ffn_act="activation_fn",
        ffn_down="fc2",
        attn_q="self_attn.q_proj",
        attn_k="self_attn.k_proj",
        attn_v="self_attn.v_proj",
        attn_o="self_attn.out_proj",
        positions="absolute",
        final_norm="model.layer_norm",
    ),
    "phi": ArchitectureSpec(
        layers="model.layers",
        ffn_act="mlp.activation_fn",
        ffn_down="mlp.fc2",
        attn_q="self_attn.q_proj",
        attn_k="self_attn.k_proj",
        attn_v="self_attn.v_proj",
        attn_o="self_attn.dense",
        final_norm="model.final_layernorm",
    ),
    "phi3": ArchitectureSpec(
        layers="model.layers",
        ffn_act="mlp.activation_fn",
        ffn_down="mlp.down_proj",
        attn_qkv="self_attn.qkv_proj",
        attn_o="self_attn.o_proj",
        gated=True,
        qkv_layout="concat",
    ),
    "gpt_neox": ArchitectureSpec(
        layers="gpt_neox.layers", attn_qkv="attention.query_key_value", attn_o="attention.dense",
        qkv_layout="interleaved", final_norm="gpt_neox.final_layer_norm", **_NEOX_LIKE
    ),
    "falcon": ArchitectureSpec(
        layers="transformer.h", attn_qkv="self_attention.query_key_value", attn_o="self_attention.dense",
        qkv_layout="falcon", alibi_flag="alibi", final_norm="transformer.ln_f", **_NEOX_LIKE
    ),
}

# Fallback discovery for unregistered model types: the first alias that exists in the model wins.
LAYER_ALIASES = ["model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "transformer.layers",
                 "model.transformer.h", "layers", "decoder.layers"]
FFN_ACT_ALIASES = ["mlp.act_fn", "mlp.act", "mlp.activation_fn", "mlp.gelu_impl", "activation_fn", "mlp.activation",
                   "feed_forward.act_fn", "ffn.act_fn", "mlp.act_fn_1"]
FFN_DOWN_ALIASES = ["mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h", "fc2", "feed_forward.down_proj",
                    "mlp.w2", "ffn.down_proj"]
FINAL_NORM_ALIASES = ["model.norm", "transformer.ln_f", "model.final_layernorm", "gpt_neox.final_layer_norm",
                      "model.decoder.final_layer_norm", "model.layer_norm", "transformer.norm_f", "model.norm_f"]
ATTN_ALIASES = {
    "attn_q": ["self_attn.q_proj", "attention.q_proj", "attn.q_proj"],
    "attn_k": ["self_attn.k_proj", "attention.k_proj", "attn.k_proj"],
    "attn_v": ["self_attn.v_proj", "attention.v_proj", "attn.v_proj"],
    "attn_qkv": ["self_attn.qkv_proj", "self_attention.query_key_value", "attention.query_key_value", "attn.c_attn"],
    "attn_o": ["self_attn.o_proj", "self_attn.out_proj", "self_attn.dense", "self_attention.dense",
               "attention.dense", "attn.c_proj", "attn.out_proj"],
}


def register_architecture(model_type: str, spec: ArchitectureSpec | None = None, **names: Any) -> ArchitectureSpec:
    """Register (or replace) the module names of a model family.

    Either pass a full ``spec`` or keyword names (``layers=..., ffn_act=..., ffn_down=...``).
    Returns the registered spec.
    """
    if spec is None:
        try:
            spec = ArchitectureSpec(**names)
        except TypeError as exc:
            raise LangNeuronsError(f"register_architecture({model_type!r}): {exc}") from None
    _REGISTRY[model_type] = spec
    return spec


def registered_model_types() -> list[str]:
    """The model types with a registered spec, sorted."""
    return sorted(_REGISTRY)


def get_submodule(root: nn.Module, path: str) -> nn.Module | None:
    """The module at dotted ``path`` below ``root``, or ``None`` when it does not exist."""
    module: Any = root
    for part in path.split("."):
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and part.isdigit():
            index = int(part)
            module = module[index] if index < len(module) else None
        else:
            module = getattr(module, part, None)
        if module is None:
            return None
    return module if isinstance(module, nn.Module) else None


def _first_existing(root: nn.Module, aliases: list[str]) -> str | None:
    return next((alias for alias in aliases if get_submodule(root, alias) is not None), None)


def discover_architecture(model: nn.Module) -> ArchitectureSpec | None:
    """Map an unregistered model by the alias lists; ``None`` when the layers or FFN cannot be found."""
    layers_path = _first_existing(model, LAYER_ALIASES)
    if layers_path is None:
        return None
    layers = get_submodule(model, layers_path)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        return None
    first = layers[0]
    act = _first_existing(first, FFN_ACT_ALIASES)
    down = _first_existing(first, FFN_DOWN_ALIASES)
    if act is None or down is None:
        return None
    attn = {key: _first_existing(first, aliases) for key, aliases in ATTN_ALIASES.items()}
    gated = get_submodule(first, act.rsplit(".", 1)[0] + ".up_proj" if "." in act else "up_proj") is not None
    separate = all(attn[key] is not None for key in ("attn_q", "attn_k", "attn_v"))
    if separate:
        attn["attn_qkv"] = None
    return ArchitectureSpec(layers=layers_path, ffn_act=act, ffn_down=down, gated=gated, notes="discovered",
                            qkv_layout="separate" if separate else None, positions=None,
                            final_norm=_first_existing(model, FINAL_NORM_ALIASES), **attn)


def resolve_architecture(model: nn.Module) -> ArchitectureSpec:
    """The spec of ``model``: registered for its ``config.model_type``, else discovered by aliases.

    Raises :class:`LangNeuronsError` naming the model type when neither works.
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None) or type(model).__name__
    spec = _REGISTRY.get(model_type)
    if spec is not None and get_submodule(model, spec.layers) is not None:
        return spec
    spec = discover_architecture(model)
    if spec is None:
        raise LangNeuronsError(
            f"unsupported architecture: model type {model_type!r} ({type(model).__name__}) has no registered "
            "module names and none of the known aliases match; map it with "
            "langneurons.register_architecture(model_type, layers=..., ffn_act=..., ffn_down=...)"
        )
    return spec


def architecture_table() -> dict[str, dict[str, Any]]:
    """Every registered model type with its module names."""
    return {name: spec.to_dict() for name, spec in sorted(_REGISTRY.items())}
