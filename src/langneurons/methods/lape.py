"""LAPE: language activation probability entropy (Tang et al. 2024, eqs. 4-5, section 2.2)."""

from __future__ import annotations

import torch

from langneurons.methods.base import NeuronMethod, _ceil_rate, check_rate, register_method
from langneurons.methods.entropy import entropy_select
from langneurons.sets.neuronset import NeuronSet


@register_method
class LAPE(NeuronMethod):
    """Lowest-entropy neurons of the per-language activation probability ``P(act > 0 | language)``.

    Parameters (the paper's defaults): ``top_rate`` share of all neurons selected (1%),
    ``filter_rate`` percentile a neuron must exceed in some language (95th), ``activation_bar_ratio``
    percentile a language's probability must exceed for the neuron to be assigned to it (95th).
    Fitted attributes: ``probabilities_`` ``[K, L, I]``, ``scores_`` (entropy, ``[L, I]``),
    ``selection_``.
    """

    name = "lape"

    def __init__(self, top_rate: float = 0.01, filter_rate: float = 0.95, activation_bar_ratio: float = 0.95):
        self.top_rate = check_rate("top_rate", top_rate)
        self.filter_rate = check_rate("filter_rate", filter_rate)
        self.activation_bar_ratio = check_rate("activation_bar_ratio", activation_bar_ratio)

    def values(self, stats):
        """The per-language value whose entropy is taken: activation probability ``[K, L, I]``."""
        return stats.activation_probability()

    def fit(self, stats) -> "LAPE":
        self.stats_ = stats
        self.probabilities_ = self.values(stats)
        self.selection_ = entropy_select(self.probabilities_, self.top_rate, self.filter_rate,
                                         self.activation_bar_ratio)
        self.scores_ = self.selection_.entropy
        return self

    def smallest_rates(self, languages: list[str]) -> dict[str, float | None]:
        """Per language, the smallest ``top_rate`` (two significant digits, rounded up) at which it gets a neuron:
        the rank of its first assigned neuron in the entropy order of the filtered neurons (exact, no refit);
        ``None`` when no neuron that passes the filter has its value above the assignment bar."""
        self._check_fitted()
        entropy = self.selection_.entropy.flatten()
        order = torch.sort(entropy, stable=True).indices  # the order entropy_select selects in
        passing = torch.isfinite(entropy[order])
        values = self.probabilities_.reshape(len(self.stats_.languages), -1)[:, order]
        found: dict[str, float | None] = {}
        for lang in languages:
            hits = ((values[self.stats_.languages.index(lang)] > self.selection_.activation_bar) & passing).nonzero()
            found[lang] = None if hits.numel() == 0 else _ceil_rate((int(hits[0]) + 1) / entropy.numel())
        return found

    def select(self) -> NeuronSet:
        self._check_fitted()
        membership = {lang: self.selection_.membership[k] for k, lang in enumerate(self.stats_.languages)}
        extra = {"filter_value": self.selection_.filter_value, "activation_bar": self.selection_.activation_bar,
                 "selected_before_assignment": int(self.selection_.selected.numel())}
        return self._neuron_set(membership, self.stats_, extra)


@register_method
class LAVE(LAPE):
    """LAVE: LAPE with the mean activation value in place of the activation probability (section 3.1 c).

    Mean activations below zero (SiLU / GELU dip slightly negative) are clamped to 0 before the
    normalisation, so that the normalised values form a distribution; otherwise identical to LAPE.
    """

    name = "lave"

    def values(self, stats):
        return stats.mean_activation().clamp_min(0.0)
