"""Per-language PLND importance statistics: what the PLND method consumes (``consumes = "importance"``).

PLND (Zhao et al. 2024, section 2.3) calls a neuron language-specific when it is important for EVERY input of
the language's corpus ("consistently activated"). Whether it was important for an input depends on a rule
(top-k per layer, or an importance threshold) the method chooses after recording, so the statistics keep,
per language ``k``, structure (``ffn``, ``attn.q``, ``attn.k``, ``attn.v``), layer ``l`` and neuron ``i``,
over the language's inputs ``c``:

* ``worst_rank[k, l, i] = max_c rank_c(l, i)``: the neuron's worst rank within its layer and structure
  (0 = the most important of the layer; ties broken by index). "In the top ``K`` of every input" is
  ``worst_rank < K``;
* ``importance_min[k, l, i] = min_c Imp(i | c)``: "above the threshold ``tau`` for every input" is
  ``importance_min >= tau``;
* ``importance_sum`` (float64), ``input_count[k]``, ``token_count[k]``: the mean importance.

Two statistics over disjoint inputs merge exactly (max, min, sums). Saved as an artefact
(``tensors.safetensors`` + ``meta.json``, kind ``plnd_importance``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from langneurons.errors import LangNeuronsError
from langneurons.sets.artefacts import read_artefact, write_artefact

KIND = "plnd_importance"
SCHEMA_VERSION = 1
_FIELDS = ("worst_rank", "importance_min", "importance_sum")


def _headline(artefact: Any) -> str | None:
    counts = artefact.meta.get("input_count")
    if not isinstance(counts, dict) or not counts:
        return None
    return (f"PLND importance of every neuron of {sum(counts.values()):,} inputs "
            f"({min(counts.values()):,} to {max(counts.values()):,} per language, {len(counts)} languages).")


def _register() -> None:
    from langneurons.report.sections import register_section
    from langneurons.sets.output import register_kind

    register_kind(KIND, SCHEMA_VERSION, "PLND importance reduced per language (worst rank, minimum, sum)")
    register_section(KIND, None, "PLND importance", 12, "What PLND recorded: model, corpus (files with SHA-256), "
                     "inputs and tokens per language, the structures scored (Zhao et al. section 2.2).", _headline)


_register()


def layer_ranks(importance: torch.Tensor) -> torch.Tensor:
    """``int32[layers, width]``: rank of each neuron within its layer, most important first (stable on ties)."""
    order = torch.sort(importance, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(importance.shape[-1]).expand_as(order))
    return ranks.to(torch.int32)


class ImportanceStats:
    """PLND importance reduced over each language's inputs (see the module docstring for the fields).

    Tensors per structure ``s``: ``worst_rank[s]`` ``int32[K, L, W_s]`` (-1: no input yet),
    ``importance_min[s]`` ``float32[K, L, W_s]`` (+inf: no input yet), ``importance_sum[s]`` ``float64[K, L, W_s]``;
    ``input_count``, ``token_count`` ``int64[K]``.
    """

    def __init__(self, languages: list[str], grids: Mapping[str, tuple[int, int]],
                 tensors: dict[str, Any] | None = None, meta: dict[str, Any] | None = None) -> None:
        if not languages:
            raise LangNeuronsError("importance statistics need at least one language")
        self.languages = list(languages)
        self.grids = {s: (int(g[0]), int(g[1])) for s, g in grids.items()}
        self.structures = list(self.grids)
        self.meta = dict(meta or {})
        k = len(self.languages)
        tensors = tensors or {}
        self.input_count = tensors.get("input_count", torch.zeros(k, dtype=torch.int64))
        self.token_count = tensors.get("token_count", torch.zeros(k, dtype=torch.int64))
        self.worst_rank, self.importance_min, self.importance_sum = {}, {}, {}
        for s, (layers, width) in self.grids.items():
            shape = (k, layers, width)
            self.worst_rank[s] = tensors.get(f"worst_rank.{s}", torch.full(shape, -1, dtype=torch.int32))
            self.importance_min[s] = tensors.get(f"importance_min.{s}", torch.full(shape, float("inf")))
            self.importance_sum[s] = tensors.get(f"importance_sum.{s}", torch.zeros(shape, dtype=torch.float64))
            for name in _FIELDS:
                if tuple(getattr(self, name)[s].shape) != shape:
                    raise LangNeuronsError(f"importance tensor {name}.{s} is {tuple(getattr(self, name)[s].shape)}, "
                                           f"expected {shape}")

    # -- one input at a time ------------------------------------------------------------------------
    def add(self, language: str, importance: Mapping[str, torch.Tensor], tokens: int = 0) -> None:
        """Add one input's importance ``{structure: float[layers, width]}`` (every structure of the statistics)."""
        k = self._index(language)
        missing = [s for s in self.structures if s not in importance]
        if missing:
            raise LangNeuronsError(f"an input's importance lacks structure(s) {', '.join(missing)}")
        for s in self.structures:
            values = importance[s].detach().float().cpu()
            if tuple(values.shape) != self.grids[s]:
                raise LangNeuronsError(f"importance of {s} is {tuple(values.shape)}, expected {self.grids[s]}")
            self.worst_rank[s][k] = torch.maximum(self.worst_rank[s][k], layer_ranks(values))
            self.importance_min[s][k] = torch.minimum(self.importance_min[s][k], values)
            self.importance_sum[s][k] += values.double()
        self.input_count[k] += 1
        self.token_count[k] += int(tokens)

    def _index(self, language: str) -> int:
        if language not in self.languages:
            raise LangNeuronsError(f"language {language!r} is not one of {self.languages}")
        return self.languages.index(language)

    # -- derived -------------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        counts = {g[0] for g in self.grids.values()}
        return counts.pop() if len(counts) == 1 else max(counts)

    def mean_importance(self, structure: str) -> torch.Tensor:
        """``float64[K, L, W]``: the mean importance over each language's inputs."""
        self.check_inputs()
        return self.importance_sum[structure] / self.input_count.double().view(-1, 1, 1)

    def check_inputs(self) -> None:
        """Raise a one-line error naming the languages without any input."""
        empty = [lang for lang, n in zip(self.languages, self.input_count.tolist()) if n == 0]
        if empty:
            raise LangNeuronsError(f"importance statistics have no input for language(s) {', '.join(empty)} "
                                   "(an empty corpus?)")

    def merge(self, other: "ImportanceStats") -> "ImportanceStats":
        """The statistics of both inputs sets (languages united; same structures and grids)."""
        if self.grids != other.grids:
            raise LangNeuronsError(f"cannot merge importance statistics of grids {self.grids} and {other.grids}")
        languages = self.languages + [lang for lang in other.languages if lang not in self.languages]
        merged = ImportanceStats(languages, self.grids, meta={**self.meta, "merged": True})
        for source in (self, other):
            index = torch.tensor([languages.index(lang) for lang in source.languages])
            merged.input_count.index_add_(0, index, source.input_count)
            merged.token_count.index_add_(0, index, source.token_count)
            for s in self.structures:
                merged.importance_sum[s].index_add_(0, index, source.importance_sum[s])
                merged.worst_rank[s][index] = torch.maximum(merged.worst_rank[s][index], source.worst_rank[s])
                merged.importance_min[s][index] = torch.minimum(merged.importance_min[s][index],
                                                               source.importance_min[s])
        return merged

    def select_languages(self, languages: list[str]) -> "ImportanceStats":
        index = torch.tensor([self._index(lang) for lang in languages])
        tensors = {name: value.index_select(0, index) for name, value in self.state_dict().items()}
        return ImportanceStats(list(languages), self.grids, tensors, self.meta)

    # -- persistence ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {"input_count": self.input_count, "token_count": self.token_count}
        for name in _FIELDS:
            out.update({f"{name}.{s}": getattr(self, name)[s] for s in self.structures})
        return out

    def save(self, directory: str | Path) -> Path:
        meta = {**self.meta, "languages": self.languages, "structures": self.structures,
                "grids": {s: list(g) for s, g in self.grids.items()},
                "input_count": dict(zip(self.languages, self.input_count.tolist())),
                "token_count": dict(zip(self.languages, self.token_count.tolist()))}
        return write_artefact(directory, KIND, SCHEMA_VERSION, self.state_dict(), meta)

    def __repr__(self) -> str:
        return (f"ImportanceStats(languages={self.languages}, structures={self.structures}, "
                f"inputs={self.input_count.tolist()})")


def load_importance(directory: str | Path) -> ImportanceStats:
    """Load statistics written by :meth:`ImportanceStats.save` (checksum verified)."""
    tensors, meta = read_artefact(directory, KIND, SCHEMA_VERSION)
    try:
        grids = {s: tuple(g) for s, g in meta["grids"].items()}
        return ImportanceStats(meta["languages"], grids, tensors, meta)
    except KeyError as exc:
        raise LangNeuronsError(f"{str(directory)!r} is not valid importance statistics: missing {exc}") from None
