"""Figures of the core artefacts: the perplexity matrix and the layer distribution of a neuron set.

The drawing primitives (labelled heatmaps, line plots) live in :mod:`langneurons.analysis.figures`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from langneurons.sets.neuronset import NeuronSet
    from langneurons.evaluation.perplexity import PerplexityMatrix


def perplexity_heatmap(matrix: "PerplexityMatrix", path: str | Path) -> Path:
    """Figure 2 of the LAPE paper: the PPL change against normal, rows random + deactivated languages.

    Shown as the relative change in percent (``100 x (PPL / PPL_normal - 1)``), the unit of the report's table
    and headline, so the languages' very different perplexities share one scale; the paper plots the absolute
    change (``matrix.change()``, also in ``perplexity.csv`` minus its normal row).
    """
    from langneurons.analysis.figures import heatmap

    rows = [c for c in matrix.conditions if c != "normal"]
    index = [matrix.conditions.index(c) for c in rows]
    change = matrix.change(relative=True)[index] * 100
    zeroing = matrix.meta.get("intervention") == "zero parameters"
    return heatmap(change, rows, matrix.languages, path, "Relative PPL change against normal (%)",
                   "relative PPL change (%)", xlabel="evaluated language",
                   ylabel="parameters zeroed" if zeroing else "neurons deactivated", fmt="{:+.1f}", diverging=True)


def layer_distribution_plot(neurons: "NeuronSet", path: str | Path) -> Path:
    """Neurons per layer for each language (Figure 5 of the LAPE paper)."""
    from langneurons.analysis.figures import line_plot

    counts = neurons.layer_counts().tolist()
    series = {lang: counts[k] for k, lang in enumerate(neurons.languages)}
    return line_plot(range(neurons.num_layers), series, path, f"{neurons.method} neurons per layer", "layer",
                     "neurons")
