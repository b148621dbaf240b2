"""Key linguistic regions (Zeng et al. 2024, "Converging to a Lingua Franca", section 3.3, eqs. 6 and 10-14).

Input: per-sample pooled vectors ``h[k, i, m, :]`` (language ``k``, sample ``i``, layer ``m``; eq. 5, the mean
over the sample's tokens of the neuron site, :class:`~langneurons.stats.pooled.PooledVectors`).

* Eq. 6: ``a^{s_i} = [h_1 | ... | h_M] / ||[h_1 | ... | h_M]||``: all layers concatenated, then L2-normalised
  (:func:`vector_norms` gives the norms; the per-layer metrics of the analysis normalise each layer on its own).
* Eq. 11: the contribution of neuron ``k`` to language ``l``'s mean within-language similarity,
  ``S_l^(k) = sum_{i<j} a_(k)^{s_i} a_(k)^{s_j}``, computed in closed form
  ``((sum_i a_i)^2 - sum_i a_i^2) / 2`` over the language's ``n`` samples (:func:`contribution_scores`).
* Eqs. 12-14: ``z_l^(k) = (S_l^(k) - mu_k) / sigma_k`` with the mean and the *population* standard deviation of
  the contributions over the ``L`` languages (:func:`z_scores`).
* The key region of language ``l``: the neurons with ``z_l^(k) > threshold`` (2 in the paper); SKLR is the sum
  of the region sizes.

Interpretation: ``a_(k)`` in eq. 11 is the component of the *whole-model* normalised vector of eq. 6 (the paper
defines it as "the k component of activation vector a^{s_i}"), so the contributions sum to the numerator of
eq. 10. A neuron whose contributions are equal in every language (``sigma_k = 0``) has ``z = 0`` everywhere
(it is special to no language). With ``L`` languages no z-score can exceed ``sqrt(L - 1)`` (reached when one
language stands out from all others equally), so a threshold at or above it selects nothing: the method says so
in a warning and in the set's parameters, and selects no neuron.

Sum pooling (their code, for LLaMA) gives the same ``a^{s_i}`` as mean pooling: the token count scales every
layer of a sample alike and the normalisation removes it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.methods.base import NeuronMethod, register_method
from langneurons.sets.neuronset import NeuronSet


def _vectors(data: Any) -> torch.Tensor:
    vectors = data.vectors if hasattr(data, "vectors") else data
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 4:
        raise LangNeuronsError("key regions need per-sample vectors [language, sample, layer, width] "
                               "(record them with record_pooled)")
    return vectors


def check_groups(num_languages: int, num_samples: int) -> None:
    """The input eqs. 8-14 need: at least two languages, and at least two samples in each."""
    if num_languages < 2:
        raise LangNeuronsError(f"the lingua franca metrics need at least two languages, got {num_languages}")
    if num_samples < 2:
        raise LangNeuronsError(f"the lingua franca metrics need at least two samples in every language, got "
                               f"{num_samples}")


def vector_norms(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(whole float64[K, S], per_layer float64[K, S, L])``: norms of ``vectors[K, S, L, W]`` concatenated over
    layers (eq. 6) and of each layer alone. Computed a layer at a time (float16 / memory-mapped vectors stay so)."""
    vectors = _vectors(vectors)
    per_layer = torch.stack([vectors[:, :, m].double().pow(2).sum(-1) for m in range(vectors.shape[2])], -1)
    return per_layer.sum(-1).sqrt(), per_layer.sqrt()


def _safe(norms: torch.Tensor) -> torch.Tensor:
    return torch.where(norms > 0, norms, torch.ones_like(norms))  # a zero vector stays zero


def unit_vectors(vectors: torch.Tensor, per_layer: bool = False) -> torch.Tensor:
    """``float64[K, S, L * W]`` (eq. 6: concatenated, normalised) or ``float64[K, S, L, W]`` (each layer normalised).

    Materialises a float64 copy: for large models use :func:`vector_norms` and work a layer at a time.
    """
    vectors = _vectors(vectors)
    whole, layers = vector_norms(vectors)
    if per_layer:
        return vectors.double() / _safe(layers)[..., None]
    return vectors.double().flatten(2) / _safe(whole)[..., None]


def contribution_scores(vectors: torch.Tensor) -> torch.Tensor:
    """Eq. 11 ``float64[K, L, W]``: ``((sum_i a_i)^2 - sum_i a_i^2) / 2`` over each language's samples, ``a`` the
    whole-model normalised vectors of eq. 6 (see the module docstring), a layer at a time."""
    vectors = _vectors(vectors)
    num_languages, num_samples, num_layers, width = vectors.shape
    check_groups(num_languages, num_samples)
    norms = _safe(vector_norms(vectors)[0])[..., None]  # [K, S, 1]
    scores = torch.empty(num_languages, num_layers, width, dtype=torch.float64)
    for layer in range(num_layers):
        a = vectors[:, :, layer].double() / norms  # [K, S, W]
        scores[:, layer] = (a.sum(1).pow(2) - a.pow(2).sum(1)) / 2
    return scores


def z_scores(scores: torch.Tensor) -> torch.Tensor:
    """Eqs. 12-14 over the first dimension (languages): ``(S - mean) / std`` with the population std; 0 where the
    std is 0. ``scores`` ``[K, ...]`` -> ``float64[K, ...]``."""
    if scores.shape[0] < 2:
        raise LangNeuronsError(f"z-scores across languages need at least two languages, got {scores.shape[0]}")
    scores = scores.double()
    mean = scores.mean(0, keepdim=True)
    std = scores.std(0, correction=0, keepdim=True)
    centred = scores - mean
    return torch.where(std > 0, centred / torch.where(std > 0, std, torch.ones_like(std)), torch.zeros_like(centred))


def max_z_score(num_languages: int) -> float:
    """``sqrt(K - 1)``: the largest z-score (population std) that ``K`` values allow."""
    return math.sqrt(max(num_languages - 1, 0))


def threshold_note(threshold: float, num_languages: int) -> str | None:
    """A sentence when ``threshold`` is at least ``sqrt(K - 1)`` (no neuron can pass it), else ``None``."""
    bound = max_z_score(num_languages)
    if threshold < bound:
        return None
    return (f"the z-score threshold {threshold:g} is at least sqrt(K - 1) = {bound:.3f}, the largest z-score "
            f"{num_languages} languages allow: no neuron can pass it (use more languages or a lower --threshold)")


@register_method
class KeyRegions(NeuronMethod):
    """Key linguistic regions: neurons whose eq. 11 contribution z-score (eqs. 12-14) exceeds ``threshold``.

    Consumes per-sample pooled vectors (:class:`~langneurons.stats.pooled.PooledVectors`, ``[K, S, L, W]``).
    Fitted attributes: ``contributions_`` (eq. 11, ``[K, L, W]``), ``z_scores_`` (``[K, L, W]``), ``scores_``
    (the largest z-score over languages, ``[L, W]``; higher = more language-specific), ``note_`` (the
    ``sqrt(K - 1)`` note or ``None``).
    """

    name = "key_regions"
    consumes = "pooled_vectors"
    lower_is_specific = False

    def __init__(self, threshold: float = 2.0):
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
            raise LangNeuronsError(f"threshold must be a finite number, got {threshold!r}")
        self.threshold = float(threshold)

    def fit(self, data: Any) -> "KeyRegions":
        vectors = _vectors(data)
        languages = list(getattr(data, "languages", [f"lang{k}" for k in range(vectors.shape[0])]))
        check_groups(vectors.shape[0], vectors.shape[1])
        self.data_ = data
        self.languages_ = languages
        self.contributions_ = contribution_scores(vectors)
        self.z_scores_ = z_scores(self.contributions_)
        self.scores_ = self.z_scores_.max(0).values
        self.note_ = threshold_note(self.threshold, len(languages))
        if self.note_:
            warnings.warn(self.note_, LangNeuronsWarning, stacklevel=2)
        return self

    def select(self) -> NeuronSet:
        self._check_fitted()
        if self.note_:  # exactly at sqrt(K - 1) rounding could let a neuron through; none passes in exact arithmetic
            membership = {lang: torch.zeros(self.scores_.shape, dtype=torch.bool) for lang in self.languages_}
        else:
            membership = {lang: self.z_scores_[k] > self.threshold for k, lang in enumerate(self.languages_)}
        extra: dict[str, Any] = {"max_z_score": max_z_score(len(self.languages_)),
                                 "num_samples": int(_vectors(self.data_).shape[1])}
        if self.note_:
            extra["note"] = self.note_
        data = self.data_
        if not hasattr(data, "num_layers"):
            data = _TensorData(self.languages_, _vectors(data))
        return self._neuron_set(membership, data, extra)


class _TensorData:
    """What :meth:`NeuronMethod._neuron_set` reads, for plain tensors."""

    def __init__(self, languages: list[str], vectors: torch.Tensor) -> None:
        self.languages, self.num_layers, self.width = languages, vectors.shape[2], vectors.shape[3]
        self.meta = {"site": "ffn.act", "model": "tensor"}
