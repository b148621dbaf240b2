"""Self-describing analysis directories: CSV tables, PNG figures and a ``meta.json`` that lists them.

Every analysis writes one directory atomically::

    OUT/
      meta.json      {"kind": ..., "schema_version": 1, "created", "environment", "title",
                      "tables":  [{"file": "x.csv", "title", "rows", "columns"}, ...],
                      "figures": [{"file": "x.png", "title"}, ...],
                      "summary": {...headline numbers...}, ...provenance...}
      *.csv          header row, then one row per named row
      *.png

so that a report can render whatever a run directory holds without knowing the analysis.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langneurons.sets.artefacts import atomic_directory, sidecar, write_json
from langneurons.errors import LangNeuronsError

SCHEMA_VERSION = 1

#: sidecar keys that provenance copied from another artefact's meta must not override
RESERVED_KEYS = ("kind", "schema_version", "created", "environment", "tensors_sha256", "title", "tables", "figures",
                 "summary")

#: the kinds of analysis directory this package writes
KINDS = ("layer_distribution", "overlap", "selection_sweep", "ses", "dominance", "method_comparison")


def format_cell(value: Any) -> str:
    """A CSV cell: ints as ints, floats with 6 decimals (``nan`` for undefined), anything else as text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6f}"
    return str(value)


@dataclass
class Table:
    """One CSV file: ``header`` then ``rows``; ``rows_are`` / ``columns_are`` say what they name."""

    file: str
    title: str
    header: list[str]
    rows: list[list[Any]]
    rows_are: str
    columns_are: str

    def write(self, directory: Path) -> None:
        with open(directory / self.file, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.header)
            for row in self.rows:
                writer.writerow([format_cell(value) for value in row])

    def describe(self) -> dict[str, str]:
        return {"file": self.file, "title": self.title, "rows": self.rows_are, "columns": self.columns_are}


@dataclass
class Figure:
    """One PNG file drawn by ``draw(path)``."""

    file: str
    title: str
    draw: Callable[[Path], Any]

    def describe(self) -> dict[str, str]:
        return {"file": self.file, "title": self.title}


@dataclass
class AnalysisOutput:
    """What an analysis writes: its kind, tables, figures, headline numbers and provenance."""

    kind: str
    title: str
    tables: list[Table]
    figures: list[Figure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        """Write every table, figure (unless ``plot`` is false) and ``meta.json`` into ``directory`` atomically."""
        if self.kind not in KINDS:
            raise ValueError(f"unknown analysis kind {self.kind!r}")
        with atomic_directory(directory) as staging:
            for table in self.tables:
                table.write(staging)
            figures = self.figures if plot else []
            for figure in figures:
                figure.draw(staging / figure.file)
            head = {"title": self.title, "tables": [t.describe() for t in self.tables],
                    "figures": [f.describe() for f in figures], "summary": self.summary}
            provenance = {key: value for key, value in self.meta.items() if key not in RESERVED_KEYS}
            write_json(staging / "meta.json", sidecar(self.kind, SCHEMA_VERSION, {**head, **provenance}))
        return Path(directory)


def read_table(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV written by :class:`Table` (cells as text)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise LangNeuronsError(f"cannot read table {str(path)!r}: {exc.strerror}") from None
    if not rows:
        raise LangNeuronsError(f"table {str(path)!r} is empty")
    return rows[0], rows[1:]


def read_analysis_meta(directory: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of an analysis directory, checked to be one of :data:`KINDS`."""
    path = Path(directory) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise LangNeuronsError(f"{str(directory)!r} is not an analysis directory (no meta.json)") from None
    except json.JSONDecodeError:
        raise LangNeuronsError(f"{str(path)!r} is corrupt (not JSON)") from None
    if meta.get("kind") not in KINDS:
        raise LangNeuronsError(f"{str(directory)!r} holds a {meta.get('kind')!r} output, not an analysis")
    return meta


def neuron_set_provenance(neurons: Any) -> dict[str, Any]:
    """What a neuron set is (method, parameters, site, shape, sizes, the statistics it came from)."""
    return {"method": neurons.method, "parameters": neurons.parameters, "site": neurons.site,
            "num_layers": neurons.num_layers, "width": neurons.width, "sizes": neurons.sizes(),
            "source": neurons.source}


def layer_header(num_layers: int) -> list[str]:
    """Column names of per-layer tables: ``"0" .. "L-1"`` (0-based decoder layer index)."""
    return [str(layer) for layer in range(num_layers)]


def pair_names(languages: Sequence[str]) -> list[tuple[str, str]]:
    """Unordered language pairs ``(a, b)`` with ``a`` before ``b`` in ``languages``."""
    return [(a, b) for i, a in enumerate(languages) for b in languages[i + 1:]]
