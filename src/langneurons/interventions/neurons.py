"""Reversible interventions on neurons during any forward pass (perplexity, generation, ...).

Nothing edits the model: a hook at the neuron site replaces the chosen activations in the tensor the
site produces (or consumes) and is removed when the context closes, restoring bit-identical outputs.

    with ln.deactivate(model, neurons, "zh"):
        model(...)                       # zh neurons are 0 at the site
    with ln.activate(model, neurons, "fr", stats, strength=1.0):
        model.generate(...)              # fr neurons are set to fr's mean activation
    with ln.intervene(model, [ln.Deactivate(neurons, "es"), ln.Activate(neurons, "zh", stats)]):
        ...
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.sets.neuronset import NeuronSet
from langneurons.model.sites import SiteMap, locate_site, site_hooks


@dataclass
class Deactivate:
    """Set the neurons of ``languages`` (one code or several) to zero."""

    neurons: NeuronSet
    languages: str | Sequence[str]

    def values(self, layer: int, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(ids.numel(), dtype=torch.float64)


@dataclass
class Activate:
    """Set the neurons of ``language`` to ``strength`` x that language's mean activation (from ``stats``)."""

    neurons: NeuronSet
    languages: str | Sequence[str]
    stats: object
    strength: float = 1.0
    value_language: str | None = None

    def values(self, layer: int, ids: torch.Tensor) -> torch.Tensor:
        return self._means[layer, ids] * self.strength

    def prepare(self, language: str) -> None:
        stats = self.stats
        source = self.value_language or language
        if source not in stats.languages:
            raise LangNeuronsError(f"statistics have no language {source!r} to take mean activations from")
        if (stats.num_layers, stats.width) != (self.neurons.num_layers, self.neurons.width):
            raise LangNeuronsError("statistics and neuron set have different shapes")
        stats_site = stats.meta.get("site")
        if stats_site and stats_site != self.neurons.site:
            raise LangNeuronsError(f"statistics are of site {stats_site!r}, neurons of {self.neurons.site!r}")
        self._means = stats.mean_activation()[stats.languages.index(source)]


Edit = Deactivate | Activate


def _languages(edit: Edit) -> list[str]:
    return [edit.languages] if isinstance(edit.languages, str) else list(edit.languages)


def plan_edits(edits: Sequence[Edit], num_layers: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, the neuron ids ``long[n]`` and their new values ``float64[n]`` (later edits win)."""
    planned: dict[int, dict[int, float]] = {}
    for edit in edits:
        for language in _languages(edit):
            if isinstance(edit, Activate):
                edit.prepare(language)
            for layer, ids in enumerate(edit.neurons.layers(language)):
                if ids.numel() == 0:
                    continue
                values = edit.values(layer, ids)
                planned.setdefault(layer, {}).update(zip(ids.tolist(), values.tolist()))
    plan = {}
    for layer, mapping in planned.items():
        ids = torch.tensor(sorted(mapping), dtype=torch.long)
        plan[layer] = (ids, torch.tensor([mapping[i] for i in ids.tolist()], dtype=torch.float64))
    return plan


@contextmanager
def intervene(model: nn.Module, edits: Sequence[Edit], site_map: SiteMap | None = None) -> Iterator[None]:
    """Apply ``edits`` (``Deactivate`` / ``Activate``) at their site while the context is open."""
    edits = list(edits)
    if not edits:
        yield
        return
    sites = {edit.neurons.site for edit in edits}
    if len(sites) != 1:
        raise LangNeuronsError(f"edits at several sites at once are not supported: {sorted(sites)}")
    site = sites.pop()
    if site_map is None or site_map.site != site:
        site_map = locate_site(model, site)
    for edit in edits:
        edit.neurons.check_shape(site_map.num_layers, site_map.width)
    plan = plan_edits(edits, site_map.num_layers)
    cache: dict[tuple[int, torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    def replace(layer: int, activations: torch.Tensor) -> torch.Tensor:
        key = (layer, activations.device, activations.dtype)
        if key not in cache:
            ids, values = plan[layer]
            cache[key] = (ids.to(activations.device), values.to(activations.device, activations.dtype))
        ids, values = cache[key]
        return activations.index_copy(-1, ids, values.expand(*activations.shape[:-1], ids.numel()))

    with site_hooks(site_map, replace, layers=set(plan)):
        yield


def deactivate(model: nn.Module, neurons: NeuronSet, languages: str | Sequence[str],
               site_map: SiteMap | None = None):
    """Context manager: the neurons of ``languages`` output 0 at their site inside the block."""
    return intervene(model, [Deactivate(neurons, languages)], site_map=site_map)


def activate(model: nn.Module, neurons: NeuronSet, languages: str | Sequence[str], stats, strength: float = 1.0,
             site_map: SiteMap | None = None):
    """Context manager: the neurons of ``languages`` are set to ``strength`` x their language's mean activation."""
    return intervene(model, [Activate(neurons, languages, stats, strength)], site_map=site_map)
