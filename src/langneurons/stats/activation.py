"""Per-language activation statistics of every neuron: the input of LAPE, LAP, LAVE and steering.

For each language ``k``, layer ``l`` and neuron ``i`` it keeps the number of tokens whose activation
is > 0 (int64), the sum and the sum of squares of the activation (float64), and the token count.
Two objects over disjoint shards of a corpus merge by addition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from langneurons.sets.artefacts import read_artefact, write_artefact
from langneurons.errors import LangNeuronsError
from langneurons.stats.base import BatchInfo
from langneurons.stats.reduce import REDUCE_CHUNK, LanguageSums, column_sums, reduce_blocks

__all__ = ["ActivationStats", "REDUCE_CHUNK", "column_sums", "load_stats", "reduce_blocks"]

KIND = "activation_stats"
SCHEMA_VERSION = 1
_FIELDS = ("positive_count", "activation_sum", "activation_sq_sum")


class ActivationStats(LanguageSums):
    """Running per-language statistics, tensors ``[language, layer, neuron]``.

    Attributes:
        languages: language codes, in tensor order.
        positive_count: ``int64[K, L, I]`` tokens with activation > 0.
        activation_sum, activation_sq_sum: ``float64[K, L, I]`` sum and sum of squares.
        token_count: ``int64[K]`` tokens seen per language (every layer sees every token).
        meta: provenance (model, site, dtype, corpus hashes, parameters, ...).
        sites: the site it is fed from in a recording (``(meta["site"],)``; empty: whatever one site is attached).
    """

    strategy = "blocks"

    def __init__(
        self,
        languages: list[str],
        positive_count: torch.Tensor,
        activation_sum: torch.Tensor,
        activation_sq_sum: torch.Tensor,
        token_count: torch.Tensor,
        meta: dict[str, Any] | None = None,
    ) -> None:
        shape = positive_count.shape
        if len(shape) != 3 or shape[0] != len(languages):
            raise LangNeuronsError(f"positive_count must be [language, layer, neuron], got {tuple(shape)}")
        if activation_sum.shape != shape or activation_sq_sum.shape != shape or token_count.shape != (len(languages),):
            raise LangNeuronsError("activation statistics tensors have inconsistent shapes")
        self.languages = list(languages)
        self.positive_count = positive_count
        self.activation_sum = activation_sum
        self.activation_sq_sum = activation_sq_sum
        self.token_count = token_count
        self.meta = dict(meta or {})
        self.reduce_dtype = torch.float32
        self.sites: tuple[str, ...] = (self.meta["site"],) if self.meta.get("site") else ()
        self._current: int | None = None
        self._mask: torch.Tensor | None = None
        self._scratch = None

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls, languages: list[str], num_layers: int, width: int, device: str | torch.device = "cpu",
              meta: dict[str, Any] | None = None, reduce_dtype: torch.dtype = torch.float32) -> "ActivationStats":
        """Zero statistics for ``languages`` on ``device``.

        ``reduce_dtype`` is the dtype of the per-block sums inside :meth:`update` (float32: fast, relative error
        ~1e-7 of the sum of magnitudes; float64: exact to double precision); accumulation is always float64.
        """
        shape = (len(languages), num_layers, width)
        stats = cls(
            languages,
            torch.zeros(shape, dtype=torch.int64, device=device),
            torch.zeros(shape, dtype=torch.float64, device=device),
            torch.zeros(shape, dtype=torch.float64, device=device),
            torch.zeros(len(languages), dtype=torch.int64, device=device),
            meta,
        )
        stats.reduce_dtype = reduce_dtype
        return stats

    @property
    def num_layers(self) -> int:
        return self.positive_count.shape[1]

    @property
    def width(self) -> int:
        return self.positive_count.shape[2]

    def to(self, device: str | torch.device) -> "ActivationStats":
        """Move the tensors (in place) and return ``self``."""
        for name in (*_FIELDS, "token_count"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    # -- streaming ----------------------------------------------------------------------------
    def add(self, language: str, layer: int, activations: torch.Tensor, count_tokens: bool = True) -> None:
        """Add the activations ``[..., width]`` of one layer for ``language`` (outside the recorder)."""
        n = activations.reshape(-1, activations.shape[-1]).shape[0]
        self.begin_batch(BatchInfo(language), 1, n if count_tokens else 0)
        self.update(layer, activations)
        self.end_batch()

    # -- algebra -------------------------------------------------------------------------------
    def merge(self, other: "ActivationStats") -> "ActivationStats":
        """Sum of two statistics over disjoint shards (languages are united)."""
        if (self.num_layers, self.width) != (other.num_layers, other.width):
            raise LangNeuronsError(
                f"cannot merge statistics of shape {self.num_layers}x{self.width} and {other.num_layers}x{other.width}"
            )
        for key in ("model", "site"):
            mine, theirs = self.meta.get(key), other.meta.get(key)
            if mine and theirs and mine != theirs:
                raise LangNeuronsError(f"cannot merge statistics with different {key}: {mine!r} vs {theirs!r}")
        languages = self.languages + [lang for lang in other.languages if lang not in self.languages]
        merged = ActivationStats.empty(languages, self.num_layers, self.width, meta=_merge_meta(self.meta, other.meta))
        for source in (self, other):
            index = torch.tensor([languages.index(lang) for lang in source.languages])
            for name in (*_FIELDS, "token_count"):
                getattr(merged, name).index_add_(0, index, getattr(source, name).cpu())
        return merged

    def select_languages(self, languages: list[str]) -> "ActivationStats":
        """A copy restricted to ``languages`` (in that order)."""
        missing = [lang for lang in languages if lang not in self.languages]
        if missing:
            raise LangNeuronsError(f"statistics have no language(s) {', '.join(missing)} (have {self.languages})")
        index = torch.tensor([self.languages.index(lang) for lang in languages])
        return ActivationStats(
            list(languages), *(getattr(self, name).index_select(0, index) for name in (*_FIELDS, "token_count")),
            meta=self.meta,
        )

    # -- derived quantities ----------------------------------------------------------------------
    def activation_probability(self) -> torch.Tensor:
        """``float64[K, L, I]``: P(activation > 0 | language), eq. 4 of the LAPE paper."""
        return self.positive_count.double() / self._tokens()

    def mean_activation(self) -> torch.Tensor:
        """``float64[K, L, I]``: mean activation per language."""
        return self.activation_sum / self._tokens()

    def activation_variance(self) -> torch.Tensor:
        """``float64[K, L, I]``: population variance of the activation per language."""
        mean = self.mean_activation()
        return (self.activation_sq_sum / self._tokens() - mean * mean).clamp_min(0)

    def _tokens(self) -> torch.Tensor:
        if bool((self.token_count == 0).any()):
            empty = [lang for lang, n in zip(self.languages, self.token_count.tolist()) if n == 0]
            raise LangNeuronsError(f"statistics have no tokens for language(s) {', '.join(empty)}")
        return self.token_count.double().view(-1, 1, 1).to(self.positive_count.device)

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).cpu() for name in (*_FIELDS, "token_count")}

    def save(self, directory: str | Path) -> Path:
        """Write ``tensors.safetensors`` + ``meta.json`` to ``directory`` (atomically)."""
        meta = {
            **self.meta,
            "languages": self.languages,
            "num_layers": self.num_layers,
            "width": self.width,
            "token_count": dict(zip(self.languages, self.token_count.tolist())),
        }
        return write_artefact(directory, KIND, SCHEMA_VERSION, self.state_dict(), meta)

    def __repr__(self) -> str:
        return (f"ActivationStats(languages={self.languages}, layers={self.num_layers}, width={self.width}, "
                f"tokens={self.token_count.tolist()}, site={self.meta.get('site')!r})")


def _merge_meta(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    meta = {key: value for key, value in first.items() if key not in ("shards", "corpus")}
    meta["shards"] = first.get("shards", [first.get("corpus")]) + second.get("shards", [second.get("corpus")])
    return meta


def load_stats(directory: str | Path) -> ActivationStats:
    """Load statistics written by :meth:`ActivationStats.save` (checksum verified)."""
    tensors, meta = read_artefact(directory, KIND, SCHEMA_VERSION)
    languages = meta.get("languages")
    try:
        return ActivationStats(languages, *(tensors[name] for name in (*_FIELDS, "token_count")), meta=meta)
    except KeyError as exc:
        raise LangNeuronsError(f"{str(directory)!r} lacks tensor {exc}") from None

