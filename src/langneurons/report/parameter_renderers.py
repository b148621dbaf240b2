"""Report cards of parameter variation (PV): the parameter set, and labels of parameter-zeroing matrices."""

from __future__ import annotations

from typing import Any

from langneurons.report.discover import Artefact
from langneurons.report.html import Cell, key_values, sequential_style, table
from langneurons.report.sections import collapsed_table, figures, provenance, tables


def counts_table(languages: list[str], rows: list[dict[Any, int]], sizes: dict[str, int], column_name: str,
                 caption: str) -> str:
    """Languages x groups: each language's entries as a share of its own set (counts in the tooltip)."""
    columns = sorted({key for row in rows for key in row}, key=lambda k: (isinstance(k, str), k))
    body = []
    for lang, row in zip(languages, rows):
        size = sizes[lang] or 1
        cells = [Cell(f"{row.get(key, 0) / size:.0%}", sort=row.get(key, 0), cls="num",
                      style=sequential_style(row.get(key, 0) / size, 1.0), title=f"{row.get(key, 0):,} entries")
                 for key in columns]
        body.append([lang, *cells, sizes[lang]])
    return table(["language", *(f"{column_name} {key}" if isinstance(key, int) else str(key) for key in columns),
                  "entries"], body, caption=caption)


def render_parameter_set(artefact: Artefact) -> str:
    from langneurons.sets.parameterset import load_parameters

    pset = load_parameters(artefact.path)
    sizes = pset.sizes()
    grouped = [pset.grouped_counts(lang) for lang in pset.languages]
    selected = pset.parameters.get("selected_before_assignment") if isinstance(pset.parameters, dict) else None
    size_rows = [[lang, n, Cell(f"{n / pset.total:.3%}", sort=n / pset.total, cls="num")] for lang, n in sizes.items()]
    source = pset.source if isinstance(pset.source, dict) else {}

    def where(info: Any) -> Any:
        return info.get("path", info.get("name")) if isinstance(info, dict) else info

    finetuned = {lang: where(info) for lang, info in (source.get("finetuned") or {}).items()}
    parts = [
        key_values([("method", pset.method), ("considered weight matrices", len(pset.shapes)),
                    ("considered entries", f"{pset.total:,}"), ("selected before assignment", selected),
                    ("languages", pset.languages), ("base model", where(source.get("base"))),
                    ("fine-tuned models", finetuned or None)]),
        figures(artefact),
        collapsed_table("entries per language", table(["language", "entries", "share of considered"], size_rows),
                        len(size_rows)),
        collapsed_table("share of each language's entries per layer",
                        counts_table(pset.languages, [g[0] for g in grouped], sizes, "layer", ""), len(grouped)),
        collapsed_table("share of each language's entries per weight matrix",
                        counts_table(pset.languages, [g[1] for g in grouped], sizes, "", ""), len(grouped)),
        tables(artefact),
        provenance(artefact),
    ]
    return "".join(parts)
