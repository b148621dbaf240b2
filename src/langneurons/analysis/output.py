"""The output style of the analyses: :mod:`langneurons.sets.output` (the one style), plus their shared helpers.

Every analysis returns a result whose ``output()`` is an :class:`~langneurons.sets.output.Output`
(tables, figures, arrays, raw records, a ``summary``, provenance) and whose ``save(dir)`` writes it. A new
analysis declares its kind with :func:`register_kind` next to its writer and, for the report, registers a
section (:func:`langneurons.report.sections.register_section`: title, order, lead, headline; the generic
renderer shows its tables, figures, summary and provenance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError
from langneurons.sets.output import (
    HEAD_KEYS,
    Array,
    Figure,
    KindsView,
    Output,
    Records,
    Table,
    format_cell,
    read_array,
    read_output_meta,
    read_records,
    read_table,
    register_kind,
    registered_kinds,
)

SCHEMA_VERSION = 1
RESERVED_KEYS = HEAD_KEYS
#: every registered output kind, live (an open registry: ``register_kind`` adds to it)
KINDS = KindsView()
#: the 0.1 name of :class:`~langneurons.sets.output.Output`
AnalysisOutput = Output

__all__ = ["AnalysisOutput", "Array", "Figure", "KINDS", "Output", "RESERVED_KEYS", "Records", "SCHEMA_VERSION",
           "Table", "declare_kind", "format_cell", "summary_of", "layer_header", "neuron_set_provenance", "pair_names", "read_analysis_meta",
           "read_array", "read_records", "read_table", "register_kind", "registered_kinds"]


def declare_kind(kind: str, title: str, order: int, lead: str = "", headline: Callable[[Any], str | None] | None = None,
                 renderer: Callable[[Any], str] | None = None, schema_version: int = 1) -> str:
    """Declare an output kind and its report section in one call (where the kind is defined); returns ``kind``.

    ``headline(artefact) -> str | None`` is its one-sentence finding for the top of the report (read
    ``artefact.meta["summary"]``); ``renderer`` defaults to the generic card.
    """
    from langneurons.report.sections import register_section

    register_kind(kind, schema_version, title)
    register_section(kind, renderer, title, order, lead, headline)
    return kind


def summary_of(artefact: Any) -> dict[str, Any]:
    """The ``summary`` of an artefact's ``meta.json`` (``{}`` when absent)."""
    summary = artefact.meta.get("summary")
    return summary if isinstance(summary, dict) else {}


def read_analysis_meta(directory: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of an output folder, checked to be of a registered kind."""
    meta = read_output_meta(directory, what="an analysis directory")
    if meta.get("kind") not in KINDS:
        raise LangNeuronsError(f"{str(directory)!r} holds a {meta.get('kind')!r} output, not an analysis")
    return meta


def neuron_set_provenance(neurons: Any) -> dict[str, Any]:
    """What a neuron set is (method, parameters, site, shape, sizes, the statistics it came from)."""
    sites = list(neurons.sites)
    head: dict[str, Any] = {"method": neurons.method, "parameters": neurons.parameters}
    if len(sites) == 1:
        head.update(site=neurons.site, num_layers=neurons.num_layers, width=neurons.width)
    else:  # a structure-addressed set: one grid per site
        head.update(site=sites, grids={site: list(neurons.grid(site)) for site in sites})
    return {**head, "sizes": neurons.sizes(), "source": neurons.source}


def layer_header(num_layers: int) -> list[str]:
    """Column names of per-layer tables: ``"0" .. "L-1"`` (0-based decoder layer index)."""
    return [str(layer) for layer in range(num_layers)]


def pair_names(languages: Sequence[str]) -> list[tuple[str, str]]:
    """Unordered language pairs ``(a, b)`` with ``a`` before ``b`` in ``languages``."""
    return [(a, b) for i, a in enumerate(languages) for b in languages[i + 1:]]
