"""Sharing Matters: what the four neuron types look like over a test set, and what they contribute.

Everything here is a pure function of per-item arrays, fed item chunk by item chunk to
:class:`SharingAccumulator` (so a run can be split over items and the sums joined). For a chunk of ``n`` items in
``K`` languages with ``L`` layers of ``W`` neurons:

* ``acts[n, K, L, W]``: the last-token activation at the type site (``ffn.act``, the paper's "functions
  immediately after the elementwise non-linearity"); types by :func:`~langneurons.methods.neuron_types.
  neuron_types` at the threshold ``t``.
* ``writes[n, K, L, W]``: the coefficient ``A_i`` of the vector ``v_i`` neuron ``i`` adds to the residual stream
  (the input of the down projection, ``ffn.down_in``; for non-gated MLPs it equals ``acts``). Interpretation:
  for gated MLPs (Llama, ...) ``act(gate_i(x))`` alone does not write a fixed vector, ``act(gate_i(x)) up_i(x)``
  writes ``v_i`` = column ``i`` of ``W_down`` exactly, so contribution and effective scores take ``A_i`` there,
  while the types stay on ``ffn.act`` as in the paper. ``norms[L, W]`` are ``||v_i||``.
* contribution (eq. 3): ``C_i = |A_i| ||v_i|| / sum_j |A_j| ||v_j||`` over the layer's neurons (``normalize=False``:
  the numerator alone, as the authors' notebook computes it); 0 where the layer's sum is 0.
* effective score (Appendix A.1): ``E_r . (A_i v_i) = A_i (v_i . e_r)`` with ``directions[n, K, L, W] = v_i . e_r``
  for the row's gold token ``r`` (``e_r`` from :func:`langneurons.analysis.sharing_run.effective_directions`).

Aggregates (sums over items; the tables divide): type counts per layer (Figure 2 left), per language the active
neurons by type (Figure 2 right), the neurons with the same type in every item (Figure 5 "overlap"), the type
shares at other thresholds (Figure 22) and on the first ``m`` languages (Figure 19), the neurons inactive at
the last token (for Figure 6), contribution sums by type and the type shares among each layer's top
``top`` fraction by contribution (Figures 8, 9), and effective-score max / min / sum by type (Tables 1, 4,
Figure 10). Means are pooled: ``sum over items and neurons of the type / number of (item, neuron) pairs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from langneurons.errors import LangNeuronsError
from langneurons.methods.neuron_types import TYPES, check_threshold, types_from_active

NUM_TYPES = len(TYPES)
DEFAULT_THRESHOLDS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def default_language_counts(k: int) -> list[int]:
    """Growing language subsets of Figure 19: 3, 5, 7, ... below ``k``, then ``k`` (at least 2 languages)."""
    return sorted({m for m in range(3, k, 2)} | {k}) if k >= 3 else [k]


@dataclass
class SharingSettings:
    """What to compute (see the module docstring)."""

    threshold: float = 0.0
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS
    language_counts: Sequence[int] | None = None
    top: float = 0.05
    normalize: bool = True

    def __post_init__(self) -> None:
        self.threshold = check_threshold(self.threshold)
        self.thresholds = [check_threshold(t, "sweep threshold") for t in self.thresholds]
        if not 0.0 < float(self.top) <= 1.0:
            raise LangNeuronsError(f"the top share must be in (0, 1], got {self.top}")

    def counts_for(self, k: int) -> list[int]:
        counts = default_language_counts(k) if self.language_counts is None else sorted(set(self.language_counts))
        bad = [m for m in counts if not 2 <= m <= k]
        if bad:
            raise LangNeuronsError(f"language counts must lie in 2..{k}, got {bad}")
        return counts


def _one_hot(codes: torch.Tensor) -> torch.Tensor:
    """``bool[..., 4]`` of type codes."""
    return torch.stack([codes == t for t in range(NUM_TYPES)], dim=-1)


def _counts(codes: torch.Tensor) -> torch.Tensor:
    """``float64[L, 4]``: neurons of each type per layer, summed over the leading item dimension."""
    return _one_hot(codes).sum((0, 2)).double()


def contribution_scores(writes: torch.Tensor, norms: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Eq. 3: ``|A_i| ||v_i|| / sum_j |A_j| ||v_j||`` over the last dimension (``writes[..., L, W]``, ``norms[L, W]``)."""
    magnitude = writes.abs().double() * norms.double()
    if not normalize:
        return magnitude
    total = magnitude.sum(-1, keepdim=True)
    return torch.where(total > 0, magnitude / total.clamp_min(torch.finfo(torch.float64).tiny),
                       torch.zeros_like(magnitude))


@dataclass
class SharingAccumulator:
    """Sums over items (see the module docstring); ``add`` one chunk of items at a time."""

    languages: list[str]
    num_layers: int
    width: int
    settings: SharingSettings = field(default_factory=SharingSettings)

    def __post_init__(self) -> None:
        k, layers, width = len(self.languages), self.num_layers, self.width
        if k < 2:
            raise LangNeuronsError(f"neuron types compare languages: give at least 2, got {self.languages}")
        self.counts_ = self.settings.counts_for(k)
        self.items = 0
        self.type_counts = torch.zeros(layers, NUM_TYPES, dtype=torch.float64)
        self.language_type_counts = torch.zeros(k, layers, NUM_TYPES, dtype=torch.float64)
        self.inactive_last = torch.zeros(k, layers, dtype=torch.float64)
        self.always = torch.ones(NUM_TYPES, layers, width, dtype=torch.bool)
        self.sweep = torch.zeros(len(self.settings.thresholds), layers, NUM_TYPES, dtype=torch.float64)
        self.subsets = torch.zeros(len(self.counts_), layers, NUM_TYPES, dtype=torch.float64)
        self.contribution_sum = torch.zeros(k, layers, NUM_TYPES, dtype=torch.float64)
        self.top_counts = torch.zeros(k, layers, NUM_TYPES, dtype=torch.float64)
        self.top_size = max(1, round(self.settings.top * width))
        self.effective_max = torch.full((k, layers, NUM_TYPES), -math.inf, dtype=torch.float64)
        self.effective_min = torch.full((k, layers, NUM_TYPES), math.inf, dtype=torch.float64)
        self.effective_sum = torch.zeros(k, layers, NUM_TYPES, dtype=torch.float64)
        self.has_effective = False
        self.item_type_counts: list[torch.Tensor] = []

    def add(self, acts: torch.Tensor, writes: torch.Tensor | None = None, norms: torch.Tensor | None = None,
            directions: torch.Tensor | None = None) -> None:
        """One chunk: ``acts`` ``[n, K, L, W]``; ``writes`` and ``norms`` for contribution scores (both or
        neither); ``directions`` ``[n, K, L, W]`` (``v_i . e_r``) for effective scores."""
        n, k, layers, width = acts.shape
        if (k, layers, width) != (len(self.languages), self.num_layers, self.width):
            raise LangNeuronsError(f"a chunk of shape {tuple(acts.shape)} does not fit {len(self.languages)} "
                                   f"languages x {self.num_layers} layers x {self.width} neurons")
        acts = acts.float()
        s = self.settings
        active = acts > s.threshold
        codes = types_from_active(active, language_dim=1)  # [n, L, W]
        onehot = _one_hot(codes)  # [n, L, W, 4]
        per_item = onehot.sum(2).to(torch.int32)  # [n, L, 4]
        self.item_type_counts.append(per_item.cpu())
        self.type_counts += per_item.sum(0).double().cpu()
        self.language_type_counts += torch.einsum("nklw,nlwt->klt", active.double(), onehot.double()).cpu()
        self.inactive_last += (~active).sum((0, 3)).double().cpu()
        self.always &= onehot.all(0).permute(2, 0, 1).cpu()
        for j, threshold in enumerate(s.thresholds):
            self.sweep[j] += _counts(types_from_active(acts > threshold, language_dim=1)).cpu()
        for j, m in enumerate(self.counts_):
            self.subsets[j] += _counts(types_from_active(active[:, :m], language_dim=1)).cpu()
        if writes is not None:
            if norms is None:
                raise LangNeuronsError("contribution scores need the norms of the write vectors")
            scores = contribution_scores(writes, norms.to(writes.device), s.normalize)  # [n, K, L, W]
            self.contribution_sum += torch.einsum("nklw,nlwt->klt", scores, onehot.double()).cpu()
            top = scores.topk(self.top_size, dim=-1).indices  # [n, K, L, top]
            top_codes = torch.gather(codes.unsqueeze(1).expand(n, k, layers, width).long(), -1, top)
            self.top_counts += _one_hot(top_codes).sum((0, 3)).double().cpu()
        if directions is not None:
            if writes is None:
                raise LangNeuronsError("effective scores need the write coefficients")
            self.has_effective = True
            effective = writes.double() * directions.double()  # [n, K, L, W]
            for t in range(NUM_TYPES):
                chosen = (codes == t).unsqueeze(1).expand_as(effective)
                if not bool(chosen.any()):
                    continue
                high = torch.where(chosen, effective, torch.full_like(effective, -math.inf)).amax((0, 3)).cpu()
                low = torch.where(chosen, effective, torch.full_like(effective, math.inf)).amin((0, 3)).cpu()
                self.effective_max[:, :, t] = torch.maximum(self.effective_max[:, :, t], high)
                self.effective_min[:, :, t] = torch.minimum(self.effective_min[:, :, t], low)
                self.effective_sum[:, :, t] += torch.where(chosen, effective, 0.0).sum((0, 3)).cpu()
        self.items += n

    # -- the tables' numbers ----------------------------------------------------------------------------
    def _check(self) -> None:
        if not self.items:
            raise LangNeuronsError("no items were added")

    def types_by_layer(self) -> torch.Tensor:
        """``float64[L, 4]``: share of each layer's neurons of each type, averaged over items (rows sum to 1)."""
        self._check()
        return self.type_counts / (self.items * self.width)

    def types_by_language(self) -> torch.Tensor:
        """``float64[K, L, 4]``: share of the layer's neurons active in the language and of each type."""
        self._check()
        return self.language_type_counts / (self.items * self.width)

    def persistence(self) -> torch.Tensor:
        """``float64[L, 4]``: share of each layer's neurons that have the type in every item ("overlap")."""
        self._check()
        return self.always.double().mean(-1).t().contiguous()

    def threshold_sweep(self) -> torch.Tensor:
        """``float64[thresholds, L, 4]``."""
        self._check()
        return self.sweep / (self.items * self.width)

    def language_subsets(self) -> torch.Tensor:
        """``float64[len(counts_), L, 4]``: the types on the first ``m`` languages."""
        self._check()
        return self.subsets / (self.items * self.width)

    def contribution(self) -> dict[str, torch.Tensor]:
        """``mean`` (pooled over items and neurons of the type), ``sum`` (per item, averaged), ``top_share``
        (share of each type among the layer's top contributors): ``float64[K, L, 4]`` each."""
        self._check()
        count = self.type_counts.unsqueeze(0)  # the same neurons for every language of an item
        mean = torch.where(count > 0, self.contribution_sum / count.clamp_min(1), torch.full_like(self.contribution_sum,
                                                                                                 math.nan))
        return {"mean": mean, "sum": self.contribution_sum / self.items,
                "top_share": self.top_counts / (self.items * self.top_size)}

    def effective(self) -> dict[str, torch.Tensor]:
        """``max``, ``min``, ``mean`` (pooled), ``count``: ``float64[K, L, 4]`` (NaN / inf-free: NaN where no neuron)."""
        self._check()
        count = self.type_counts.unsqueeze(0).expand_as(self.effective_sum)
        empty = count == 0
        nan = torch.full_like(self.effective_sum, math.nan)
        return {"max": torch.where(empty, nan, self.effective_max), "min": torch.where(empty, nan, self.effective_min),
                "mean": torch.where(empty, nan, self.effective_sum / count.clamp_min(1)), "count": count.clone()}

    def effective_overall(self) -> dict[str, torch.Tensor]:
        """Over all layers (Tables 1 and 4): ``float64[K, 4]`` max / min / mean."""
        self._check()
        count = self.type_counts.sum(0).unsqueeze(0).expand(len(self.languages), NUM_TYPES)
        empty = count == 0
        nan = torch.full_like(count, math.nan)
        return {"max": torch.where(empty, nan, self.effective_max.amax(1)),
                "min": torch.where(empty, nan, self.effective_min.amin(1)),
                "mean": torch.where(empty, nan, self.effective_sum.sum(1) / count.clamp_min(1))}

    def item_types(self) -> torch.Tensor:
        """``int32[items, L, 4]``: each item's type counts per layer."""
        self._check()
        return torch.cat(self.item_type_counts)

    def state(self) -> dict[str, Any]:
        """The sums, for joining parts of a run."""
        return {name: getattr(self, name) for name in (
            "items", "type_counts", "language_type_counts", "inactive_last", "always", "sweep", "subsets",
            "contribution_sum", "top_counts", "effective_max", "effective_min", "effective_sum")}
