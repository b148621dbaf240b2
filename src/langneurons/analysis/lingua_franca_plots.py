"""Figures of the lingua franca analysis (Figures 2-7 of Zeng et al. 2024), drawn outside ``pyplot``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from langneurons.analysis.figures import new_figure, save_figure


def similarity_figure(similarity: torch.Tensor, languages: Sequence[str], path: str | Path, title: str) -> Path:
    """Figure 2: the ``[N, N]`` map with one block per language (samples ordered by language, then item)."""
    data = similarity.float().numpy()
    n = data.shape[0] // max(len(languages), 1)
    fig = new_figure((7.2, 6.2))
    ax = fig.subplots()
    image = ax.imshow(data, cmap="viridis", interpolation="nearest")
    centres = [n * k + (n - 1) / 2 for k in range(len(languages))]
    ax.set_xticks(centres, list(languages), fontsize=7)
    ax.set_yticks(centres, list(languages), fontsize=7)
    for k in range(1, len(languages)):
        ax.axhline(n * k - 0.5, color="white", linewidth=0.4)
        ax.axvline(n * k - 0.5, color="white", linewidth=0.4)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="cosine similarity", fraction=0.046)
    return save_figure(fig, path)


def layer_scores_figure(lrds: Sequence[float], sads: Sequence[float], path: str | Path, title: str) -> Path:
    """Figure 3: LRDS and SADS per layer."""
    fig = new_figure((7, 3.8))
    ax = fig.subplots()
    layers = list(range(len(lrds)))
    ax.plot(layers, list(lrds), marker="o", markersize=3, label="LRDS (language)")
    ax.plot(layers, list(sads), marker="s", markersize=3, label="SADS (meaning)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0, color="gray", linewidth=0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def stacked_bars(counts: torch.Tensor, series: Sequence[str], path: str | Path, title: str, xlabel: str,
                 ylabel: str, categories: Sequence[str] | None = None) -> Path:
    """``counts[series, category]`` as bars stacked by series (Figure 5: layers; with one series, Figure 6)."""
    data = counts.double().numpy()
    fig = new_figure((7, 3.8))
    ax = fig.subplots()
    x = np.arange(data.shape[1])
    bottom = np.zeros(data.shape[1])
    for row, name in zip(data, series):
        ax.bar(x, row, bottom=bottom, label=name)
        bottom += row
    ax.set_xticks(x, list(categories) if categories is not None else [str(i) for i in x],
                  fontsize=7 if data.shape[1] > 12 else 9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    if len(series) > 1:
        ax.legend(ncol=min(len(series), 5), fontsize=7)
    return save_figure(fig, path)


def evolution_figure(x: Sequence[float], panels: Mapping[str, Sequence[float]], path: str | Path, title: str,
                     xlabel: str, labels: Sequence[str] | None = None, log_x: bool = False) -> Path:
    """Figures 4 and 7: one panel per metric (LRDS, SKLR, SADS, ...) against training step or model size."""
    fig = new_figure((3.6 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, values) in zip(axes, panels.items()):
        ax.plot(list(x), list(values), marker="o", markersize=4)
        if log_x and min(x) > 0:
            ax.set_xscale("log")
        if labels is not None and not log_x and len(set(x)) == len(x):
            ax.set_xticks(list(x), list(labels), fontsize=7, rotation=30)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)


def layer_lines(series: Mapping[str, Sequence[float]], path: str | Path, title: str, ylabel: str) -> Path:
    """Figure 5 over training: one line per checkpoint, values over layers."""
    fig = new_figure((7, 3.8))
    ax = fig.subplots()
    for name, values in series.items():
        ax.plot(range(len(values)), list(values), marker="o", markersize=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(ncol=min(len(series), 4), fontsize=7)
    return save_figure(fig, path)
