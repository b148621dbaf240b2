"""Per-sample pooled vectors on a parallel corpus (sentence embeddings, "Sharing Matters", "Lingua Franca").

For every language ``k``, sample ``s`` (a line of a line-aligned corpus) and layer ``l`` it keeps one
vector over the site's width: the last token's activation (``mode="last"``), or the mean / sum over the
sample's tokens (``"mean"`` / ``"sum"``). Padding never counts (``BatchInfo.token_mask``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from langneurons.sets.artefacts import read_artefact, write_artefact
from langneurons.errors import LangNeuronsError
from langneurons.stats.base import BatchInfo

KIND = "pooled_vectors"
SCHEMA_VERSION = 1
MODES = ("mean", "sum", "last")


class PooledVectors:
    """``vectors[language, sample, layer, width]`` (float32 by default, kept on the CPU)."""

    def __init__(self, languages: list[str], vectors: torch.Tensor, mode: str = "mean",
                 meta: dict[str, Any] | None = None) -> None:
        if mode not in MODES:
            raise LangNeuronsError(f"pooling mode must be one of {', '.join(MODES)}, got {mode!r}")
        if vectors.dim() != 4 or vectors.shape[0] != len(languages):
            raise LangNeuronsError(f"vectors must be [language, sample, layer, width], got {tuple(vectors.shape)}")
        self.languages, self.vectors, self.mode, self.meta = list(languages), vectors, mode, dict(meta or {})
        self._batch: BatchInfo | None = None

    @classmethod
    def empty(cls, languages: list[str], num_samples: int, num_layers: int, width: int, mode: str = "mean",
              dtype: torch.dtype = torch.float32, meta: dict[str, Any] | None = None) -> "PooledVectors":
        vectors = torch.zeros(len(languages), num_samples, num_layers, width, dtype=dtype)
        return cls(languages, vectors, mode, meta)

    @property
    def num_samples(self) -> int:
        return self.vectors.shape[1]

    @property
    def num_layers(self) -> int:
        return self.vectors.shape[2]

    @property
    def width(self) -> int:
        return self.vectors.shape[3]

    def language(self, language: str) -> torch.Tensor:
        """``[sample, layer, width]`` vectors of one language."""
        return self.vectors[self.languages.index(language)]

    # -- streaming (the recorder's SiteStatistic contract) ----------------------------------------
    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None:
        if batch.sample_ids is None:
            raise LangNeuronsError("pooled vectors need sample ids (a parallel corpus)")
        if batch.language not in self.languages:
            raise LangNeuronsError(f"language {batch.language!r} is not one of {self.languages}")
        self._batch = batch

    def update(self, layer: int, activations: torch.Tensor) -> None:
        """Pool ``activations[batch, seq, width]`` of ``layer`` per sample and store them."""
        batch = self._batch
        acts = activations.float()
        if batch.token_mask is None:
            mask = torch.ones(acts.shape[:2], dtype=torch.bool, device=acts.device)
        else:
            mask = batch.token_mask.to(acts.device)
        if self.mode == "last":
            last = mask.long().sum(1).clamp_min(1) - 1
            pooled = acts[torch.arange(acts.shape[0], device=acts.device), last]
        else:
            pooled = (acts * mask.unsqueeze(-1)).sum(1)
            if self.mode == "mean":
                pooled = pooled / mask.sum(1, keepdim=True).clamp_min(1)
        k = self.languages.index(batch.language)
        self.vectors[k, batch.sample_ids, layer] = pooled.to(self.vectors.device, self.vectors.dtype)

    def end_batch(self) -> None:
        self._batch = None

    # -- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"vectors": self.vectors}

    def save(self, directory: str | Path) -> Path:
        meta = {**self.meta, "languages": self.languages, "mode": self.mode, "num_samples": self.num_samples,
                "num_layers": self.num_layers, "width": self.width}
        return write_artefact(directory, KIND, SCHEMA_VERSION, self.state_dict(), meta)


def load_pooled(directory: str | Path) -> PooledVectors:
    """Load vectors written by :meth:`PooledVectors.save` (checksum verified)."""
    tensors, meta = read_artefact(directory, KIND, SCHEMA_VERSION)
    return PooledVectors(meta["languages"], tensors["vectors"], meta["mode"], meta)
