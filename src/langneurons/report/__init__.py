"""One self-contained HTML report of whatever artefacts one or more run directories hold.

``build_report(["runs/x"], "runs/x/report.html")`` walks each run directory (depth <= 2) for artefact
folders (a ``meta.json`` with a ``"kind"``), renders each in the section registered for its kind
(:func:`register_section`; unknown kinds get a generic card with their tables, figures and summary) and writes
one HTML file: the findings of every artefact first, figures embedded as data URIs, no network fetches,
sortable tables, provenance on every card. With several runs (several models, as the LAPE paper's Figure 3)
each section shows one column per run.

Sections come from the registry only: the core artefacts register theirs in :mod:`.renderers`, every other
kind in the module that defines it; :data:`SECTION_MODULES` are imported here so that their registrations
are in place (a new module that defines a kind and is not imported by one of them adds itself to the list).
"""

from __future__ import annotations

import datetime as _dt
import importlib
import warnings
from pathlib import Path

from langneurons._version import __version__
from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.report.context import render_scope
from langneurons.report.discover import Artefact, Run, discover_run, discover_runs
from langneurons.report.html import esc, page
from langneurons.report.sections import (SectionSpec, card, register_section, registered_kinds, render_generic,
                                         section, section_spec, kind_sections)
from langneurons.report.findings import findings, findings_block
from langneurons.report.renderers import register_builtin_sections, render_overview, run_summary

#: modules whose import registers report sections (besides the core ones of ``renderers``)
SECTION_MODULES = ["langneurons.analysis"]

register_builtin_sections()
for _module in SECTION_MODULES:
    importlib.import_module(_module)

__all__ = ["Artefact", "Run", "SECTION_MODULES", "SectionSpec", "build_report", "card", "discover_run",
           "discover_runs", "findings", "is_report", "register_section", "registered_kinds", "render_generic",
           "render_html", "section_spec"]

GENERATOR = '<meta name="generator" content="langneurons report">'


def is_report(path: str | Path) -> bool:
    """Whether ``path`` is an HTML file this package wrote (a report may be replaced without ``force``)."""
    try:
        with open(path, "rb") as handle:
            return GENERATOR.encode() in handle.read(4096)
    except OSError:
        return False


def render_html(runs: list[Run], title: str | None = None, problems: list[str] | None = None) -> str:
    """The report page for discovered ``runs``; the problems it notes on the page are appended to ``problems``."""
    with render_scope() as scope:
        text = _render_html(runs, title)
    if problems is not None:
        problems.extend(scope.problems)
    return text


def _render_html(runs: list[Run], title: str | None = None) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summaries = [run_summary(run) for run in runs]
    models = [m for s in summaries for m in s["models"]]
    models = list(dict.fromkeys(models))
    title = title or "langneurons report"
    overview_id = "s-overview"
    overview = section(overview_id, "Overview", "The findings of every artefact, then the run directories and what "
                       "each holds.",
                       [(run, [f'<article class="card" id="run-{run.index}"><h3><code>{esc(run.label)}</code>'
                               f'<span class="badge">run</span></h3>{render_overview(run)}</article>'])
                        for run in runs], intro=findings_block(runs))
    sections = [(overview_id, "Overview", len(runs), overview), *kind_sections(runs)]
    toc_items = "".join(f'<li><a href="#{esc(sid)}"><span>{esc(name)}</span><span class="count">{count}</span></a></li>'
                        for sid, name, count, _ in sections)
    toc = f'<nav class="toc" aria-label="Contents"><h2>Contents</h2><ol>{toc_items}</ol></nav>'
    model_line = ("model: " if len(models) == 1 else "models: ") + " · ".join(models) if models else "model: unknown"
    stamp = [f"generated {now}", f"langneurons {__version__}",
             f"{len(runs)} run{'s' if len(runs) != 1 else ''}",
             f"{sum(len(r.artefacts) for r in runs)} artefacts"]
    header = (f'<header class="top"><h1>{esc(title)}</h1><p class="models">{esc(model_line)}</p>'
              f'<p class="stamp">{"".join(f"<span>{esc(s)}</span>" for s in stamp)}</p></header>')
    footer = (f'<footer class="bottom">Written by langneurons {esc(__version__)} from '
              f'{esc(", ".join(str(r.path) for r in runs))}. Self-contained: figures are embedded and nothing is '
              f"fetched.</footer>")
    body = "\n".join(html for *_, html in sections)
    return page(f"{title} · {', '.join(models) or 'langneurons'}", header, toc, body, footer, wide=len(runs) > 1)


def build_report(run_dirs: str | Path | list[str | Path], out: str | Path | None = None,
                 title: str | None = None, force: bool = False) -> Path:
    """Write the HTML report of ``run_dirs`` to ``out`` (default: ``<first run dir>/report.html``), atomically.

    An existing report there is replaced; any other existing file only with ``force``. Each problem the page notes
    (an unreadable ``meta.json``, a card that could not be rendered, a broken figure) is also a
    :class:`~langneurons.errors.LangNeuronsWarning` (one console line each in ``langneurons report``).
    """
    from langneurons.sets.artefacts import write_file_atomically

    paths = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    runs = discover_runs(paths)
    target = Path(out) if out is not None else runs[0].path / "report.html"
    if target.is_dir():
        raise LangNeuronsError(f"--out {str(target)!r} is a directory; give a file name such as report.html")
    if target.exists() and not force and not is_report(target):
        raise LangNeuronsError(f"{str(target)!r} exists and is not a langneurons report; refusing to replace it "
                               "(give force=True, or --force)")
    problems: list[str] = []
    text = render_html(runs, title, problems)
    try:
        write_file_atomically(target, lambda partial: partial.write_text(text, encoding="utf-8"))
    except OSError as exc:
        raise LangNeuronsError(f"cannot write {str(target)!r}: {exc.strerror or exc}") from None
    for problem in problems:  # the console says what the page notes (one line each)
        warnings.warn(f"{target.name}: {problem}", LangNeuronsWarning, stacklevel=2)
    return target
