"""Reversible interventions on neurons during any forward pass (perplexity, generation, ...).

Nothing edits the model: a hook at the neuron site replaces the chosen activations in the tensor the
site produces (or consumes) and is removed when the context closes, restoring bit-identical outputs.

    with ln.deactivate(model, neurons, "zh"):
        model(...)                       # zh neurons are 0 at the site
    with ln.activate(model, neurons, "fr", stats, strength=1.0):
        model.generate(...)              # fr neurons are set to fr's mean activation
    with ln.intervene(model, [ln.Deactivate(neurons, "es"), ln.Activate(neurons, "zh", stats)]):
        ...
    with ln.intervene(model, [ln.Scale(neurons, "fr", 2.0, positions="generated"),
                              ln.Zero(item_sets, rows=item_of_row)]):   # several sites, per-row sets
        model.generate(...)

The general edit (:class:`~langneurons.interventions.edits.NeuronEdit`: kinds, values, rows, positions) is
in :mod:`~langneurons.interventions.edits`, the per-tensor operations in :mod:`~langneurons.interventions.ops`.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.interventions.edits import Add, NeuronEdit, Raise, Scale, SetValue, Zero
from langneurons.interventions.ops import Op, PositionState, apply_op, merge_ops
from langneurons.model.sites import SiteMap, locate_site, site_hooks
from langneurons.sets.neuronset import NeuronSet

__all__ = ["Activate", "Add", "Deactivate", "Edit", "NeuronEdit", "Raise", "Scale", "SetValue", "Zero", "activate",
           "as_neuron_edit", "deactivate", "intervene", "plan_edits"]


@dataclass
class Deactivate:
    """Set the neurons of ``languages`` (one code or several) to zero."""

    neurons: NeuronSet
    languages: str | Sequence[str]
    positions: str = "all"

    def values(self, layer: int, ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(ids.numel(), dtype=torch.float64)

    def to_edit(self) -> NeuronEdit:
        return Zero(self.neurons, self.languages, positions=self.positions)


@dataclass
class Activate:
    """Set the neurons of ``language`` to ``strength`` x that language's mean activation (from ``stats``)."""

    neurons: NeuronSet
    languages: str | Sequence[str]
    stats: object
    strength: float = 1.0
    value_language: str | None = None
    positions: str = "all"

    def to_edit(self) -> NeuronEdit:
        return SetValue(self.neurons, self.languages, stats=self.stats, strength=self.strength,
                        value_language=self.value_language, positions=self.positions)

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


Edit = Deactivate | Activate | NeuronEdit


def as_neuron_edit(edit: Edit) -> NeuronEdit:
    """The general form of any edit (``Deactivate`` / ``Activate`` of 0.1, or a :class:`NeuronEdit`)."""
    if isinstance(edit, NeuronEdit):
        return edit
    if isinstance(edit, (Deactivate, Activate)):
        return edit.to_edit()
    raise LangNeuronsError(f"not a neuron edit: {edit!r}")


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


def _site_maps(model: nn.Module, sites: list[str], site_map: SiteMap | Mapping[str, SiteMap] | None
               ) -> dict[str, SiteMap]:
    given: dict[str, SiteMap] = {}
    if isinstance(site_map, SiteMap):
        given[site_map.site] = site_map
    elif site_map is not None:
        given.update(site_map)
    return {site: given[site] if site in given else locate_site(model, site) for site in sites}


def plan_ops(edits: Sequence[NeuronEdit], site_maps: Mapping[str, SiteMap]) -> dict[str, dict[int, list[Op]]]:
    """Site -> layer -> the operations of ``edits`` there, in order (runs of zero / set merged)."""
    grids = {site: (m.num_layers, m.width) for site, m in site_maps.items()}
    plan: dict[str, dict[int, list[Op]]] = {}
    for edit in edits:
        edit.check(grids)
        for site in edit.sites:
            for layer in range(grids[site][0]):
                op = edit.op(site, layer, grids[site][1])
                if op is not None:
                    plan.setdefault(site, {}).setdefault(layer, []).append(op)
    return {site: {layer: merge_ops(ops) for layer, ops in layers.items()} for site, layers in plan.items()}


@contextmanager
def intervene(model: nn.Module, edits: Sequence[Edit], site_map: SiteMap | Mapping[str, SiteMap] | None = None
              ) -> Iterator[None]:
    """Apply ``edits`` (``Deactivate`` / ``Activate`` / any :class:`NeuronEdit`) at their sites inside the block.

    ``site_map`` (one :class:`SiteMap` or ``{site: SiteMap}``) saves locating a site again. Edits run in order;
    several at one site and layer compose (a later ``set`` wins over an earlier one).
    """
    general = [as_neuron_edit(edit) for edit in edits]
    if not general:
        yield
        return
    sites: list[str] = []
    for edit in general:
        sites.extend(site for site in edit.sites if site not in sites)
    site_maps = _site_maps(model, sites, site_map)
    plan = plan_ops(general, site_maps)
    state = PositionState() if any(op.positions != "all" for layers in plan.values()
                                   for ops in layers.values() for op in ops) else None

    def editor(site: str):
        layers = plan[site]

        def edit_site(layer: int, activations: torch.Tensor) -> torch.Tensor:
            for op in layers[layer]:
                activations = apply_op(op, activations, state)
            return activations

        return edit_site

    with ExitStack() as stack:
        if state is not None:
            for handle in state.attach(model):
                stack.callback(handle.remove)
        for site, layers in plan.items():
            stack.enter_context(site_hooks(site_maps[site], editor(site), layers=set(layers)))
        yield


def deactivate(model: nn.Module, neurons: NeuronSet, languages: str | Sequence[str],
               site_map: SiteMap | Mapping[str, SiteMap] | None = None):
    """Context manager: the neurons of ``languages`` output 0 at their site inside the block."""
    return intervene(model, [Deactivate(neurons, languages)], site_map=site_map)


def activate(model: nn.Module, neurons: NeuronSet, languages: str | Sequence[str], stats, strength: float = 1.0,
             site_map: SiteMap | Mapping[str, SiteMap] | None = None):
    """Context manager: the neurons of ``languages`` are set to ``strength`` x their language's mean activation."""
    return intervene(model, [Activate(neurons, languages, stats, strength)], site_map=site_map)
