"""Baselines of the LAPE paper (section 3.1): LAP and random selection."""

from __future__ import annotations

import torch

from langneurons.errors import LangNeuronsError
from langneurons.methods.base import NeuronMethod, check_rate, register_method
from langneurons.sets.neuronset import NeuronSet


@register_method
class LAP(NeuronMethod):
    """LAP: a neuron is specific to language ``k`` when ``P(act > 0 | k) > activation_threshold`` (0.95).

    With ``top_rate`` (the selection budget shared by all methods) at most ``round(top_rate * L * I)``
    neurons are kept: those with the highest maximum probability; ``top_rate=None`` keeps all.
    ``scores_`` is the maximum probability over languages ``[L, I]`` (higher = selected first).
    """

    name = "lap"
    lower_is_specific = False

    def __init__(self, activation_threshold: float = 0.95, top_rate: float | None = 0.01):
        self.activation_threshold = check_rate("activation_threshold", activation_threshold)
        self.top_rate = None if top_rate is None else check_rate("top_rate", top_rate)

    def fit(self, stats) -> "LAP":
        self.stats_ = stats
        self.probabilities_ = stats.activation_probability()
        self.scores_ = self.probabilities_.max(0).values
        return self

    def select(self) -> NeuronSet:
        self._check_fitted()
        above = self.probabilities_ > self.activation_threshold  # K, L, I
        candidates = above.any(0).flatten()
        keep = candidates.clone()
        if self.top_rate is not None:
            budget = round(self.scores_.numel() * self.top_rate)
            if int(candidates.sum()) > budget:
                scores = torch.where(candidates, self.scores_.flatten(), torch.full_like(self.scores_.flatten(), -1.0))
                order = torch.sort(scores, descending=True, stable=True).indices[:budget]
                keep = torch.zeros_like(candidates)
                keep[order] = True
        keep = keep.view_as(self.scores_)
        membership = {lang: above[k] & keep for k, lang in enumerate(self.stats_.languages)}
        return self._neuron_set(membership, self.stats_)


@register_method
class RandomNeurons(NeuronMethod):
    """Random selection (RS): each language gets ``n`` neurons drawn uniformly from all ``L x I``.

    ``n = per_language`` when given, else ``round(top_rate * L * I / K)`` (the budget split evenly).
    Draws are seeded and independent per language.
    """

    name = "random"

    def __init__(self, top_rate: float = 0.01, per_language: int | None = None, seed: int = 0):
        self.top_rate = check_rate("top_rate", top_rate)
        self.per_language = per_language
        self.seed = int(seed)

    def fit(self, stats) -> "RandomNeurons":
        self.stats_ = stats
        self.scores_ = torch.zeros(stats.num_layers, stats.width, dtype=torch.float64)
        return self

    def select(self) -> NeuronSet:
        self._check_fitted()
        stats = self.stats_
        total = stats.num_layers * stats.width
        count = self.per_language
        if count is None:
            count = max(round(self.top_rate * total / max(len(stats.languages), 1)), 1)
        sizes = {lang: count for lang in stats.languages}
        return random_neuron_set(sizes, stats.num_layers, stats.width, seed=self.seed, site=stats.meta.get("site"),
                                 method=self, stats=stats)


def random_neuron_set(sizes: dict[str, int], num_layers: int, width: int, seed: int = 0, site: str | None = None,
                      method: NeuronMethod | None = None, stats=None) -> NeuronSet:
    """Per language, ``sizes[lang]`` neurons drawn uniformly without replacement (seeded)."""
    total = num_layers * width
    generator = torch.Generator().manual_seed(seed)
    membership = {}
    for lang, size in sizes.items():
        if not 0 <= size <= total:
            raise LangNeuronsError(f"cannot draw {size} random neurons out of {total}")
        mask = torch.zeros(total, dtype=torch.bool)
        mask[torch.randperm(total, generator=generator)[:size]] = True
        membership[lang] = mask.view(num_layers, width)
    if method is not None and stats is not None:
        return method._neuron_set(membership, stats)
    layers = {lang: [row.nonzero().flatten() for row in mask] for lang, mask in membership.items()}
    return NeuronSet(layers, num_layers, width, site=site or "ffn.act", method="random",
                     parameters={"seed": seed, "sizes": sizes})


def random_like(neurons: NeuronSet, seed: int = 0, per_layer: bool = False) -> NeuronSet:
    """A random set with, for every language and site, as many neurons as ``neurons`` has (the paper's random row).

    ``per_layer=True`` also matches the count of every layer (neurons drawn within each layer), the control
    of a deactivation by layer band. A one-site set draws exactly as in 0.1 (same seed, same neurons).
    """
    generator = torch.Generator().manual_seed(seed)
    parts = {}
    for site in neurons.sites:
        num_layers, width = neurons.grid(site)
        if not per_layer and len(neurons.sites) == 1:
            part = random_neuron_set(neurons.sizes(site), num_layers, width, seed=seed, site=site)
            parts[site] = {lang: part.layers(lang) for lang in part.languages}
            continue
        parts[site] = {}
        for lang in neurons.languages:
            if per_layer:
                parts[site][lang] = [torch.randperm(width, generator=generator)[:int(ids.numel())]
                                     for ids in neurons.layers(lang, site)]
            else:
                flat = torch.randperm(num_layers * width, generator=generator)[:neurons.size(lang, site)]
                parts[site][lang] = [flat[flat // width == layer] % width for layer in range(num_layers)]
    layers = {lang: {site: parts[site][lang] for site in neurons.sites} for lang in neurons.languages}
    parameters = {"seed": seed, "sizes": neurons.sizes(), "matched": neurons.method,
                  **({"per_layer": True} if per_layer else {})}
    return NeuronSet(layers, grids=neurons.grids, method="random", parameters=parameters, source=neurons.source)
