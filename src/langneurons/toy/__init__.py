"""Toy multilingual causal LMs: tokenizer and model training (``langneurons toy train``).

Heavy dependencies (torch, transformers) are imported only when a function is called.
"""

from __future__ import annotations

from langneurons.toy.train import ARCHS, train_toy_model

__all__ = ["ARCHS", "train_toy_model"]
