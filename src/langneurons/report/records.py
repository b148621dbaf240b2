"""Raw records (``*.jsonl``) in the report: behind a details element, showing the most telling few.

For generation records (``generations.jsonl`` of ``steer`` and ``generate``) the telling ones are the steered
outputs whose detected language changed towards the target: the output of a prompt under an activated
condition is in the activated language while the same prompt's normal output is not. Without normal outputs
(``generate`` without ``--also-normal``) they are the edited outputs whose language differs from the prompt's.
Other records show their first few. The whole file stays next to the report (its path is given).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langneurons.report.html import Cell, details, esc, table, warning

SHOWN_RECORDS = 8
MAX_TEXT = 240


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (non-objects wrapped as ``{"value": ...}``)."""
    records = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                value = json.loads(line)
                records.append(value if isinstance(value, dict) else {"value": value})
    return records


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    text = "" if text is None else str(text)
    if not text.strip():
        return "(empty)"
    return text if len(text) <= limit else text[:limit] + "…"


def _key(record: dict[str, Any]) -> tuple:
    return (record.get("language"), record.get("index"))


def is_generation(record: dict[str, Any]) -> bool:
    return {"condition", "output", "detected_language"} <= set(record)


def telling_generations(records: list[dict[str, Any]], limit: int = SHOWN_RECORDS
                        ) -> tuple[list[tuple[dict[str, Any], dict[str, Any] | None]], int, str]:
    """``([(steered, normal or None)], how many are telling, what they are)`` for generation records."""
    normal = {_key(r): r for r in records if r.get("condition") == "normal"}
    edited = [r for r in records if r.get("condition") != "normal"]
    if normal:
        found = []
        for record in edited:
            targets = record.get("activate") or []
            before = normal.get(_key(record))
            if before is None or not targets:
                continue
            if record.get("detected_language") in targets and before.get("detected_language") not in targets:
                found.append((record, before))
        what = "steered outputs whose detected language changed to the activated language"
    else:
        found = [(r, None) for r in edited if r.get("language") and r.get("detected_language") != r.get("language")]
        what = "edited outputs whose detected language differs from the prompt's"
    return found[:limit], len(found), what


def generation_table(pairs: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> str:
    """Prompt, the normal output and the steered one, each with its detected language."""
    with_normal = any(normal is not None for _, normal in pairs)
    columns = ["condition", "prompt", *(["normal output"] if with_normal else []), "output"]
    rows = []
    for record, normal in pairs:
        row: list[Any] = [record.get("condition", ""),
                          Cell(_clip(record.get("prompt") or "(unconditional)", 120), cls="text")]
        if with_normal:
            row.append(Cell(f"[{normal.get('detected_language') or '?'}] {_clip(normal.get('output'))}" if normal
                            else "", cls="text"))
        row.append(Cell(f"[{record.get('detected_language') or '?'}] {_clip(record.get('output'))}", cls="text"))
        rows.append(row)
    return table(columns, rows, sortable=False, cls="records")


def plain_table(records: list[dict[str, Any]]) -> str:
    """Records as a table of their fields (nested values as JSON, long text clipped)."""
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
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row.append(value)
            else:
                text = _clip(value)
                row.append(Cell(text, cls="text" if len(text) > 40 else ""))
        rows.append(row)
    return table(columns, rows, row_headers=False, sortable=False, cls="records")


def records_block(path: Path, caption: str, relative: str = "") -> str:
    """A details element with the most telling few records of ``path`` and where the whole file is."""
    try:
        records = read_jsonl(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return warning(f"{caption} cannot be read: {str(exc).splitlines()[0]}")
    if not records:
        return warning(f"{caption} is empty")
    where = f'<p class="note">All {len(records):,} records: <code>{esc(relative or path.name)}</code>.</p>'
    if all(is_generation(r) for r in records):
        pairs, count, what = telling_generations(records)
        if pairs:
            summary = f"Generations ({path.name}): {len(pairs)} of the {count:,} {what} (of {len(records):,} records)"
            return details(summary, generation_table(pairs) + where, cls="records")
        first = [(r, None) for r in records if r.get("condition") != "normal"][:SHOWN_RECORDS] or \
            [(r, None) for r in records[:SHOWN_RECORDS]]
        summary = f"Generations ({path.name}): no {what.split(' whose')[0]} changed language; the first " \
                  f"{len(first)} of {len(records):,} records"
        return details(summary, generation_table(first) + where, cls="records")
    shown = records[:SHOWN_RECORDS]
    return details(f"{caption}: the first {len(shown)} of {len(records):,} records", plain_table(shown) + where,
                   cls="records")
