"""Report sections: the registry from artefact kind to section, the generic renderer, and section layout.

Every kind registers its section where the kind is defined (:func:`register_section`: title, order, lead,
card renderer, headline); this registry is the one source of what the report shows. A renderer takes one
:class:`~langneurons.report.discover.Artefact` and returns the HTML body of its card (the card frame, title and
anchor are added here). Kinds without a registration get :func:`render_generic`: the summary of their
``meta.json``, every figure embedded (:mod:`.content`), every CSV as a table behind its caption, JSON-lines
records behind a details element, arrays listed, then provenance (:mod:`.provenance`), all collapsed.
Sections appear in ``order`` (overview first, then statistics 10, perplexity 20, neuron sets 30, analyses
40-65, unknown kinds 70, generation 80-85); with several runs each section has one column per run. Each
artefact's ``headline`` (one sentence) opens the report in the findings list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from langneurons.errors import LangNeuronsError
from langneurons.report.content import (MAX_CELL_CHARS, MAX_TABLE_ROWS, arrays_table, collapsed_table,
                                        csv_table, described_files, figures, humanize, image_file, read_csv,
                                        summary_block, tables)
from langneurons.report.context import in_card
from langneurons.report.discover import Artefact, Run
from langneurons.report.html import esc, warning
from langneurons.report.provenance import (HIDDEN_STATE_SITES, SHOWN_KEYS, corpus_block, model_of, provenance,
                                           site_fact)

__all__ = ["HIDDEN_STATE_SITES", "MAX_CELL_CHARS", "MAX_TABLE_ROWS", "SHOWN_KEYS", "SectionSpec", "arrays_table",
           "card", "collapsed_table", "corpus_block", "csv_table", "described_files", "figures", "humanize",
           "image_file", "kind_sections", "meta_headline", "model_of", "provenance", "read_csv", "register_section",
           "registered_kinds", "render_generic", "section", "section_spec", "site_fact", "summary_block", "tables"]

Renderer = Callable[[Artefact], str]
Headline = Callable[[Artefact], "str | None"]

UNKNOWN_ORDER = 70


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


def render_generic(artefact: Artefact) -> str:
    """Any kind: title and summary, figures, tables, arrays, then provenance and parameters."""
    content = figures(artefact) + tables(artefact) + arrays_table(artefact.meta)
    if not content:
        content = '<p class="note">No CSV or figure in this directory.</p>'
    return summary_block(artefact.meta) + content + provenance(artefact, other_fields=True)


# -- layout --------------------------------------------------------------------------------------------
def card(artefact: Artefact, spec: SectionSpec) -> str:
    """One artefact's card; a renderer that fails falls back to the generic one with a warning."""
    with in_card(artefact.anchor, f"{artefact.run.label}/{artefact.relative}" if artefact.relative != "."
                 else artefact.run.label, artefact.run.index):
        try:
            body = spec.renderer(artefact)
        except Exception as exc:  # noqa: BLE001 - one bad artefact must not lose the whole report
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            body = warning(f"could not render this {artefact.kind}: {message}") + render_generic(artefact)
    try:
        finding = spec.headline(artefact)
    except Exception:  # noqa: BLE001 - the card shows the problem; a finding is optional
        finding = None
    lead = f'<p class="finding">{esc(" ".join(finding.split()))}</p>' if isinstance(finding, str) and finding.strip() \
        else ""
    return (f'<article class="card" id="{esc(artefact.anchor)}"><h3><code>{esc(artefact.relative)}</code>'
            f'<span class="badge">{esc(artefact.kind)}</span></h3>{lead}{body}</article>')


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


