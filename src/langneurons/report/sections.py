"""Report sections: the registry from artefact kind to section, the generic renderer, and section layout.

Every kind registers its section where the kind is defined (:func:`register_section`: title, order, lead,
card renderer, headline); this registry is the one source of what the report shows. A renderer takes one
:class:`~langneurons.report.discover.Artefact` and returns the HTML body of its card (the card frame, title and
anchor are added here). Kinds without a registration get :func:`render_generic`: the title and summary of
their ``meta.json``, every figure embedded, every CSV / JSONL as a table, arrays listed, then provenance.
Sections appear in ``order`` (overview first, then statistics 10, perplexity 20, neuron sets 30, analyses
40-65, unknown kinds 70, generation 80-85); with several runs each section has one column per run. Each
artefact's ``headline`` (one sentence) opens the report in the findings list.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from langneurons.errors import LangNeuronsError
from langneurons.report.discover import Artefact, Run
from langneurons.report.html import (IMAGE_TYPES, Cell, details, diverging_style, esc, figure, format_number,
                                     key_values, looks_like, parse_number, pre, sequential_style, table, warning)

Renderer = Callable[[Artefact], str]
Headline = Callable[[Artefact], "str | None"]

UNKNOWN_ORDER = 70
MAX_TABLE_ROWS = 300
MAX_JSONL_RECORDS = 50
MAX_CELL_CHARS = 600


def meta_headline(artefact: Artefact) -> str | None:
    """The default headline: the ``headline`` sentence of the artefact's ``meta.json``, if it has one."""
    text = artefact.meta.get("headline")
    return text if isinstance(text, str) and text.strip() else None


@dataclass
class SectionSpec:
    """How the artefacts of one kind are shown: section title and place, lead text, card renderer, and the
    one-sentence finding of an artefact for the report's opening summary (``None``: nothing to say)."""

    kind: str
    title: str
    order: int
    renderer: Renderer
    lead: str = ""
    headline: Headline = meta_headline


#: kind -> its section; filled by :func:`register_section` where each kind is defined (the one source)
_REGISTRY: dict[str, SectionSpec] = {}


def humanize(kind: str) -> str:
    """``"selection_sweep"`` -> ``"Selection sweep"``."""
    words = kind.replace("-", " ").replace("_", " ").strip()
    return (words[:1].upper() + words[1:]) or "Artefact"


def register_section(kind: str, renderer: Renderer | None = None, title: str | None = None, order: int | None = None,
                     lead: str | None = None, headline: Headline | None = None) -> SectionSpec:
    """Show artefacts whose ``meta.json`` kind is ``kind`` in a section of their own.

    ``renderer(artefact) -> html`` draws one card (default :func:`render_generic`: tables, figures, summary,
    provenance); ``headline(artefact) -> str | None`` gives its finding for the top of the report (default: the
    ``headline`` of its ``meta.json``). Registering a kind again replaces the fields given and keeps the others.
    """
    if not kind or (renderer is not None and not callable(renderer)) or (headline is not None and not callable(
            headline)):
        raise LangNeuronsError("register_section needs a kind and callable renderer / headline")
    old = _REGISTRY.get(kind) or section_spec(kind)
    spec = SectionSpec(kind, title or old.title, old.order if order is None else int(order), renderer or old.renderer,
                       old.lead if lead is None else lead, headline or old.headline)
    _REGISTRY[kind] = spec
    return spec


def section_spec(kind: str) -> SectionSpec:
    """The registered spec of ``kind``, or the generic one."""
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    return SectionSpec(kind, humanize(kind), UNKNOWN_ORDER, render_generic, "")


def registered_kinds() -> list[str]:
    return sorted(_REGISTRY)


# -- provenance ----------------------------------------------------------------------------------------
def model_of(meta: dict[str, Any]) -> str | None:
    """The model an artefact came from (its own field, or its source's)."""
    for holder in (meta, meta.get("source") or {}, (meta.get("neurons") or {}).get("source") or {}):
        if isinstance(holder, dict) and holder.get("model"):
            return str(holder["model"])
    base = (meta.get("source") or {}).get("base") if isinstance(meta.get("source"), dict) else None
    if isinstance(base, dict) and base.get("path"):  # a parameter set: the base model it was found on
        return str(base["path"])
    return None


SHOWN_KEYS = {"kind", "schema_version", "created", "environment", "tensors_sha256", "model", "revision",
              "model_type", "model_class", "num_parameters", "dtype", "device", "site", "parameters", "title",
              "summary", "tables", "figures", "arrays", "raw", "headline"}


def provenance(artefact: Artefact, extra: list[tuple[str, Any]] | None = None, other_fields: bool = False) -> str:
    """Provenance facts, the parameters as a table and the whole ``meta.json`` (collapsed)."""
    meta = artefact.meta
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}

    def pick(key: str) -> Any:
        return meta.get(key) if meta.get(key) not in (None, "") else source.get(key)

    environment = meta.get("environment") if isinstance(meta.get("environment"), dict) else {}
    checksum = meta.get("tensors_sha256")
    facts: list[tuple[str, Any]] = [
        ("model", model_of(meta)), ("revision", pick("revision")), ("model type", pick("model_type")),
        ("model class", meta.get("model_class")), ("model parameters", meta.get("num_parameters")),
        ("dtype", pick("dtype")), ("device", meta.get("device")), ("neuron site", pick("site")),
        *(extra or []),
    ]
    if other_fields:
        for key, value in meta.items():
            if key in SHOWN_KEYS or key == "source":
                continue
            short_list = isinstance(value, list) and len(value) <= 24 and all(
                isinstance(v, (str, int, float)) for v in value)
            if isinstance(value, (str, int, float, bool)) or short_list:
                facts.append((key.replace("_", " "), value))
    facts += [
        ("created", meta.get("created")),
        ("schema", f"{meta.get('kind')} v{meta.get('schema_version', '?')}"),
        ("software", " · ".join(f"{k} {v}" for k, v in environment.items())),
        ("tensors sha256", f"{checksum[:16]}…" if isinstance(checksum, str) else None),
        ("directory", str(artefact.path)),
    ]
    parts = [key_values(facts)]
    parameters = meta.get("parameters")
    if isinstance(parameters, dict) and parameters:
        parts.append("<h4>Parameters</h4>")
        parts.append(table(["parameter", "value"], [[k, _parameter_value(v)] for k, v in parameters.items()],
                           sortable=False))
    parts.append(details("meta.json", pre(json.dumps(meta, indent=2, ensure_ascii=False, default=str))))
    return "".join(parts)


def _parameter_value(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


# -- generic content -----------------------------------------------------------------------------------
def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV file."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle)]
    if not rows:
        return [], []
    return rows[0], rows[1:]


def csv_table(path: Path, caption: str) -> str:
    """A CSV as a sortable table; a square matrix (columns = row labels) gets a colour scale and its diagonal marked."""
    try:
        header, rows = read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        return warning(f"{caption} cannot be read: {exc}")
    if not header:
        return warning(f"{caption} is empty")
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


def jsonl_table(path: Path, caption: str) -> str:
    """The first records of a JSON-lines file as a table of their scalar fields."""
    records: list[dict[str, Any]] = []
    total = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                total += 1
                if len(records) < MAX_JSONL_RECORDS:
                    value = json.loads(line)
                    records.append(value if isinstance(value, dict) else {"value": value})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return warning(f"{caption} cannot be read: {exc}")
    if not records:
        return warning(f"{caption} is empty")
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    rows = []
    for record in records:
        row = []
        for key in columns:
            value = record.get(key)
            if isinstance(value, (dict, list)):
                value = json.dumps(value, ensure_ascii=False)
            text = "" if value is None else str(value)
            row.append(value if isinstance(value, (int, float)) and not isinstance(value, bool)
                       else Cell(_clip(text), cls="text" if _long(text) else ""))
        rows.append(row)
    note = f"first {len(records)} of {total} records" if total > len(records) else ""
    return table(columns, rows, caption=caption, note=note, row_headers=False)


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


def figures(artefact: Artefact, skip: frozenset[str] = frozenset()) -> str:
    """Every image file of the artefact, embedded (captions from ``meta.json``'s ``figures`` list)."""
    return "".join(image_file(path, caption) for path, name, caption in
                   _ordered(artefact, tuple(IMAGE_TYPES), "figures") if name not in skip)


def image_file(path: Path, caption: str) -> str:
    """One embedded image file, or a warning when it is not a readable image."""
    mime = IMAGE_TYPES.get(path.suffix.lower(), "")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return warning(f"{caption} cannot be read: {exc}")
    if not mime or not data or not looks_like(data, mime):
        return warning(f"{caption} is not a valid {path.suffix} image; not shown")
    return figure(data, mime, caption)


def tables(artefact: Artefact, skip: frozenset[str] = frozenset()) -> str:
    """Every CSV (and JSON-lines) file of the artefact as a table (captions from ``meta.json``'s ``tables``)."""
    parts = []
    for path, name, caption in _ordered(artefact, (".csv", ".jsonl"), ("tables", "raw")):
        if name not in skip:
            parts.append(csv_table(path, caption) if path.suffix.lower() == ".csv" else jsonl_table(path, caption))
    return "".join(parts)


def summary_block(meta: dict[str, Any]) -> str:
    """``meta.json``'s ``title`` and ``summary`` (headline numbers), when it has them."""
    parts = []
    if isinstance(meta.get("title"), str) and meta["title"]:
        parts.append(f'<p class="card-title">{esc(meta["title"])}</p>')
    if isinstance(meta.get("summary"), dict) and meta["summary"]:
        parts.append('<div class="headline">' + key_values(list(meta["summary"].items())) + "</div>")
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
    return table(["array", "title", "dtype", "shape", "rows", "columns"], rows, caption="arrays", sortable=False)


def render_generic(artefact: Artefact) -> str:
    """Any kind: title and summary, figures, tables, arrays, then provenance and parameters."""
    content = figures(artefact) + tables(artefact) + arrays_table(artefact.meta)
    if not content:
        content = '<p class="note">No CSV or figure in this directory.</p>'
    return (summary_block(artefact.meta) + content + "<h4>Provenance</h4>"
            + provenance(artefact, other_fields=True))


# -- layout --------------------------------------------------------------------------------------------
def card(artefact: Artefact, spec: SectionSpec) -> str:
    """One artefact's card; a renderer that fails falls back to the generic one with a warning."""
    try:
        body = spec.renderer(artefact)
    except Exception as exc:  # noqa: BLE001 - one bad artefact must not lose the whole report
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        body = warning(f"could not render this {artefact.kind}: {message}") + render_generic(artefact)
    created = artefact.meta.get("created")
    stamp = f'<p class="sub">{esc(created)}</p>' if created else '<p class="sub"></p>'
    return (f'<article class="card" id="{esc(artefact.anchor)}"><h3><code>{esc(artefact.relative)}</code>'
            f'<span class="badge">{esc(artefact.kind)}</span></h3>{stamp}{body}</article>')


def section(section_id: str, title: str, lead: str, columns: list[tuple[Run, list[str]]], intro: str = "") -> str:
    """A section: one column of cards per run (a single column without run labels for one run); ``intro`` is
    HTML shown above the columns."""
    several = len(columns) > 1
    parts = [f'<section class="report-section" id="{esc(section_id)}"><h2>{esc(title)}</h2>']
    if lead:
        parts.append(f'<p class="lead">{esc(lead)}</p>')
    parts.append(intro)
    parts.append(f'<div class="runs" style="--runs:{len(columns)}">')
    for run, cards in columns:
        parts.append('<div class="run-column">')
        if several:
            parts.append(f'<p class="run-label">{esc(run.label)}</p>')
        parts.extend(cards or ['<article class="card empty">not in this run</article>'])
        parts.append("</div>")
    parts.append("</div></section>")
    return "".join(parts)


def kind_sections(runs: list[Run]) -> list[tuple[str, str, int, str]]:
    """``(section id, title, artefact count, html)`` for every kind present, in section order."""
    kinds = {a.kind for run in runs for a in run.artefacts}
    specs = sorted((section_spec(kind) for kind in kinds), key=lambda s: (s.order, s.title))
    result = []
    for spec in specs:
        columns = [(run, [card(a, spec) for a in run.of_kind(spec.kind)]) for run in runs]
        count = sum(len(cards) for _, cards in columns)
        section_id = f"s-{spec.kind}"
        result.append((section_id, spec.title, count, section(section_id, spec.title, spec.lead, columns)))
    return result


