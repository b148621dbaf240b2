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


def details(summary: str, body_html: str, open_: bool = False) -> str:
    """A collapsible block (printed expanded)."""
    return f'<details{" open" if open_ else ""}><summary>{esc(summary)}</summary>{body_html}</details>'


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


def warning(text: str) -> str:
    return f'<p class="warning" role="note">{esc(text)}</p>'


# -- page ----------------------------------------------------------------------------------------
CSS = """
:root{--bg:#f4f6f9;--card:#fff;--ink:#1f2933;--muted:#5f6b7a;--line:#dfe3e8;--accent:#1d4e89;--head:#14213d;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--ink);line-height:1.45;font-size:15px;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,"Noto Sans","Liberation Sans",sans-serif}
header.top{background:var(--head);color:#fff;padding:22px 32px 18px}
header.top h1{margin:0 0 4px;font-size:24px;font-weight:650;letter-spacing:.2px}
header.top .models{font-size:16px;color:#dbe4f0;margin:0 0 8px;word-break:break-all}
header.top .stamp{font-size:13px;color:#aab8cc;margin:0}
header.top .stamp span+span::before{content:"\\00b7";margin:0 8px;color:#6b7c93}
.layout{display:grid;grid-template-columns:210px minmax(0,1fr);gap:24px;padding:20px 32px 40px;
max-width:1500px;margin:0 auto}
.layout.wide{max-width:none}
nav.toc{position:sticky;top:16px;align-self:start;font-size:14px}
nav.toc h2{font-size:12px;text-transform:uppercase;letter-spacing:.08em;color:var(--muted);margin:4px 0 8px}
nav.toc ol{list-style:none;margin:0;padding:0}
nav.toc li{margin:0 0 2px}
nav.toc a{display:flex;justify-content:space-between;gap:8px;padding:5px 10px;border-radius:6px;color:var(--ink);
text-decoration:none}
nav.toc a:hover,nav.toc a:focus{background:#e4eaf2}
nav.toc .count{color:var(--muted);font-variant-numeric:tabular-nums}
main{min-width:0}
section.report-section{margin:0 0 28px;scroll-margin-top:12px}
section.report-section>h2{font-size:20px;margin:0 0 4px;color:var(--head)}
section.report-section>p.lead{margin:0 0 12px;color:var(--muted);font-size:14px}
.runs{display:grid;gap:16px;grid-template-columns:repeat(var(--runs,1),minmax(0,1fr))}
.run-column{min-width:0;display:flex;flex-direction:column;gap:16px}
.run-label{font-size:13px;font-weight:600;color:var(--accent);margin:0 0 -8px;word-break:break-all}
article.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;
box-shadow:0 1px 2px rgba(20,33,61,.05);min-width:0;scroll-margin-top:12px}
article.card.empty{background:transparent;border-style:dashed;box-shadow:none;color:var(--muted);font-size:14px}
article.card>h3{margin:0 0 2px;font-size:16px;display:flex;flex-wrap:wrap;gap:8px;align-items:baseline}
article.card>h3 code{font-size:15px}
.badge{display:inline-block;font-size:11px;font-weight:600;letter-spacing:.04em;text-transform:uppercase;
background:#e6eef8;color:var(--accent);border-radius:99px;padding:2px 8px}
.sub{color:var(--muted);font-size:13px;margin:0 0 12px}
p.card-title{font-size:15px;font-weight:600;margin:0 0 8px}
.headline dl.facts{margin:0}
h4{font-size:14px;margin:16px 0 6px;color:var(--head)}
dl.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:3px 24px;margin:8px 0 4px;
font-size:13.5px}
dl.facts>div{display:grid;grid-template-columns:128px minmax(0,1fr);gap:12px}
dl.facts dt{color:var(--muted)}
dl.facts dd{margin:0;word-break:break-word}
.headline{background:#f0f5fb;border-left:4px solid var(--accent);padding:8px 12px;border-radius:4px;font-size:14px;
margin:8px 0 12px}
.table-wrap{overflow-x:auto;margin:6px 0 10px;max-width:100%}
table.data{border-collapse:collapse;font-size:13px;font-variant-numeric:tabular-nums;min-width:40%}
p.table-caption{font-size:13px;color:var(--muted);margin:12px 0 2px;word-break:break-word}
table.data th,table.data td{border:1px solid var(--line);padding:4px 9px;text-align:left;white-space:nowrap}
table.data td.num{text-align:right}
table.data td.text{white-space:pre-wrap;min-width:16em;max-width:40em}
table.data thead th{background:#eef2f7;font-weight:600;position:relative}
table.data tbody th,table.data tfoot th{background:#f7f9fb;font-weight:600}
table.data tfoot td,table.data tfoot th{color:var(--muted);font-style:italic}
table.sortable thead th{cursor:pointer;user-select:none;padding-right:20px}
table.sortable thead th::after{content:"\\2195";position:absolute;right:6px;color:#a0aab8;font-size:11px}
table.sortable thead th[aria-sort=ascending]::after{content:"\\25B2";color:var(--accent)}
table.sortable thead th[aria-sort=descending]::after{content:"\\25BC";color:var(--accent)}
td.diag{box-shadow:inset 0 0 0 2px #111;font-weight:700}
td small{display:block;font-size:11px;opacity:.9;font-weight:400}
code,pre{font-family:var(--mono);font-size:12.5px}
code{background:#f1f3f6;border-radius:4px;padding:1px 4px}
pre{background:#f7f8fa;border:1px solid var(--line);border-radius:6px;padding:10px;overflow:auto;max-height:420px;
margin:6px 0}
details{margin:10px 0 0}
details>summary{cursor:pointer;color:var(--accent);font-size:13.5px;font-weight:600}
figure{margin:10px 0 6px;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:6px;background:#fff}
figure img{cursor:zoom-in}
figure.zoomed{position:fixed;inset:0;z-index:10;margin:0;background:rgba(255,255,255,.97);display:flex;
flex-direction:column;align-items:center;justify-content:center}
figure.zoomed img{max-width:96vw;max-height:90vh;cursor:zoom-out}
figcaption{font-size:12.5px;color:var(--muted);margin-top:4px}
p.note{font-size:12.5px;color:var(--muted);margin:2px 0 8px}
p.warning{background:#fff6e5;border:1px solid #f0c36d;border-radius:6px;padding:6px 10px;font-size:13.5px}
ul.artefacts{list-style:none;padding:0;margin:6px 0;font-size:13.5px}
ul.artefacts li{padding:3px 0;border-bottom:1px solid #eef0f3}
ul.artefacts a{color:var(--accent)}
.findings{background:#f0f5fb;border-left:4px solid var(--accent);padding:6px 14px;border-radius:4px;margin:8px 0 14px}
.findings h3{margin:4px 0;font-size:15px}.findings ul{margin:4px 0;padding-left:18px;font-size:14px}
.findings li{margin:3px 0}.findings a{color:var(--accent);font-weight:600}.findings .badge{margin:0 6px}
.legend{display:inline-flex;align-items:center;gap:6px;font-size:12px;color:var(--muted)}
.legend i{display:inline-block;width:90px;height:10px;border-radius:2px;border:1px solid var(--line)}
footer.bottom{color:var(--muted);font-size:12.5px;padding:0 32px 28px;text-align:center}
@media (max-width:900px){.layout{grid-template-columns:1fr;padding:16px}nav.toc{position:static}
.runs{grid-template-columns:1fr}}
@media print{body{background:#fff;font-size:11pt}
header.top{background:#fff;color:#000;border-bottom:2px solid #000;padding:0 0 8px}
header.top .models,header.top .stamp{color:#333}.layout{display:block;padding:0;max-width:none}nav.toc{display:none}
article.card{box-shadow:none;break-inside:avoid;page-break-inside:avoid}figure img{max-height:24cm}
section.report-section{break-before:auto}
pre{max-height:none;white-space:pre-wrap}
table.data td,table.data th{-webkit-print-color-adjust:exact;print-color-adjust:exact}
table.sortable thead th::after{content:""}}
"""

# Installed first, in <head>: counts script errors, failed resources and console.error calls on <html>
# (``data-js-errors``, ``data-js-messages``), so a headless browser's ``--dump-dom`` can read them back.
ERROR_PROBE_JS = """
(function () {
  var root = document.documentElement, count = 0;
  function note(message) {
    count += 1;
    root.setAttribute('data-js-errors', String(count));
    var previous = root.getAttribute('data-js-messages') || '';
    root.setAttribute('data-js-messages', (previous ? previous + ' | ' : '') + String(message).slice(0, 300));
  }
  window.addEventListener('error', function (event) {
    var target = event.target;
    note(target && target !== window && target.tagName ? 'failed to load ' + target.tagName
                                                       : (event.message || 'error'));
  }, true);
  window.addEventListener('unhandledrejection', function (event) { note('unhandled rejection: ' + event.reason); });
  if (window.console && console.error) {
    var original = console.error;
    console.error = function () {
      note(Array.prototype.join.call(arguments, ' '));
      return original.apply(console, arguments);
    };
  }
})();
"""

# At the end of <body>: sortable tables (click or Enter on a header; numbers sort numerically by their
# ``data-sort`` value, ties keep their order), click-to-zoom figures (Escape closes) and the figure
# self-check (``data-images-ok`` on <body>).
PAGE_JS = """
(function () {
  function sortKey(cell) {
    var text = cell.getAttribute('data-sort');
    if (text === null) text = cell.textContent.trim();
    var number = parseFloat(text);
    return /^[-+]?(\\d|\\.\\d)/.test(text) && isFinite(number) ? {n: number} : {s: text.toLowerCase()};
  }
  function compare(a, b) {
    if ('n' in a && 'n' in b) return a.n - b.n;
    if ('n' in a) return -1;
    if ('n' in b) return 1;
    return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  }
  function sortBy(th) {
    var body = th.closest('table').tBodies[0], column = th.cellIndex;
    var direction = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', direction);
    var rows = Array.prototype.map.call(body.rows, function (row, index) {
      return {row: row, key: sortKey(row.cells[column]), index: index};
    });
    rows.sort(function (a, b) {
      var order = compare(a.key, b.key);
      return (direction === 'ascending' ? order : -order) || a.index - b.index;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable thead th'), function (th) {
    th.tabIndex = 0;
    th.addEventListener('click', function () { sortBy(th); });
    th.addEventListener('keydown', function (event) {
      if (event.key === 'Enter' || event.key === ' ') { event.preventDefault(); sortBy(th); }
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll('figure img'), function (image) {
    image.addEventListener('click', function () { image.parentNode.classList.toggle('zoomed'); });
  });
  document.addEventListener('keydown', function (event) {
    if (event.key !== 'Escape') return;
    Array.prototype.forEach.call(document.querySelectorAll('figure.zoomed'), function (f) {
      f.classList.remove('zoomed');
    });
  });
  function checkImages() {
    var images = Array.prototype.slice.call(document.images);
    var ok = images.every(function (image) { return image.complete && image.naturalWidth > 0; });
    document.body.setAttribute('data-images', String(images.length));
    document.body.setAttribute('data-images-ok', ok ? 'true' : 'false');
  }
  if (document.readyState === 'complete') checkImages(); else window.addEventListener('load', checkImages);
})();
"""


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
