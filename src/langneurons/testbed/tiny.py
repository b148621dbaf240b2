"""Tiny random-weight models of every supported family and a byte-level tokenizer, for tests.

Nothing here downloads anything: configs are built from the installed ``transformers`` with hidden
size 32, 2 layers and a small vocabulary, and the tokenizer is trained on the text it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

#: Family -> keyword arguments of a tiny config (hidden 32, 2 layers, FFN width 64 unless fixed).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    "mistral": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=8),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2),
    "gemma": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=8),
    "gemma2": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=8),
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4),
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128),
    "opt": dict(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, word_embed_proj_dim=32,
                max_position_embeddings=128),
    "xglm": dict(d_model=32, ffn_dim=64, num_layers=2, attention_heads=4, max_position_embeddings=128),
    "phi": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    "phi3": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
    "falcon": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, new_decoder_architecture=False,
                   multi_query=True),
    "olmo": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
}


_GQA = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)

#: More model types, for the geometry tests (not part of every recorder test).
TINY_MORE: dict[str, dict[str, Any]] = {
    "qwen3": dict(_GQA, head_dim=8),
    "gemma3_text": dict(_GQA, head_dim=8),
    "olmo2": dict(_GQA),
    "granite": dict(_GQA, logits_scaling=4.0, attention_multiplier=0.5),
    "cohere": dict(_GQA, logit_scale=0.5),
    "stablelm": dict(_GQA),
}

#: Named variants of a family: name -> (model type, config overrides).
TINY_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "falcon_gqa": ("falcon", dict(new_decoder_architecture=True, num_kv_heads=2)),
    "falcon_mha": ("falcon", dict(multi_query=False)),
    "falcon_alibi": ("falcon", dict(alibi=True)),
    "phi3_mha": ("phi3", dict(num_key_value_heads=4)),
    "gpt_neox_full_rotary": ("gpt_neox", dict(rotary_pct=1.0)),
}

#: Every name :func:`tiny_model` accepts.
TINY_NAMES = sorted({*TINY_CONFIGS, *TINY_MORE, *TINY_VARIANTS})


def tiny_config(family: str, vocab_size: int = 300, **overrides: Any):
    """A tiny ``PretrainedConfig`` of ``family`` (a ``config.model_type`` or a name in :data:`TINY_VARIANTS`)."""
    from transformers import AutoConfig

    model_type, variant = TINY_VARIANTS.get(family, (family, {}))
    base = TINY_CONFIGS.get(model_type) or TINY_MORE[model_type]
    kwargs = {**base, **variant, "vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 1,
              "eos_token_id": 2, **overrides}
    return AutoConfig.for_model(model_type, **kwargs)


def tiny_model(family: str, vocab_size: int = 300, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A tiny random-weight ``*ForCausalLM`` of ``family`` in eval mode, float32, on the CPU.

    ``attn_implementation`` (``"sdpa"``, ``"eager"``) may be passed among ``overrides``.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    implementation = overrides.pop("attn_implementation", None)
    extra = {} if implementation is None else {"attn_implementation": implementation}
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, **overrides), **extra)
    return model.eval()


def train_byte_tokenizer(texts: list[str], out_dir: str | Path, vocab_size: int = 300):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` and saved to ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(str(out_dir))
    return fast
