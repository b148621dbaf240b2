"""The test bed: small multilingual models trained here (``langneurons toy train``), tiny random models for
tests (:mod:`langneurons.testbed.tiny`) and the demo on the bundled model (:mod:`langneurons.testbed.demo`).

Heavy dependencies (torch, transformers) are imported only when a function is called.
"""

from __future__ import annotations

from langneurons.testbed.train import ARCHS, train_toy_model

__all__ = ["ARCHS", "train_toy_model"]
