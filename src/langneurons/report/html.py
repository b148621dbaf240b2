"""HTML building blocks of the report: escaping, tables, images, colour scales and the page template.

Everything here returns strings of HTML. All text goes through :func:`esc`; images are embedded as
``data:`` URIs; the page carries its own CSS and a few lines of inline JavaScript (sortable tables,
a self-check that every figure decoded and that no script error happened), and fetches nothing.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from langneurons.report.style import CSS, ERROR_PROBE_JS, PAGE_JS

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml", ".webp": "image/webp"}

_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8", "image/gif": b"GIF8"}


def esc(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape("" if value is None else str(value), quote=True)


def slug(text: str) -> str:
    """An id-safe slug: ``"run 1/lape.neurons"`` -> ``"run-1-lape-neurons"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def format_number(value: Any) -> str:
    """Integers as integers (thousands separated), floats with four significant digits."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return f"{int(value):,}"
        magnitude = abs(value)
        if magnitude >= 1e5 or magnitude < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4g}" if magnitude < 1 else f"{value:,.{max(0, 3 - int(math.log10(magnitude)))}f}"
    return str(value)


def parse_number(text: str) -> float | None:
    """The float a CSV cell holds, or ``None`` for text."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value


# -- colour scales -------------------------------------------------------------------------------
_WHITE = (255, 255, 255)
_RED = (178, 24, 43)      # RdBu end points, as the matplotlib figures
_BLUE = (33, 102, 172)
_TEAL = (8, 81, 156)


def _mix(end: tuple[int, int, int], weight: float) -> tuple[int, int, int]:
    weight = min(1.0, max(0.0, weight))
    return tuple(round(w + (e - w) * weight) for w, e in zip(_WHITE, end))  # type: ignore[return-value]


def _style(rgb: tuple[int, int, int], weight: float) -> str:
    text = "#fff" if weight > 0.55 else "#1f2933"
    return f"background:rgb({rgb[0]},{rgb[1]},{rgb[2]});color:{text}"


def diverging_style(value: float, limit: float) -> str:
    """Background for ``value`` on a blue (negative) - white - red (positive) scale of ``[-limit, limit]``."""
    if not math.isfinite(value) or limit <= 0:
        return ""
    weight = abs(value) / limit
    return _style(_mix(_RED if value > 0 else _BLUE, weight), weight)


def sequential_style(value: float, maximum: float) -> str:
    """Background for ``value`` on a white - blue scale of ``[0, maximum]``."""
    if not math.isfinite(value) or maximum <= 0:
        return ""
    weight = max(0.0, value) / maximum
    return _style(_mix(_TEAL, weight), weight)


# -- tables ----------------------------------------------------------------------------------------
@dataclass
class Cell:
    """A table cell: display text, optional sort key, inline style, CSS class and tooltip."""

    text: str
    sort: float | str | None = None
    style: str = ""
    cls: str = ""
    title: str = ""
    raw_html: bool = False


def cell(value: Any, **kwargs: Any) -> Cell:
    """A cell for a value: numbers right-aligned with a numeric sort key, everything else as text."""
    if isinstance(value, Cell):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Cell(format_number(value), sort=float(value), cls=("num " + kwargs.pop("cls", "")).strip(), **kwargs)
    return Cell("" if value is None else str(value), **kwargs)


def _td(item: Cell, tag: str = "td") -> str:
    attributes = []
    if item.cls:
        attributes.append(f'class="{esc(item.cls)}"')
    if item.style:
        attributes.append(f'style="{esc(item.style)}"')
    if item.title:
        attributes.append(f'title="{esc(item.title)}"')
    if item.sort is not None:
        attributes.append(f'data-sort="{esc(item.sort)}"')
    body = item.text if item.raw_html else esc(item.text)
    return f"<{tag}{' ' if attributes else ''}{' '.join(attributes)}>{body}</{tag}>"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sortable: bool = True, caption: str = "",
          footer: Sequence[Sequence[Any]] = (), cls: str = "", row_headers: bool = True, note: str = "") -> str:
    """A ``<table>``; with ``row_headers`` the first column is a ``<th scope=row>``. Sortable by header click."""
    classes = " ".join(c for c in ("data", "sortable" if sortable else "", cls) if c)
    head = "".join(f'<th scope="col">{esc(c)}</th>' for c in columns)
    parts = [f'<p class="table-caption">{esc(caption)}</p>' if caption else ""]
    parts.append(f'<div class="table-wrap"><table class="{classes}">')
    parts.append(f"<thead><tr>{head}</tr></thead><tbody>")
    for row in rows:
        cells = [cell(v) for v in row]
        first = _td(cells[0], "th").replace("<th", '<th scope="row"', 1) if row_headers and cells else ""
        rest = cells[1:] if row_headers else cells
        parts.append("<tr>" + first + "".join(_td(c) for c in rest) + "</tr>")
    parts.append("</tbody>")
    if footer:
        parts.append("<tfoot>")
        for row in footer:
            cells = [cell(v) for v in row]
            parts.append("<tr>" + _td(cells[0], "th") + "".join(_td(c) for c in cells[1:]) + "</tr>")
        parts.append("</tfoot>")
    parts.append("</table></div>")
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    return "".join(parts)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """A compact definition list of ``(label, value)``; ``None`` and empty values are left out."""
    items = []
    for label, value in pairs:
        if value is None or value == "" or value == {} or value == []:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(_short(v) for v in value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            value = format_number(value)
        items.append(f"<div><dt>{esc(label)}</dt><dd>{esc(value)}</dd></div>")
    return f'<dl class="facts">{"".join(items)}</dl>' if items else ""


def _short(value: Any) -> str:
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def details(summary: str, body_html: str, open_: bool = False, cls: str = "") -> str:
    """A collapsible block (opened for printing)."""
    attributes = (f' class="{esc(cls)}"' if cls else "") + (" open" if open_ else "")
    return f"<details{attributes}><summary>{esc(summary)}</summary>{body_html}</details>"


def figure_grid(figures_html: Iterable[str], shown: int | None = None) -> str:
    """Figures side by side where the page is wide enough (one per row on a narrow page); with ``shown``, the
    first ``shown`` figures are in view and the rest behind one "more figures" details element."""
    items = [item for item in figures_html if item]
    if not items:
        return ""
    if shown is not None and len(items) > shown:
        rest = items[shown:]
        more = details(f"{len(rest)} more figure{'s' if len(rest) > 1 else ''}", figure_grid(rest), cls="figures-more")
        return (figure_grid(items[:shown]) if shown > 0 else "") + more
    return f'<div class="figures{" single" if len(items) == 1 else ""}">{"".join(items)}</div>'


def same_as(what: str, where: tuple[str, str]) -> str:
    """A note pointing to where ``what`` is already shown (``where`` = (anchor, label))."""
    anchor, label = where
    if not anchor:
        return f'<p class="note">{esc(what)}: shown above.</p>'
    return f'<p class="note">{esc(what)}: the same as in <a href="#{esc(anchor)}">{esc(label or "above")}</a>.</p>'


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


# -- images ----------------------------------------------------------------------------------------
def data_uri(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,...`` for embedding."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def looks_like(data: bytes, mime: str) -> bool:
    """Whether ``data`` starts with the signature of ``mime`` (SVG and WebP are checked loosely)."""
    if mime in _MAGIC:
        return data.startswith(_MAGIC[mime])
    if mime == "image/webp":
        return data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    return b"<svg" in data[:4096]


def figure(data: bytes, mime: str, caption: str, alt: str | None = None) -> str:
    """An embedded image with a caption."""
    return (f'<figure><img src="{data_uri(data, mime)}" alt="{esc(alt or caption)}" loading="eager">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def warning(text: str, problem: bool = True) -> str:
    """A warning on the page; a ``problem`` is also printed on the console by ``langneurons report``."""
    if problem:
        from langneurons.report.context import note_problem

        note_problem(text)
    return f'<p class="warning" role="note">{esc(text)}</p>'


# -- page ----------------------------------------------------------------------------------------
def page(title: str, header_html: str, toc_html: str, body_html: str, footer_html: str, wide: bool) -> str:
    """The whole HTML5 document."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en" data-js-errors="0">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="langneurons report">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n<script>{ERROR_PROBE_JS}</script>\n</head>\n"
        f"<body>\n{header_html}\n"
        f'<div class="layout{" wide" if wide else ""}">\n{toc_html}\n<main>\n{body_html}\n</main>\n</div>\n'
        f"{footer_html}\n<script>{PAGE_JS}</script>\n</body>\n</html>\n"
    )
