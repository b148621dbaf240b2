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


def tiny_config(family: str, vocab_size: int = 300, **overrides: Any):
    """A tiny ``PretrainedConfig`` of ``family`` (a ``config.model_type``)."""
    from transformers import AutoConfig

    kwargs = {**TINY_CONFIGS[family], "vocab_size": vocab_size, "pad_token_id": 0, "bos_token_id": 1,
              "eos_token_id": 2, **overrides}
    return AutoConfig.for_model(family, **kwargs)


def tiny_model(family: str, vocab_size: int = 300, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A tiny random-weight ``*ForCausalLM`` of ``family`` in eval mode, float32, on the CPU."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, vocab_size, **overrides))
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
