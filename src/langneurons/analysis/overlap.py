"""Overlap between the neuron sets of languages (LAPE paper section 3.2; Zhao et al. appendix C, eq. 11).

Two readings, both ``float64[x, y]`` over languages:

* ``shared_share`` (LAPE paper, "approximately 25% [of the zh / ja neurons] overlap for both languages"):
  the share of the two languages' neurons that both hold, ``|N_x ∩ N_y| / |N_x ∪ N_y|`` (the Jaccard
  index; symmetric). The paper gives no formula, this is the reading of "share of shared neurons".
* ``overlap_zhao`` (Zhao et al. 2024, eq. 11): ``overlap(x, y) = |N_x ∩ N_y| / |N_y|``, the share of
  ``y``'s neurons that are also ``x``'s (row ``x``, column ``y``; not symmetric).

Undefined ratios (empty sets) are NaN; the diagonal is 1 for every non-empty set. A structure-addressed set
(several sites) counts a neuron as ``(site, layer, index)``: :func:`neuron_overlap` over some or all of its
sites, :func:`structure_overlap` per structure (Zhao et al. Figures 5 and 6: self-attention = the ``attn.q``,
``attn.k`` and ``attn.v`` neurons together, feed-forward = the ``ffn.*`` neurons; each attention site too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.analysis.output import (
    AnalysisOutput,
    Figure,
    Table,
    neuron_set_provenance,
    summary_of,
    declare_kind,
)
from langneurons.sets.neuronset import NeuronSet



def _headline(artefact) -> str | None:
    summary = summary_of(artefact)
    pair, share = summary.get("most_shared_pair"), summary.get("most_shared_share")
    if not pair or not isinstance(share, (int, float)):
        return None
    return f"The most shared pair is {pair}: {share:.1%} of their neurons are shared (|N_x ∩ N_y| / |N_x ∪ N_y|)."


KIND = declare_kind("overlap", "Overlap between languages", 50,
                    "Shared neurons between languages' sets (LAPE paper, section 3.2).", _headline)


def intersection_counts(neurons: NeuronSet, sites: list[str] | None = None) -> torch.Tensor:
    """``int64[x, y]``: ``|N_x ∩ N_y|`` for every pair of languages (diagonal: the set sizes), over ``sites``
    (default: every site of the set; a neuron is ``(site, layer, index)``)."""
    sites = list(neurons.sites if sites is None else sites)
    masks = torch.stack([torch.cat([neurons.mask(lang, site).flatten() for site in sites])
                         for lang in neurons.languages]).double()
    return (masks @ masks.T).round().long() if masks.numel() else torch.zeros(0, 0, dtype=torch.long)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    numerator, denominator = numerator.double(), denominator.double()
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1), torch.full_like(numerator, float("nan")))


@dataclass
class Overlap:
    """Pairwise overlap of the languages of one neuron set."""

    languages: list[str]
    intersection: torch.Tensor  # int64[x, y]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sizes(self) -> torch.Tensor:
        """``int64[language]``: ``|N_x|``."""
        return self.intersection.diagonal().clone()

    @property
    def union(self) -> torch.Tensor:
        """``int64[x, y]``: ``|N_x ∪ N_y|``."""
        return self.sizes[:, None] + self.sizes[None, :] - self.intersection

    @property
    def shared_share(self) -> torch.Tensor:
        """``float64[x, y]``: ``|N_x ∩ N_y| / |N_x ∪ N_y|`` (the LAPE paper's "share of shared neurons")."""
        return _ratio(self.intersection, self.union)

    @property
    def overlap_zhao(self) -> torch.Tensor:
        """``float64[x, y]``: ``|N_x ∩ N_y| / |N_y|`` (Zhao et al. 2024, eq. 11)."""
        return _ratio(self.intersection, self.sizes[None, :].expand_as(self.intersection))

    def value(self, x: str, y: str, reading: str = "shared_share") -> float:
        """One entry, e.g. ``value("zh", "ja")``; ``reading`` is ``shared_share`` or ``overlap_zhao``."""
        matrix = getattr(self, reading)
        return float(matrix[self.languages.index(x), self.languages.index(y)])

    def _table(self, file: str, title: str, values: torch.Tensor, columns: str) -> Table:
        return Table(file, title, ["language", *self.languages],
                     [[lang, *row] for lang, row in zip(self.languages, values.tolist())],
                     rows_are="language x", columns_are=columns)

    def output(self) -> AnalysisOutput:
        tables = [
            self._table("intersection.csv", "Shared neurons |N_x ∩ N_y| (diagonal: |N_x|)", self.intersection,
                        "language y"),
            self._table("shared_share.csv", "Share of shared neurons |N_x ∩ N_y| / |N_x ∪ N_y| (LAPE reading)",
                        self.shared_share, "language y"),
            self._table("overlap_zhao.csv", "overlap(x, y) = |N_x ∩ N_y| / |N_y| (Zhao et al. eq. 11)",
                        self.overlap_zhao, "language y (the denominator's set)"),
        ]

        def drawer(values: torch.Tensor, title: str):
            def draw(path: Path) -> None:
                from langneurons.analysis.figures import heatmap

                heatmap(values, self.languages, self.languages, path, title, "share", xlabel="y", ylabel="x",
                        vmin=0.0, vmax=1.0)
            return draw

        figures = [
            Figure("shared_share.png", "Share of shared neurons (LAPE reading)",
                   drawer(self.shared_share, "|N_x ∩ N_y| / |N_x ∪ N_y|")),
            Figure("overlap_zhao.png", "overlap(x, y) (Zhao et al. eq. 11)",
                   drawer(self.overlap_zhao, "overlap(x, y) = |N_x ∩ N_y| / |N_y|")),
        ]
        pairs = {}
        for i, x in enumerate(self.languages):
            for j in range(i + 1, len(self.languages)):
                pairs[f"{x}-{self.languages[j]}"] = float(self.shared_share[i, j])
        most = max((p for p in pairs.items() if p[1] == p[1]), key=lambda p: p[1], default=(None, None))
        summary = {"sizes": dict(zip(self.languages, self.sizes.tolist())), "shared_share_pairs": pairs,
                   "most_shared_pair": most[0], "most_shared_share": most[1]}
        definitions = {
            "shared_share": "|N_x ∩ N_y| / |N_x ∪ N_y| (LAPE paper section 3.2, 'share of shared neurons')",
            "overlap_zhao": "|N_x ∩ N_y| / |N_y|, row x, column y (Zhao et al. 2024, appendix C, eq. 11)",
        }
        return AnalysisOutput(KIND, "Overlap between languages' neuron sets", tables, figures, summary,
                              {"definitions": definitions, **self.meta})

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        """Write the three CSVs, two heatmaps and ``meta.json`` atomically."""
        return self.output().save(directory, plot=plot)


def neuron_overlap(neurons: NeuronSet, sites: list[str] | None = None) -> Overlap:
    """Pairwise overlap of the languages' sets in ``neurons`` (over ``sites``, default all of them)."""
    meta: dict[str, Any] = {"neurons": neuron_set_provenance(neurons)}
    if sites is not None or len(neurons.sites) > 1:
        meta["sites"] = list(neurons.sites if sites is None else sites)
    return Overlap(list(neurons.languages), intersection_counts(neurons, sites), meta)


STRUCTURE_KIND = declare_kind(
    "structure_overlap", "Overlap by structure (PLND)", 52,
    "overlap(x, y) = |N_x ∩ N_y| / |N_y| (Zhao et al. eq. 11) in the self-attention and feed-forward structures "
    "(Figures 5, 6).", lambda artefact: summary_of(artefact).get("headline"))


def default_structures(neurons: NeuronSet) -> dict[str, list[str]]:
    """``attention`` (every ``attn.*`` site), ``ffn`` (every ``ffn.*`` site) and each attention site alone."""
    attention = [s for s in neurons.sites if s.startswith("attn.")]
    ffn = [s for s in neurons.sites if s.startswith("ffn.")]
    groups = {"attention": attention, "ffn": ffn}
    if len(attention) > 1:
        groups.update({site: [site] for site in attention})
    return {name: sites for name, sites in groups.items() if sites}


@dataclass
class StructureOverlap:
    """One :class:`Overlap` per structure (a group of sites) of one neuron set."""

    overlaps: dict[str, Overlap]
    sites: dict[str, list[str]]
    meta: dict[str, Any] = field(default_factory=dict)

    def output(self) -> AnalysisOutput:
        tables, figures, summary = [], [], {}
        for name, result in self.overlaps.items():
            tables.append(result._table(f"overlap_{name}.csv", f"overlap(x, y) = |N_x ∩ N_y| / |N_y|, {name}",
                                        result.overlap_zhao, "language y (the denominator's set)"))
            tables.append(result._table(f"intersection_{name}.csv", f"|N_x ∩ N_y| (diagonal |N_x|), {name}",
                                        result.intersection, "language y"))

            def draw(path: Path, result: Overlap = result, name: str = name) -> None:
                from langneurons.analysis.figures import heatmap

                heatmap(result.overlap_zhao, result.languages, result.languages, path, f"overlap(x, y), {name}",
                        "|N_x ∩ N_y| / |N_y|", xlabel="y", ylabel="x", vmin=0.0, vmax=1.0)

            figures.append(Figure(f"overlap_{name}.png", f"overlap(x, y) in {name} (Figure 5)", draw))
            matrix = result.overlap_zhao
            off = [float(matrix[i, j]) for i in range(len(result.languages)) for j in range(len(result.languages))
                   if i != j and matrix[i, j] == matrix[i, j]]
            summary[name] = {"sizes": dict(zip(result.languages, result.sizes.tolist())),
                             "mean_off_diagonal": sum(off) / len(off) if off else None}
        parts = [f"{name} {values['mean_off_diagonal']:.1%}" for name, values in summary.items()
                 if name in ("attention", "ffn") and values["mean_off_diagonal"] is not None]
        if parts:
            summary["headline"] = "Mean overlap(x, y) between languages: " + ", ".join(parts) + "."
        return AnalysisOutput(STRUCTURE_KIND, "Overlap of language-specific neurons by structure", tables, figures,
                              summary, {"structures": self.sites, **self.meta})

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        return self.output().save(directory, plot=plot)


def structure_overlap(neurons: NeuronSet, structures: dict[str, list[str]] | None = None) -> StructureOverlap:
    """eq. 11 per structure: ``{name: [sites]}`` (default :func:`default_structures`)."""
    groups = default_structures(neurons) if structures is None else structures
    overlaps = {name: neuron_overlap(neurons, sites) for name, sites in groups.items()}
    return StructureOverlap(overlaps, groups, {"neurons": neuron_set_provenance(neurons)})
