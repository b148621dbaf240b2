"""Figures (matplotlib, Agg backend): heatmaps and layer distributions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

if TYPE_CHECKING:  # pragma: no cover
    from langneurons.neuronset import NeuronSet
    from langneurons.perplexity import PerplexityMatrix


def annotated_heatmap(values: torch.Tensor, rows: list[str], columns: list[str], path: str | Path, title: str,
                      colorbar: str, fmt: str = "{:+.2f}", diverging: bool = True) -> Path:
    """Save a heatmap of ``values[row, column]`` with each cell's number written in it."""
    data = values.double().numpy()
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.0 + 0.55 * len(rows)), dpi=110)
    if diverging:
        limit = float(abs(data).max()) or 1.0
        image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    else:
        image = ax.imshow(data, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("evaluated language")
    ax.set_ylabel("deactivated")
    ax.set_title(title)
    for i in range(len(rows)):
        for j in range(len(columns)):
            ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label=colorbar)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def perplexity_heatmap(matrix: "PerplexityMatrix", path: str | Path) -> Path:
    """Figure 2 of the LAPE paper: PPL change against normal, rows random + deactivated languages."""
    rows = [c for c in matrix.conditions if c != "normal"]
    index = [matrix.conditions.index(c) for c in rows]
    change = matrix.change()[index]
    return annotated_heatmap(change, rows, matrix.languages, path, "PPL change vs normal", "PPL change")


def layer_distribution_plot(neurons: "NeuronSet", path: str | Path) -> Path:
    """Neurons per layer for each language (Figure 5 of the LAPE paper)."""
    counts = neurons.layer_counts().numpy()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
    for k, lang in enumerate(neurons.languages):
        ax.plot(range(neurons.num_layers), counts[k], marker="o", markersize=3, label=lang)
    ax.set_xlabel("layer")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel("neurons")
    ax.set_title(f"{neurons.method} neurons per layer")
    ax.legend(ncol=min(len(neurons.languages), 6), fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
