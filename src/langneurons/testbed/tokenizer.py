"""Byte-level BPE tokenizer for the toy models.

The tokenizer is trained with the ``tokenizers`` library on an even sample of every language and
wrapped in a :class:`transformers.PreTrainedTokenizerFast` so that
``AutoTokenizer.from_pretrained(dir)`` loads it. Like Llama's tokenizer it prepends ``<s>`` when
called with ``add_special_tokens=True`` (the default) and never appends ``</s>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
SPECIAL_TOKENS = [BOS, EOS, PAD]


def even_sample(
    texts_by_lang: Mapping[str, Sequence[str]], max_chars_per_lang: int | None = None
) -> list[str]:
    """Same number of characters from every language (the smallest language's, or the cap).

    Lines are taken evenly spaced across each language's text, deterministically.
    """
    sizes = {lang: sum(len(line) for line in lines) for lang, lines in texts_by_lang.items()}
    budget = min(sizes.values()) if sizes else 0
    if max_chars_per_lang is not None:
        budget = min(budget, max_chars_per_lang)
    sample: list[str] = []
    for lang, lines in texts_by_lang.items():
        if not lines:
            continue
        fraction = min(1.0, budget / max(1, sizes[lang]))
        n_lines = max(1, int(round(len(lines) * fraction)))
        step = len(lines) / n_lines
        sample.extend(lines[int(i * step)] for i in range(n_lines))
    return sample


def train_bpe_tokenizer(
    texts_by_lang: Mapping[str, Sequence[str]],
    vocab_size: int = 12000,
    max_chars_per_lang: int | None = 2_000_000,
    min_frequency: int = 2,
):
    """Train a byte-level BPE tokenizer on an even sample of each language.

    Returns a :class:`transformers.PreTrainedTokenizerFast` with ``bos``/``eos``/``pad`` set.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(even_sample(texts_by_lang, max_chars_per_lang), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        model_max_length=1_000_000,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str | Path):
    """Load a saved toy tokenizer (or any tokenizer) with ``AutoTokenizer``, checking bos/eos."""
    from transformers import AutoTokenizer

    from langneurons.errors import LangNeuronsError

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.eos_token_id is None:
        raise LangNeuronsError(f"tokenizer in {path} has no eos token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def encode_lines(tokenizer, lines: Sequence[str], batch_size: int = 2048) -> list[list[int]]:
    """Token ids of each line, without special tokens (fast batch encoding)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    out: list[list[int]] = []
    for start in range(0, len(lines), batch_size):
        chunk = list(lines[start : start + batch_size])
        if backend is not None:
            out.extend(enc.ids for enc in backend.encode_batch(chunk, add_special_tokens=False))
        else:  # pragma: no cover - slow tokenizers
            out.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    return out
