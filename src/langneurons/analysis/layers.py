"""Layer distribution of language-specific neurons (LAPE paper, Figure 5, Tables 3, 6, 8-10).

For every language, how many of its neurons lie in each layer, and its total (Table 3). Two extra rows
summarise all languages: ``sum`` adds the per-language counts (a neuron shared by two languages counts
twice, as when the paper's per-language table columns are added up, e.g. Figure 6's "total language
neuron numbers"), ``distinct`` counts each neuron once (the union of all languages' sets).
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
    layer_header,
    neuron_set_provenance,
    summary_of,
    declare_kind,
)
from langneurons.sets.neuronset import NeuronSet



def _headline(artefact) -> str | None:
    summary = summary_of(artefact)
    if not isinstance(summary.get("distinct"), int) or summary.get("peak_layer") is None:
        return None
    layers = (artefact.meta.get("neurons") or {}).get("num_layers")
    return (f"Language-specific neurons peak at layer {summary['peak_layer']}" + (f" of {layers}" if layers else "")
            + f": {summary['distinct']:,} distinct neurons ({summary.get('sum', 0):,} counted once per language).")


KIND = declare_kind("layer_distribution", "Layer distribution", 40,
                    "Selected neurons per layer and language (LAPE paper, Figure 5, Tables 6, 8-10).", _headline)


def distinct_layer_counts(neurons: NeuronSet) -> torch.Tensor:
    """``int64[layer]``: neurons per layer that belong to at least one language (each counted once)."""
    union = torch.zeros(neurons.num_layers, neurons.width, dtype=torch.bool)
    for lang in neurons.languages:
        union |= neurons.mask(lang)
    return union.sum(1).long()


@dataclass
class LayerDistribution:
    """``counts[language, layer]`` (``int64``) with the ``sum`` and ``distinct`` rows over languages."""

    languages: list[str]
    counts: torch.Tensor
    distinct: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        return int(self.counts.shape[1])

    @property
    def totals(self) -> dict[str, int]:
        """Neurons per language (Table 3)."""
        return {lang: int(n) for lang, n in zip(self.languages, self.counts.sum(1).tolist())}

    @property
    def sum_row(self) -> torch.Tensor:
        """``int64[layer]``: per-layer counts added over languages (shared neurons count once per language)."""
        return self.counts.sum(0)

    def rows(self) -> dict[str, torch.Tensor]:
        """Named rows ``language`` ... then ``sum`` and ``distinct``, each ``int64[layer]``."""
        return {**dict(zip(self.languages, self.counts)), "sum": self.sum_row, "distinct": self.distinct}

    def output(self) -> AnalysisOutput:
        table = Table(
            "layers.csv", "Language-specific neurons per layer",
            ["language", *layer_header(self.num_layers), "total"],
            [[name, *row.tolist(), int(row.sum())] for name, row in self.rows().items()],
            rows_are="language, then sum (added over languages) and distinct (union of languages)",
            columns_are="layer (0-based), then total",
        )
        method = self.meta.get("neurons", {}).get("method", "")

        def draw(path: Path) -> None:
            from langneurons.analysis.figures import line_plot

            series = {lang: row.tolist() for lang, row in zip(self.languages, self.counts)}
            line_plot(range(self.num_layers), series, path, f"{method} neurons per layer".strip(), "layer", "neurons")

        summary = {"totals": self.totals, "sum": int(self.sum_row.sum()), "distinct": int(self.distinct.sum()),
                   "peak_layer": int(self.sum_row.argmax()) if self.num_layers else None}
        return AnalysisOutput(KIND, "Layer distribution of language-specific neurons", [table],
                              [Figure("layers.png", "Neurons per layer and language", draw)], summary, self.meta)

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        """Write ``layers.csv``, ``layers.png`` and ``meta.json`` atomically."""
        return self.output().save(directory, plot=plot)


def layer_distribution(neurons: NeuronSet) -> LayerDistribution:
    """Per-language neuron counts per layer of ``neurons``."""
    return LayerDistribution(list(neurons.languages), neurons.layer_counts(), distinct_layer_counts(neurons),
                             {"neurons": neuron_set_provenance(neurons)})
