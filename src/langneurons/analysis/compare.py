"""Comparing the neuron sets of several methods (or runs): sizes, pairwise Jaccard, layer distributions.

For every language the sets share, and for ``all`` (the union of each set's languages), each pair of
sets ``(A, B)`` gets ``|A|``, ``|B|``, ``|A ∩ B|``, ``|A ∪ B|`` and the Jaccard index
``|A ∩ B| / |A ∪ B|`` (NaN when both are empty). The layer distributions are put side by side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.analysis.output import (
    AnalysisOutput,
    Figure,
    Table,
    layer_header,
    neuron_set_provenance,
    summary_of,
    declare_kind,
)
from langneurons.errors import LangNeuronsError
from langneurons.sets.neuronset import NeuronSet



def _headline(artefact) -> str | None:
    pairs = summary_of(artefact).get("jaccard_all")
    if not isinstance(pairs, dict) or not pairs:
        return None
    shown = ", ".join(f"{pair} {value:.3f}" for pair, value in list(pairs.items())[:4]
                      if isinstance(value, (int, float)))
    return f"Jaccard overlap of the sets over all languages: {shown}." if shown else None


KIND = declare_kind("method_comparison", "Method comparison", 45,
                    "How much the neuron sets of several methods agree: sizes, Jaccard overlap, layer distributions.",
                    _headline)
ALL = "all"


def union_mask(neurons: NeuronSet, languages: list[str]) -> torch.Tensor:
    """``bool[layer, neuron]``: neurons that belong to any of ``languages``."""
    mask = torch.zeros(neurons.num_layers, neurons.width, dtype=torch.bool)
    for lang in languages:
        mask |= neurons.mask(lang)
    return mask


@dataclass
class PairStats:
    """Overlap of two sets for one language."""

    language: str
    first: str
    second: str
    size_first: int
    size_second: int
    intersection: int

    @property
    def union(self) -> int:
        return self.size_first + self.size_second - self.intersection

    @property
    def jaccard(self) -> float:
        return self.intersection / self.union if self.union else float("nan")


@dataclass
class MethodComparison:
    """Sizes ``sizes[set][language]``, pairwise overlaps and ``layer_counts[set]`` (``int64[language, layer]``)."""

    names: list[str]
    languages: list[str]
    sizes: dict[str, dict[str, int]]
    pairs: list[PairStats]
    layer_counts: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    def jaccard(self, first: str, second: str, language: str) -> float:
        for pair in self.pairs:
            if pair.language == language and {pair.first, pair.second} == {first, second}:
                return pair.jaccard
        raise LangNeuronsError(f"no comparison of {first!r} and {second!r} for {language!r}")

    def output(self) -> AnalysisOutput:
        rows_langs = [*self.languages, ALL]
        sizes = Table("sizes.csv", "Neurons per language and set", ["language", *self.names],
                      [[lang, *(self.sizes[name][lang] for name in self.names)] for lang in rows_langs],
                      rows_are=f"language, then {ALL} (union over languages)", columns_are="neuron set")
        jaccard = Table(
            "jaccard.csv", "Pairwise overlap of the sets per language",
            ["language", "set_a", "set_b", "size_a", "size_b", "intersection", "union", "jaccard"],
            [[p.language, p.first, p.second, p.size_first, p.size_second, p.intersection, p.union, p.jaccard]
             for p in self.pairs],
            rows_are=f"(language or {ALL}, pair of sets)", columns_are="sizes, |A ∩ B|, |A ∪ B|, Jaccard")
        num_layers = next(iter(self.layer_counts.values())).shape[1]
        layers = Table("layers.csv", "Neurons per layer, side by side", ["set", "language", *layer_header(num_layers),
                                                                          "total"],
                       [[name, lang, *self.layer_counts[name][k].tolist(), int(self.layer_counts[name][k].sum())]
                        for k, lang in enumerate(self.languages) for name in self.names],
                       rows_are="(language, set)", columns_are="layer (0-based), then total")
        pair_labels = [f"{a} vs {b}" for a, b in self._set_pairs()]

        def draw_jaccard(path: Path) -> None:
            from langneurons.analysis.figures import heatmap

            values = torch.tensor([[self.jaccard(a, b, lang) for a, b in self._set_pairs()] for lang in rows_langs],
                                  dtype=torch.float64)
            heatmap(values, rows_langs, pair_labels, path, "Jaccard overlap of neuron sets", "Jaccard",
                    xlabel="pair of sets", ylabel="language", vmin=0.0, vmax=1.0)

        def draw_layers(path: Path) -> None:
            from langneurons.analysis.figures import small_multiples

            panels = {lang: {name: self.layer_counts[name][k].tolist() for name in self.names}
                      for k, lang in enumerate(self.languages)}
            small_multiples(panels, path, "Neurons per layer", "layer", "neurons")

        summary = {"sets": self.names, "languages": self.languages,
                   "jaccard_all": {f"{p.first} vs {p.second}": p.jaccard for p in self.pairs if p.language == ALL}}
        return AnalysisOutput(KIND, "Comparison of neuron sets", [sizes, jaccard, layers],
                              [Figure("jaccard.png", "Jaccard overlap per language and pair of sets", draw_jaccard),
                               Figure("layers.png", "Layer distributions side by side", draw_layers)],
                              summary, self.meta)

    def _set_pairs(self) -> list[tuple[str, str]]:
        return [(a, b) for i, a in enumerate(self.names) for b in self.names[i + 1:]]

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        """Write ``sizes.csv``, ``jaccard.csv``, ``layers.csv``, two figures and ``meta.json`` atomically."""
        return self.output().save(directory, plot=plot)


def compare_neuron_sets(sets: Mapping[str, NeuronSet]) -> MethodComparison:
    """Compare named neuron sets (at least two, on the same site and layer x neuron grid)."""
    names = list(sets)
    if len(names) < 2:
        raise LangNeuronsError(f"comparing needs at least two neuron sets, got {len(names)}")
    first = sets[names[0]]
    for name in names[1:]:
        other = sets[name]
        if (other.num_layers, other.width, other.site) != (first.num_layers, first.width, first.site):
            raise LangNeuronsError(
                f"neuron sets {names[0]!r} ({first.num_layers} layers x {first.width} at {first.site}) and {name!r} "
                f"({other.num_layers} x {other.width} at {other.site}) are not on the same neuron grid")
    languages = [lang for lang in first.languages if all(lang in sets[n].languages for n in names)]
    if not languages:
        raise LangNeuronsError(f"the neuron sets {', '.join(names)} have no language in common")
    masks = {name: {lang: sets[name].mask(lang) for lang in languages} for name in names}
    for name in names:
        masks[name][ALL] = union_mask(sets[name], languages)
    sizes = {name: {lang: int(mask.sum()) for lang, mask in masks[name].items()} for name in names}
    pairs = []
    for lang in [*languages, ALL]:
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                shared = int((masks[a][lang] & masks[b][lang]).sum())
                pairs.append(PairStats(lang, a, b, sizes[a][lang], sizes[b][lang], shared))
    layer_counts = {name: torch.stack([masks[name][lang].sum(1) for lang in languages]).long() for name in names}
    skipped = {name: [lang for lang in sets[name].languages if lang not in languages] for name in names}
    meta = {"sets": {name: neuron_set_provenance(sets[name]) for name in names},
            "skipped_languages": {name: langs for name, langs in skipped.items() if langs},
            "site": first.site, "num_layers": first.num_layers, "width": first.width}
    return MethodComparison(names, languages, sizes, pairs, layer_counts, meta)


def default_names(paths: list[str]) -> list[str]:
    """Labels for neuron-set directories: the directory name without ``.neurons``, made unique."""
    names: list[str] = []
    for path in paths:
        base = Path(str(path).rstrip("/")).name
        base = base[: -len(".neurons")] if base.endswith(".neurons") and len(base) > len(".neurons") else base
        name, index = base or "set", 2
        while name in names:
            name, index = f"{base}_{index}", index + 1
        names.append(name)
    return names
