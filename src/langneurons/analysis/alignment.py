"""Similarity maps and the LRDS / SADS scores of "Converging to a Lingua Franca" (Zeng et al. 2024, eqs. 7-9).

Samples are ordered by language, then item: sample ``k * n + i`` is item ``i`` of language ``k`` (Figure 2).

* Eq. 7: ``S_ij = a^{s_i} . a^{s_j}`` with the normalised vectors of eq. 6 (all layers concatenated); per
  layer, the same with each layer's vectors normalised on their own.
* Eq. 8, LRDS: mean ``S_ij`` over pairs of the same language and different meanings minus the mean over pairs of
  different languages and different meanings.
* Eq. 9, SADS: mean ``S_ij`` over pairs of the same meaning and different languages minus the mean over pairs of
  different meanings and different languages.

The meaning of a sample is its item: item ``i`` of every language (the translations of one verse) share a
meaning. Interpretation: the averages run over ordered pairs ``i != j`` (the same as over unordered pairs, ``S``
being symmetric); a sample is never paired with itself. :func:`lrds_sads` takes any labels, so a grouping other
than the translations (their code pairs sentence ``i`` of one language with sentence ``i + k`` of another) can be
computed and compared.

Every mean comes from group sums (one-hot matrices times ``S``), so the scores cost ``O(N^2)`` for ``N`` samples;
the whole-model map is the sum over layers of each layer's Gram matrix, divided by the norms (one pass over the
layers gives every map).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from langneurons.errors import LangNeuronsError
from langneurons.methods.key_regions import _safe, check_groups, vector_norms


def sample_labels(num_languages: int, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(language long[N], meaning long[N])`` of the samples in language-then-item order (``N = K * n``)."""
    language = torch.arange(num_languages).repeat_interleave(num_items)
    meaning = torch.arange(num_items).repeat(num_languages)
    return language, meaning


def _group_sum(similarity: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(sum of S_ij over pairs with equal labels (i = j included), number of such pairs)``."""
    onehot = torch.nn.functional.one_hot(labels.long()).to(similarity.dtype)  # [N, G]
    blocks = onehot.T @ similarity @ onehot  # [G, G]
    sizes = onehot.sum(0)
    return float(blocks.diagonal().sum()), float(sizes.pow(2).sum())


def lrds_sads(similarity: torch.Tensor, languages: torch.Tensor, meanings: torch.Tensor) -> tuple[float, float]:
    """Eqs. 8 and 9 on a similarity map ``[N, N]`` with one language and one meaning label per sample.

    NaN where a mean has no pair (e.g. no pair of the same meaning in different languages).
    """
    similarity = similarity.double()
    n = similarity.shape[0]
    if similarity.shape != (n, n) or languages.shape != (n,) or meanings.shape != (n,):
        raise LangNeuronsError(f"a similarity map [N, N] and N labels each, got {tuple(similarity.shape)}, "
                               f"{tuple(languages.shape)}, {tuple(meanings.shape)}")
    _, both = torch.unique(torch.stack([languages.long(), meanings.long()], 1), dim=0, return_inverse=True)
    _, language_ids = torch.unique(languages.long(), return_inverse=True)
    _, meaning_ids = torch.unique(meanings.long(), return_inverse=True)
    same_language, n_language = _group_sum(similarity, language_ids)
    same_meaning, n_meaning = _group_sum(similarity, meaning_ids)
    same_both, n_both = _group_sum(similarity, both)
    total, n_total = float(similarity.sum()), float(n * n)
    # pairs i != j: the i = j terms are in every "same" sum and cancel in each difference below
    sums = {"lang_only": (same_language - same_both, n_language - n_both),
            "meaning_only": (same_meaning - same_both, n_meaning - n_both),
            "neither": (total - same_language - same_meaning + same_both, n_total - n_language - n_meaning + n_both)}
    mean = {key: value / count if count > 0 else float("nan") for key, (value, count) in sums.items()}
    return mean["lang_only"] - mean["neither"], mean["meaning_only"] - mean["neither"]


def _layer_grams(vectors: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """``(layer, Gram float64[N, N])`` of ``vectors[K, S, L, W]`` flattened to samples, one layer at a time."""
    num_languages, num_samples, num_layers, width = vectors.shape
    for layer in range(num_layers):
        x = vectors[:, :, layer].double().reshape(num_languages * num_samples, width)
        yield layer, x @ x.T


@dataclass
class Alignment:
    """The whole-model similarity map (eq. 7) and the LRDS / SADS of the whole model and of every layer."""

    similarity: torch.Tensor  # float64[N, N], samples in language-then-item order
    lrds: float
    sads: float
    layer_lrds: torch.Tensor  # float64[L]
    layer_sads: torch.Tensor  # float64[L]

    @property
    def num_layers(self) -> int:
        return int(self.layer_lrds.numel())

    def rows(self) -> list[list]:
        """``lrds_sads.csv`` rows: ``["all", lrds, sads]``, then ``[layer, lrds, sads]`` from layer 0."""
        return [["all", self.lrds, self.sads],
                *([m, float(a), float(b)] for m, (a, b) in enumerate(zip(self.layer_lrds, self.layer_sads)))]


def similarity_map(vectors: torch.Tensor) -> torch.Tensor:
    """Eq. 7 ``float64[N, N]`` of ``vectors[K, S, L, W]`` (eq. 6's concatenated, normalised vectors)."""
    return alignment(vectors).similarity


def alignment(vectors: torch.Tensor, languages: torch.Tensor | None = None, meanings: torch.Tensor | None = None
              ) -> Alignment:
    """The similarity map and LRDS / SADS (whole model and per layer) of ``vectors[K, S, L, W]`` in one pass.

    ``languages`` / ``meanings`` (``long[K * S]``) default to :func:`sample_labels` (item ``i`` of every language
    shares a meaning).
    """
    vectors = vectors.vectors if hasattr(vectors, "vectors") else vectors
    if vectors.dim() != 4:
        raise LangNeuronsError(f"vectors must be [language, sample, layer, width], got {tuple(vectors.shape)}")
    num_languages, num_samples, num_layers, _ = vectors.shape
    check_groups(num_languages, num_samples)
    if languages is None or meanings is None:
        languages, meanings = sample_labels(num_languages, num_samples)
    whole_norms, layer_norms = (_safe(n.flatten(0, 1)) for n in vector_norms(vectors))  # [N], [N, L]
    total = torch.zeros(num_languages * num_samples, num_languages * num_samples, dtype=torch.float64)
    layer_lrds = torch.empty(num_layers, dtype=torch.float64)
    layer_sads = torch.empty(num_layers, dtype=torch.float64)
    for layer, gram in _layer_grams(vectors):
        total += gram
        norms = layer_norms[:, layer]
        layer_lrds[layer], layer_sads[layer] = lrds_sads(gram / norms[:, None] / norms[None, :], languages, meanings)
    similarity = total / whole_norms[:, None] / whole_norms[None, :]
    lrds, sads = lrds_sads(similarity, languages, meanings)
    return Alignment(similarity, lrds, sads, layer_lrds, layer_sads)
