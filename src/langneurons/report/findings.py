"""The findings that open the report: one sentence per artefact, from the ``headline`` of its kind's section."""

from __future__ import annotations

from langneurons.report.discover import Artefact, Run
from langneurons.report.html import esc
from langneurons.report.sections import SectionSpec, section_spec


def findings(runs: list[Run]) -> list[tuple[Artefact, SectionSpec, str]]:
    """``(artefact, spec, sentence)`` for every artefact whose section gives a headline, in section order."""
    found = []
    for run in runs:
        for artefact in run.artefacts:
            spec = section_spec(artefact.kind)
            try:
                text = spec.headline(artefact)
            except Exception:  # noqa: BLE001 - the card reports the problem; a finding is optional
                text = None
            if isinstance(text, str) and text.strip():
                found.append((artefact, spec, " ".join(text.split())))
    return sorted(found, key=lambda item: (item[1].order, item[1].title, item[0].run.index, item[0].relative))


def findings_block(runs: list[Run]) -> str:
    """The findings list that opens the report: one line per artefact with a headline, linked to its card."""
    items = findings(runs)
    if not items:
        return ""
    several = len(runs) > 1
    lines = []
    for artefact, spec, text in items:
        where = f" · {artefact.run.label}" if several else ""
        lines.append(f'<li><a href="#{esc(artefact.anchor)}">{esc(spec.title)}</a>'
                     f'<span class="badge">{esc(artefact.relative)}{esc(where)}</span> {esc(text)}</li>')
    return f'<div class="findings"><h3>Findings</h3><ul>{"".join(lines)}</ul></div>'
