"""PLND language-specific neurons (Zhao et al. 2024, section 2.3): important for every input of a language.

"We feed a corpus in a specific language to LLMs and identify neurons that are consistently activated": a
neuron belongs to language ``x`` when it is important (PLND importance, :mod:`langneurons.methods.plnd`) for
EVERY input of ``x``'s corpus. "Important for an input" is one of two rules (both parameters):

* **top-k per layer** (default; the reference code's rule): among the neurons of its layer and structure the
  neuron is in the ``k`` most important for that input. The reference code takes ``top_number_ffn = 2000`` of
  the 11,008 FFN neurons and ``top_number_attn = 1000`` of the 4,096 attention neurons of each layer of its
  7B models (Vicuna / Llama-2-7B widths); the defaults are those shares, ``top_rate_ffn = 2000 / 11008`` and
  ``top_rate_attn = 1000 / 4096``, scaled to the model's widths (``k = round(rate * width)``, the same share
  for q, k and v; interpretation: the reference applied 1000 to the 1,024 key / value columns of
  grouped-query models, a rule that keeps almost every column). ``top_k_ffn`` / ``top_k_attn`` give ``k``
  directly.
* **threshold**: ``Imp(i | c) >= threshold_ffn`` (or ``threshold_attn``) for every input ``c``.

``exclude_shared=True`` removes the neurons that every language has (the reference code's final step; the
paper's sets keep them: its Table 9 removes them as a separate experiment). The result is a structure-addressed
:class:`~langneurons.sets.neuronset.NeuronSet` with sites ``ffn.down_in`` (row ``k`` of ``W_down``), ``attn.q``,
``attn.k``, ``attn.v`` (column ``k`` of ``W_Q`` / ``W_K`` / ``W_V``), usable by every command.
"""

from __future__ import annotations

from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.methods.base import NeuronMethod, check_rate, register_method
from langneurons.sets.neuronset import NeuronSet

#: the reference code's top-k per layer and the 7B widths they were set for (Llama-2-7B / Vicuna-7B)
REFERENCE_TOP_FFN, REFERENCE_FFN_WIDTH = 2000, 11008
REFERENCE_TOP_ATTN, REFERENCE_ATTN_WIDTH = 1000, 4096
SITE_OF = {"ffn": "ffn.down_in", "attn.q": "attn.q", "attn.k": "attn.k", "attn.v": "attn.v"}


@register_method
class PLND(NeuronMethod):
    """Neurons important for every input of a language (top-k per layer or a threshold), per structure.

    ``scores_`` is ``{site: float64[layers, width]}``: the best (lowest) worst-rank over languages (lower = more
    consistently important for some language).
    """

    name = "plnd"
    consumes = "importance"
    lower_is_specific = True

    def __init__(self, top_rate_ffn: float = REFERENCE_TOP_FFN / REFERENCE_FFN_WIDTH,
                 top_rate_attn: float = REFERENCE_TOP_ATTN / REFERENCE_ATTN_WIDTH, top_k_ffn: int | None = None,
                 top_k_attn: int | None = None, threshold_ffn: float | None = None,
                 threshold_attn: float | None = None, exclude_shared: bool = False):
        self.top_rate_ffn = check_rate("top_rate_ffn", top_rate_ffn)
        self.top_rate_attn = check_rate("top_rate_attn", top_rate_attn)
        for name, value in (("top_k_ffn", top_k_ffn), ("top_k_attn", top_k_attn)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise LangNeuronsError(f"{name} must be a positive integer, got {value!r}")
        self.top_k_ffn, self.top_k_attn = top_k_ffn, top_k_attn
        self.threshold_ffn = None if threshold_ffn is None else float(threshold_ffn)
        self.threshold_attn = None if threshold_attn is None else float(threshold_attn)
        self.exclude_shared = bool(exclude_shared)

    def _rule(self, structure: str, width: int) -> tuple[str, float]:
        """``("threshold", tau)`` or ``("top_k", k)`` for a structure of ``width`` neurons per layer."""
        ffn = structure == "ffn"
        threshold = self.threshold_ffn if ffn else self.threshold_attn
        if threshold is not None:
            return "threshold", threshold
        k = self.top_k_ffn if ffn else self.top_k_attn
        name = "top_k_ffn" if ffn else "top_k_attn"
        if k is None:
            k = max(1, round((self.top_rate_ffn if ffn else self.top_rate_attn) * width))
            name = "top_rate_ffn" if ffn else "top_rate_attn"
        if k > width:
            raise LangNeuronsError(f"{name} gives top-k {k}, larger than the {width} neurons per layer of {structure}")
        return "top_k", int(k)

    def fit(self, stats: Any) -> "PLND":
        if not hasattr(stats, "worst_rank"):
            raise LangNeuronsError("plnd consumes PLND importance statistics (`langneurons plnd identify`, "
                                   "ln.record_importance), not activation statistics")
        stats.check_inputs()
        self.stats_ = stats
        self.rules_ = {s: self._rule(s, stats.grids[s][1]) for s in stats.structures}
        self.scores_ = {SITE_OF[s]: stats.worst_rank[s].double().min(0).values for s in stats.structures}
        return self

    def select(self) -> NeuronSet:
        self._check_fitted()
        stats = self.stats_
        masks: dict[str, dict[str, torch.Tensor]] = {lang: {} for lang in stats.languages}
        for structure in stats.structures:
            rule, value = self.rules_[structure]
            if rule == "top_k":
                member = (stats.worst_rank[structure] >= 0) & (stats.worst_rank[structure] < value)
            else:
                member = stats.importance_min[structure] >= value
            if self.exclude_shared and len(stats.languages) > 1:
                member = member & ~member.all(0, keepdim=True)
            for k, lang in enumerate(stats.languages):
                masks[lang][SITE_OF[structure]] = member[k].clone()
        meta = stats.meta
        source = {key: meta[key] for key in ("model", "revision", "model_type", "dtype", "corpus", "input_count")
                  if key in meta}
        source["inputs"] = dict(zip(stats.languages, stats.input_count.tolist()))
        parameters = {**self.get_params(), "rules": {s: list(r) for s, r in self.rules_.items()}}
        return NeuronSet.from_masks(masks, method=self.name, parameters=parameters, source=source)
