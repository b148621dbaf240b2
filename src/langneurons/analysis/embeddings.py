"""Sentence-embedding similarity across layers (SES, LAPE paper Figure 6) and language dominance (eq. 6, Figure 7).

On a line-aligned parallel corpus, each sentence ``s`` of language ``k`` has one embedding per layer ``l``:
the mean over its tokens of the decoder layer's output hidden state (``record_pooled(site="layer.out",
mode="mean")``), ``h[k, s, l, :]``.

* SES of languages ``a, b`` at layer ``l``: the mean over sentences of ``cos(h[a, s, l], h[b, s, l])``;
  the curve of Figure 6 is its mean over all unordered language pairs.
* Dominance of target ``c`` (eq. 6): with ``v[k, l]`` the mean embedding of language ``k``, every
  embedding of ``k`` is mapped to ``h[k, s, l] - v[k, l] + v[c, l]``; the score is the SES between the
  mapped ``k`` and ``c`` averaged over every ``k != c`` (one curve per target language).

Cosine: ``a.b / (max(|a|, eps) * max(|b|, eps))`` in float64, ``eps = 1e-8`` (a zero vector has similarity 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.analysis.layers import distinct_layer_counts
from langneurons.analysis.output import (
    AnalysisOutput,
    Figure,
    Table,
    layer_header,
    neuron_set_provenance,
    pair_names,
    summary_of,
    declare_kind,
)
from langneurons.data.corpus import file_sha256, find_corpus_files, load_parallel
from langneurons.errors import LangNeuronsError
from langneurons.model.loading import LoadedModel, as_loaded
from langneurons.sets.neuronset import NeuronSet
from langneurons.stats.pooled import PooledVectors



def _ses_headline(artefact) -> str | None:
    summary = summary_of(artefact)
    if not isinstance(summary.get("peak_mean_ses"), (int, float)):
        return None
    return (f"Mean SES over language pairs peaks at layer {summary.get('peak_layer')} ({summary['peak_mean_ses']:.3f}; "
            f"first layer {summary.get('first_layer_mean_ses', math.nan):.3f}, last "
            f"{summary.get('last_layer_mean_ses', math.nan):.3f}).")


def _dominance_headline(artefact) -> str | None:
    summary = summary_of(artefact)
    lang, means = summary.get("most_dominant"), summary.get("mean_over_layers")
    if not lang or not isinstance(means, dict) or lang not in means:
        return None
    return f"{lang} is the most dominant language (mean dominance score {means[lang]:.3f} over layers)."


SES_KIND = declare_kind("ses", "Sentence-embedding similarity (SES)", 60,
                        "Similarity of aligned sentence embeddings across layers (LAPE paper, Figure 6).", _ses_headline)
DOMINANCE_KIND = declare_kind("dominance", "Language dominance", 65,
                              "Language dominance per layer (LAPE paper, eq. 6, Figure 7).", _dominance_headline)
EPS = 1e-8


def _check(vectors: torch.Tensor) -> None:
    if vectors.dim() != 4:
        raise LangNeuronsError(f"embeddings must be [language, sample, layer, dim], got {tuple(vectors.shape)}")
    if vectors.shape[0] < 2:
        raise LangNeuronsError("sentence similarity needs at least two languages")
    if vectors.shape[1] < 1:
        raise LangNeuronsError("sentence similarity needs at least one aligned sentence")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def pairwise_ses(vectors: torch.Tensor) -> torch.Tensor:
    """``float64[K, K, L]``: mean over sentences of the cosine between aligned embeddings ``vectors[K, S, L, D]``."""
    _check(vectors)
    num_langs, _, num_layers, _ = vectors.shape
    out = torch.zeros(num_langs, num_langs, num_layers, dtype=torch.float64)
    for layer in range(num_layers):
        unit = _unit(vectors[:, :, layer].double())  # [K, S, D]
        out[:, :, layer] = torch.einsum("asd,bsd->abs", unit, unit).mean(-1)
    return out


def mean_ses(vectors: torch.Tensor) -> torch.Tensor:
    """``float64[L]``: SES averaged over all unordered language pairs (Figure 6's curve)."""
    pairs = pairwise_ses(vectors)
    rows, cols = torch.triu_indices(vectors.shape[0], vectors.shape[0], offset=1)
    return pairs[rows, cols].mean(0)


def dominance_scores(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 6 on ``vectors[K, S, L, D]``: ``(scores float64[C, L], by_source float64[C, K, L])``.

    ``by_source[c, k, l]`` is the SES between ``k``'s embeddings mapped to ``c`` and ``c``'s embeddings
    (NaN for ``k == c``); ``scores[c, l]`` its mean over ``k != c``.
    """
    _check(vectors)
    num_langs, _, num_layers, _ = vectors.shape
    by_source = torch.full((num_langs, num_langs, num_layers), float("nan"), dtype=torch.float64)
    for layer in range(num_layers):
        x = vectors[:, :, layer].double()  # [K, S, D]
        language_vectors = x.mean(1)  # [K, D]
        centred = x - language_vectors[:, None]
        for target in range(num_langs):
            mapped = _unit(centred + language_vectors[target])  # [K, S, D]
            target_unit = _unit(x[target])  # [S, D]
            similarity = (mapped * target_unit[None]).sum(-1).mean(-1)  # [K]
            others = [k for k in range(num_langs) if k != target]
            by_source[target, others, layer] = similarity[others]
    scores = torch.nanmean(by_source, dim=1)
    return scores, by_source


def _as_tensor(embeddings: PooledVectors | torch.Tensor, languages: list[str] | None
               ) -> tuple[torch.Tensor, list[str], dict[str, Any]]:
    if isinstance(embeddings, PooledVectors):
        meta = {key: value for key, value in embeddings.meta.items() if key not in ("languages",)}
        return embeddings.vectors, list(embeddings.languages), {**meta, "pooling": embeddings.mode}
    languages = languages or [f"lang{k}" for k in range(embeddings.shape[0])]
    if len(languages) != embeddings.shape[0]:
        raise LangNeuronsError(f"{len(languages)} language names for {embeddings.shape[0]} languages of embeddings")
    return embeddings, list(languages), {}


@dataclass
class SentenceSimilarity:
    """Pairwise SES ``pair_ses[a, b, layer]`` and, with a neuron set, its neurons per layer (Figure 6)."""

    languages: list[str]
    pair_ses: torch.Tensor
    neuron_counts: dict[str, torch.Tensor] | None = None  # {"sum": int64[L], "distinct": int64[L]}
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.pair_ses.shape[-1])

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return pair_names(self.languages)

    @property
    def mean(self) -> torch.Tensor:
        """``float64[L]``: SES averaged over all language pairs."""
        index = {lang: k for k, lang in enumerate(self.languages)}
        return torch.stack([self.pair_ses[index[a], index[b]] for a, b in self.pairs]).mean(0)

    def output(self) -> AnalysisOutput:
        names = [f"{a}-{b}" for a, b in self.pairs]
        index = {lang: k for k, lang in enumerate(self.languages)}
        per_pair = [self.pair_ses[index[a], index[b]].tolist() for a, b in self.pairs]
        header = ["layer", "mean_ses", *names]
        counts = self.neuron_counts
        if counts is not None:
            header += ["neurons_sum", "neurons_distinct"]
        rows = []
        for layer in range(self.num_layers):
            row = [layer, float(self.mean[layer]), *(values[layer] for values in per_pair)]
            if counts is not None:
                row += [int(counts["sum"][layer]), int(counts["distinct"][layer])]
            rows.append(row)
        table = Table("ses.csv", "Mean sentence-embedding similarity per layer", header, rows, rows_are="layer (0-based)",
                      columns_are="mean SES over pairs, SES per language pair"
                      + (", language-specific neurons in the layer (sum over languages, distinct)" if counts else ""))

        def draw_curve(path: Path) -> None:
            from langneurons.analysis.figures import curve_with_bars

            bars = counts["sum"].tolist() if counts is not None else None
            curve_with_bars(self.mean.tolist(), "mean SES", bars, "language-specific neurons", path,
                            "Mean SES over language pairs" + (" and neurons per layer" if counts else ""))

        def draw_pairs(path: Path) -> None:
            from langneurons.analysis.figures import line_plot

            line_plot(range(self.num_layers), dict(zip(names, per_pair)), path, "SES per language pair", "layer",
                      "SES", markers=False)

        mean = self.mean
        summary = {"peak_layer": int(mean.argmax()), "peak_mean_ses": float(mean.max()),
                   "first_layer_mean_ses": float(mean[0]), "last_layer_mean_ses": float(mean[-1])}
        return AnalysisOutput(SES_KIND, "Sentence-embedding similarity across layers", [table],
                              [Figure("ses.png", "Mean SES and language-specific neurons per layer", draw_curve),
                               Figure("ses_pairs.png", "SES per language pair", draw_pairs)], summary, self.meta)

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        """Write ``ses.csv``, ``ses.png``, ``ses_pairs.png`` and ``meta.json`` atomically."""
        return self.output().save(directory, plot=plot)


@dataclass
class Dominance:
    """Dominance score ``scores[target, layer]`` (eq. 6) and its terms ``by_source[target, source, layer]``."""

    languages: list[str]
    scores: torch.Tensor
    by_source: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.scores.shape[-1])

    def output(self) -> AnalysisOutput:
        table = Table("dominance.csv", "Dominance score (mean SES after eq. 6) per layer and target language",
                      ["layer", *self.languages],
                      [[layer, *self.scores[:, layer].tolist()] for layer in range(self.num_layers)],
                      rows_are="layer (0-based)", columns_are="target language c")
        pair_rows = [[c, k, *self.by_source[i, j].tolist()] for i, c in enumerate(self.languages)
                     for j, k in enumerate(self.languages) if i != j]
        pairs = Table("dominance_pairs.csv", "SES between source k mapped to target c and c",
                      ["target", "source", *layer_header(self.num_layers)], pair_rows,
                      rows_are="(target c, source k)", columns_are="layer (0-based)")

        def draw(path: Path) -> None:
            from langneurons.analysis.figures import line_plot

            series = {lang: self.scores[c].tolist() for c, lang in enumerate(self.languages)}
            line_plot(range(self.num_layers), series, path, "Dominance score per target language", "layer",
                      "mean SES (eq. 6)")

        mean = self.scores.mean(1)
        summary = {"mean_over_layers": dict(zip(self.languages, mean.tolist())),
                   "most_dominant": self.languages[int(mean.argmax())]}
        return AnalysisOutput(DOMINANCE_KIND, "Language dominance across layers", [table, pairs],
                              [Figure("dominance.png", "Dominance score per target language", draw)], summary,
                              self.meta)

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        """Write ``dominance.csv``, ``dominance_pairs.csv``, ``dominance.png`` and ``meta.json`` atomically."""
        return self.output().save(directory, plot=plot)


def sentence_similarity(embeddings: PooledVectors | torch.Tensor, languages: list[str] | None = None,
                        neurons: NeuronSet | None = None) -> SentenceSimilarity:
    """SES per language pair and layer of ``embeddings`` (``[K, S, L, D]`` or :class:`PooledVectors`)."""
    vectors, languages, meta = _as_tensor(embeddings, languages)
    counts = None
    if neurons is not None:
        if neurons.num_layers != vectors.shape[2]:
            raise LangNeuronsError(f"neuron set has {neurons.num_layers} layers but the embeddings "
                                   f"{vectors.shape[2]}")
        counts = {"sum": neurons.layer_counts().sum(0), "distinct": distinct_layer_counts(neurons)}
        meta = {**meta, "neurons": neuron_set_provenance(neurons)}
    return SentenceSimilarity(languages, pairwise_ses(vectors), counts, meta)


def language_dominance(embeddings: PooledVectors | torch.Tensor, languages: list[str] | None = None) -> Dominance:
    """Dominance score of every target language per layer (eq. 6) from ``embeddings``."""
    vectors, languages, meta = _as_tensor(embeddings, languages)
    scores, by_source = dominance_scores(vectors)
    return Dominance(languages, scores, by_source, meta)


def read_parallel_sentences(corpus: str | Path, langs: list[str] | None = None, max_samples: int | None = None
                            ) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Aligned sentences ``{lang: lines}`` (alignment checked) without lines blank in any language, and provenance."""
    texts = load_parallel(corpus, langs)
    if len(texts) < 2:
        raise LangNeuronsError(f"parallel corpus {str(corpus)!r} needs at least two languages, has {len(texts)}")
    total = len(next(iter(texts.values())))
    nonblank = [i for i in range(total) if all(lines[i].strip() for lines in texts.values())]
    keep = nonblank
    if max_samples is not None:
        if max_samples < 1:
            raise LangNeuronsError(f"--max-samples must be at least 1, got {max_samples}")
        keep = nonblank[:max_samples]
    if not keep:
        raise LangNeuronsError(f"parallel corpus {str(corpus)!r} has no line that is non-blank in every language")
    files = find_corpus_files(corpus, list(texts))
    provenance = {"path": str(corpus), "lines": total, "samples": len(keep),
                  "dropped_blank": total - len(nonblank),
                  "files": {lang: {"file": path.name, "sha256": file_sha256(path)} for lang, path in files.items()}}
    return {lang: [lines[i] for i in keep] for lang, lines in texts.items()}, provenance


def sentence_embeddings(
    model: nn.Module | LoadedModel | str,
    corpus: str | Path,
    langs: list[str] | None = None,
    max_samples: int | None = None,
    max_length: int | None = 512,
    batch_size: int = 16,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
) -> PooledVectors:
    """Mean-pooled hidden states ``[K, S, L, D]`` of every decoder layer on an aligned ``{lang}.txt`` corpus."""
    from langneurons.recording.pooled import record_pooled

    texts, provenance = read_parallel_sentences(corpus, langs, max_samples)
    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype)
    vectors = record_pooled(loaded, texts, site="layer.out", mode="mean", max_length=max_length,
                            batch_size=batch_size, progress=progress)
    vectors.meta["corpus"] = provenance
    return vectors
