"""The generic content of a card, read from an artefact's files and ``meta.json``: figures side by side, tables
behind their captions, raw records behind a details element, the summary, the arrays. Everything is shown once
per report (:mod:`langneurons.report.context`)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from langneurons.report.context import content_key, first_time
from langneurons.report.discover import Artefact
from langneurons.report.html import (IMAGE_TYPES, Cell, details, diverging_style, esc, figure, figure_grid,
                                     format_number, key_values, looks_like, parse_number, same_as, sequential_style,
                                     table, warning)

MAX_TABLE_ROWS = 300
MAX_CELL_CHARS = 600


def humanize(kind: str) -> str:
    """``"selection_sweep"`` -> ``"Selection sweep"``."""
    words = kind.replace("-", " ").replace("_", " ").strip()
    return (words[:1].upper() + words[1:]) or "Artefact"


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle)]
    if not rows:
        return [], []
    return rows[0], rows[1:]


def collapsed_table(caption: str, html: str, rows: int | None = None, key: str | None = None) -> str:
    """A table behind its caption (a details element); the same table a second time links to the first."""
    if key is not None:
        earlier = first_time(key)
        if earlier is not None:
            return same_as(f"Table: {caption}", earlier)
    count = f" ({rows:,} rows)" if rows is not None else ""
    return details(f"Table: {caption}{count}", html, cls="table")


def csv_table(path: Path, caption: str, collapsed: bool = False) -> str:
    """A CSV as a sortable table; a square matrix (columns = row labels) gets a colour scale and its diagonal marked.

    ``collapsed``: behind its caption, and shown once per report (see :func:`collapsed_table`)."""
    try:
        header, rows = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return warning(f"{caption} cannot be read: {exc}")
    if not header:
        return warning(f"{caption} is empty")
    if collapsed:
        return collapsed_table(caption, csv_table(path, ""), len(rows), content_key("csv", header, rows))
    shown = rows[:MAX_TABLE_ROWS]
    note = f"first {MAX_TABLE_ROWS} of {len(rows)} rows" if len(rows) > MAX_TABLE_ROWS else ""
    numbers = [[parse_number(v) for v in row[1:]] for row in shown]
    labels = [row[0] if row else "" for row in shown]
    square = bool(shown) and header[1:] == labels and all(v is not None for row in numbers for v in row)
    styles: dict[tuple[int, int], str] = {}
    if square:
        values = [v for row in numbers for v in row]
        low, high = min(values), max(values)
        limit = max(abs(low), abs(high))
        for i, row in enumerate(numbers):
            for j, v in enumerate(row):
                styles[i, j] = diverging_style(v, limit) if low < 0 else sequential_style(v, high)
    body = []
    for i, row in enumerate(shown):
        cells: list[Any] = [row[0] if row else ""]
        for j, text in enumerate(row[1:]):
            value = numbers[i][j]
            classes = ("diag" if square and i == j else "")
            if value is not None:
                cells.append(Cell(format_number(int(value) if value.is_integer() and "." not in text and "e" not in
                                                text.lower() else value), sort=value,
                                  cls=f"num {classes}".strip(), style=styles.get((i, j), ""), title=text))
            else:
                cells.append(Cell(_clip(text), cls="text" if _long(text) else classes))
        body.append(cells)
    return table(header, body, caption=caption, note=note)


def _long(text: str) -> bool:
    """Text shown wrapped, keeping its line breaks."""
    return len(text) > 40 or "\n" in text


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS] + "…"


def described_files(meta: dict[str, Any], key: str | tuple[str, ...]) -> dict[str, str]:
    """``{file: caption}`` from ``meta.json`` lists such as ``"tables": [{"file", "title", "rows", "columns"}]``."""
    keys = (key,) if isinstance(key, str) else key
    entries = [entry for k in keys if isinstance(meta.get(k), list) for entry in meta[k]]
    captions: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("file"), str):
            text = str(entry.get("title") or entry["file"])
            axes = [f"{axis}: {entry[axis]}" for axis in ("rows", "columns") if entry.get(axis)]
            captions[entry["file"]] = text + (f" ({'; '.join(axes)})" if axes else "") + f" · {entry['file']}"
    return captions


def _ordered(artefact: Artefact, suffixes: tuple[str, ...], key: str | tuple[str, ...]
             ) -> list[tuple[Path, str, str]]:
    """``(path, name, caption)`` of the artefact's files: those ``meta.json`` describes first, in its order."""
    captions = described_files(artefact.meta, key)
    files = {path.relative_to(artefact.path).as_posix(): path for path in artefact.files(suffixes)}
    names = [n for n in captions if n in files] + [n for n in files if n not in captions]
    return [(files[n], n, captions.get(n, n)) for n in names]


#: figures of one artefact in view; the rest are one click away (a report of four papers stays a few screens)
FIGURES_SHOWN = 2


def figures(artefact: Artefact, skip: frozenset[str] = frozenset(), shown: int | None = FIGURES_SHOWN) -> str:
    """Every image file of the artefact, embedded side by side (captions from ``meta.json``'s ``figures`` list),
    the first ``shown`` in view and the rest behind a details element; an image already shown links to it."""
    return figure_grid((image_file(path, caption) for path, name, caption in
                        _ordered(artefact, tuple(IMAGE_TYPES), "figures") if name not in skip), shown)


def image_file(path: Path, caption: str) -> str:
    """One embedded image file, or a warning when it is not a readable image."""
    mime = IMAGE_TYPES.get(path.suffix.lower(), "")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return warning(f"{caption} cannot be read: {exc}")
    if not mime or not data or not looks_like(data, mime):
        return warning(f"{caption} is not a valid {path.suffix} image; not shown")
    earlier = first_time(content_key("figure", data))
    if earlier is not None:
        return same_as(f"Figure: {caption}", earlier)
    return figure(data, mime, caption)


def tables(artefact: Artefact, skip: frozenset[str] = frozenset()) -> str:
    """Every CSV of the artefact as a table behind its caption (captions from ``meta.json``'s ``tables``), then its
    JSON-lines files as raw records (the most telling few behind a details element:
    :func:`langneurons.report.records.records_block`)."""
    from langneurons.report.records import records_block

    parts, raw = [], []
    for path, name, caption in _ordered(artefact, (".csv", ".jsonl"), ("tables", "raw")):
        if name in skip:
            continue
        if path.suffix.lower() == ".csv":
            parts.append(csv_table(path, caption, collapsed=True))
        else:
            raw.append(records_block(path, caption, str(artefact.path / name)))
    blocks = parts + raw
    if len(blocks) > TABLES_SHOWN:  # many tables: one line for all of them, each still behind its caption
        return details(f"Tables and records ({len(blocks)})", "".join(blocks), cls="tables")
    return "".join(blocks)


#: tables listed one per line in a card; more go behind one details element
TABLES_SHOWN = 3
MAX_SUMMARY_ITEMS = 10


def _short_value(value: Any) -> Any:
    """A summary value short enough for one line or two: long dicts and lists keep their first items."""
    if isinstance(value, dict) and len(value) > MAX_SUMMARY_ITEMS:
        head = dict(list(value.items())[:MAX_SUMMARY_ITEMS])
        return ", ".join(f"{k}={format_number(v) if isinstance(v, float) else v}" for k, v in head.items()) + \
            f", … ({len(value)} in all: see the tables)"
    if isinstance(value, list) and len(value) > MAX_SUMMARY_ITEMS:
        return ", ".join(str(v) for v in value[:MAX_SUMMARY_ITEMS]) + f", … ({len(value)} in all)"
    return value


def summary_block(meta: dict[str, Any]) -> str:
    """``meta.json``'s ``title`` and ``summary`` (headline numbers), when it has them."""
    parts = []
    if isinstance(meta.get("title"), str) and meta["title"]:
        parts.append(f'<p class="card-title">{esc(meta["title"])}</p>')
    if isinstance(meta.get("summary"), dict) and meta["summary"]:
        items = [(humanize(str(key)), _short_value(value)) for key, value in meta["summary"].items()]
        plain = [(key, value) for key, value in items if not isinstance(value, (dict, list))]
        nested = [(key, value) for key, value in items if isinstance(value, (dict, list))]
        if plain:
            parts.append('<div class="summary">' + key_values(plain) + "</div>")
        if nested:  # per language / type / condition numbers: one click away (the tables hold them all)
            block = '<div class="summary">' + key_values(nested) + "</div>"
            parts.append(block if not plain and len(nested) <= 2 else
                         details(f"Summary by language, type or condition ({len(nested)})", block, cls="tables"))
    return "".join(parts)


def arrays_table(meta: dict[str, Any]) -> str:
    """The arrays ``meta.json`` lists (``.npy`` / ``.safetensors``): file, title, dtype, shape, what rows and
    columns are (the values themselves are not shown)."""
    entries = [a for a in meta.get("arrays") or [] if isinstance(a, dict) and isinstance(a.get("file"), str)]
    if not entries:
        return ""
    rows = [[a["file"], str(a.get("title", "")), str(a.get("dtype", "")),
             " × ".join(str(n) for n in a.get("shape") or []), str(a.get("rows", "")), str(a.get("columns", ""))]
            for a in entries]
    return collapsed_table("arrays", table(["array", "title", "dtype", "shape", "rows", "columns"], rows,
                                           sortable=False), len(rows))

