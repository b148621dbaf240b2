"""Figures of the analyses (matplotlib): line plots, labelled heatmaps, small multiples.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly, never through ``pyplot``: no backend
is selected, no global figure state is touched, and it works headless whatever backend the user chose (the
PNG is rendered by Agg when it is saved).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def new_figure(figsize: tuple[float, float], dpi: int = 110) -> Figure:
    """A figure outside ``pyplot`` (nothing global changes; saved by Agg)."""
    return Figure(figsize=figsize, dpi=dpi)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Lay out ``fig`` and write it to ``path`` (PNG by the suffix), cropped to what is drawn (legends placed
    outside the axes included)."""
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight", pad_inches=0.08)
    return Path(path)


def outside_legend(ax, handles=None, labels=None, title: str | None = None) -> None:
    """A legend to the right of the axes, never over the data."""
    kwargs = {} if handles is None else {"handles": handles, "labels": labels}
    count = len(labels if labels is not None else ax.get_legend_handles_labels()[1])
    ax.legend(**kwargs, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7, frameon=False,
              title=title, title_fontsize=7, ncol=max(1, math.ceil(count / 16)))  # no taller than the axes


_save = save_figure


def line_plot(x: Sequence[float], series: Mapping[str, Sequence[float]], path: str | Path, title: str,
              xlabel: str, ylabel: str, markers: bool = True, integer_x: bool = True) -> Path:
    """One line per entry of ``series`` (``name -> values over x``)."""
    fig = new_figure((7, 3.8))
    ax = fig.subplots()
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, values in series.items():
        ax.plot(list(x), list(values), marker="o" if markers else None, markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        outside_legend(ax)
    return _save(fig, path)


def heatmap(values: torch.Tensor, rows: Sequence[str], columns: Sequence[str], path: str | Path, title: str,
            colorbar: str, xlabel: str = "", ylabel: str = "", fmt: str = "{:.2f}",
            vmin: float | None = None, vmax: float | None = None, diverging: bool = False) -> Path:
    """``values[row, column]`` as a heatmap with each cell's number written in it (NaN cells left blank).

    ``diverging``: a red-blue scale centred on 0 (changes); otherwise viridis.
    """
    data = values.double().numpy()
    fig = new_figure((1.6 + 0.7 * len(columns), 1.2 + 0.5 * len(rows)))
    ax = fig.subplots()
    if diverging:
        finite = data[~np.isnan(data)]
        limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        vmin, vmax = -limit, limit
    image = ax.imshow(data, cmap="RdBu_r" if diverging else "viridis", aspect="auto", vmin=vmin, vmax=vmax)
    low, high = image.get_clim()
    ax.set_xticks(range(len(columns)), list(columns), rotation=45 if max(map(len, columns), default=0) > 4 else 0,
                  ha="right" if max(map(len, columns), default=0) > 4 else "center")
    ax.set_yticks(range(len(rows)), list(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if not math.isnan(data[i, j]):
                if diverging:  # pale near 0, dark at both ends
                    bright = abs(data[i, j]) < 0.6 * high
                else:
                    bright = high > low and (data[i, j] - low) / (high - low) > 0.6
                ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=7,
                        color="black" if bright else "white")
    fig.colorbar(image, ax=ax, label=colorbar)
    return _save(fig, path)


def curve_with_bars(curve: Sequence[float], curve_label: str, bars: Sequence[float] | None, bars_label: str,
                    path: str | Path, title: str) -> Path:
    """A curve over layers (left axis) with optional bars over the same layers (right axis): Figure 6."""
    fig = new_figure((7, 3.8))
    ax = fig.subplots()
    layers = list(range(len(curve)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if bars is not None:
        right = ax.twinx()
        right.bar(layers, list(bars), color="tab:gray", alpha=0.35, label=bars_label)
        right.set_ylabel(bars_label)
        ax.set_zorder(right.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(layers, list(curve), marker="o", markersize=3, color="tab:blue", label=curve_label)
    ax.set_xlabel("layer")
    ax.set_ylabel(curve_label)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def small_multiples(panels: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, title: str,
                    xlabel: str, ylabel: str) -> Path:
    """One panel per key of ``panels`` (e.g. a language), each with one line per series (e.g. a method)."""
    count = max(len(panels), 1)
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    fig = new_figure((4.2 * columns, 2.8 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, (name, series) in zip(axes.flat, panels.items()):
        for label, values in series.items():
            ax.plot(range(len(values)), list(values), marker="o", markersize=2, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    if handles:  # one legend for every panel, beside the grid (never over a panel's data)
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=7, frameon=False)
    fig.suptitle(title)
    return _save(fig, path)
