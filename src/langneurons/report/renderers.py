"""Specialised renderers: activation statistics, the perplexity matrix, neuron sets, and the overview.

Each renderer takes an :class:`~langneurons.report.discover.Artefact` and returns its card's HTML body.
They are registered with :func:`~langneurons.report.sections.register_section` when the package is imported.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from langneurons.report.discover import Artefact, Run
from langneurons.report.html import (Cell, details, diverging_style, esc, figure, format_number, key_values,
                                     sequential_style, table, warning)
from langneurons.report.headlines import (
    generations_headline,
    language_accuracy_headline,
    neuron_set_headline,
    parameter_set_headline,
    percent,
    perplexity_headline as perplexity_finding,
    perplexity_sentence,
    stats_headline,
)
from langneurons.report.sections import figures, model_of, provenance, register_section, section_spec, tables


def _corpus_files(corpus: Any) -> dict[str, dict[str, Any]]:
    files = corpus.get("files") if isinstance(corpus, dict) else None
    return files if isinstance(files, dict) else {}


def _corpus_table(corpus: Any, tokens: dict[str, Any] | None = None, caption: str = "corpus") -> str:
    """Per language: file, SHA-256, documents, windows, tokens."""
    files = _corpus_files(corpus)
    tokens = tokens or {}
    languages = list(files) + [lang for lang in tokens if lang not in files]
    if not languages:
        return ""
    rows = []
    for lang in languages:
        entry = files.get(lang) or {}
        digest = str(entry.get("sha256") or "")
        rows.append([lang, entry.get("file", ""), Cell(f"{digest[:10]}…" if digest else "", title=digest, cls="mono"),
                     entry.get("documents", ""), entry.get("windows", ""), tokens.get(lang, entry.get("tokens", ""))])
    where = corpus.get("path") if isinstance(corpus, dict) else None
    settings = {k: corpus.get(k) for k in ("seq_len", "max_tokens")} if isinstance(corpus, dict) else {}
    caption_text = caption + (f": {where}" if where else "") + "".join(
        f", {k}={v}" for k, v in settings.items() if v is not None)
    return table(["language", "file", "sha256", "documents", "windows", "tokens"], rows, caption=caption_text)


# -- activation statistics -------------------------------------------------------------------------
def render_activation_stats(artefact: Artefact) -> str:
    meta = artefact.meta
    site_info = meta.get("site_info") if isinstance(meta.get("site_info"), dict) else {}
    layers, width = meta.get("num_layers"), meta.get("width")
    shape = f"{layers} layers × {width} neurons = {layers * width:,}" if isinstance(layers, int) and isinstance(
        width, int) else None
    tokens = meta.get("token_count") if isinstance(meta.get("token_count"), dict) else {}
    parts = [key_values([("languages", meta.get("languages")), ("neuron grid", shape),
                         ("hooked module", site_info.get("module")),
                         ("tokens recorded", sum(v for v in tokens.values() if isinstance(v, int)) or None)])]
    if meta.get("corpus"):
        parts.append(_corpus_table(meta["corpus"], tokens, "corpus"))
    elif isinstance(meta.get("shards"), list):  # merged statistics: one corpus block per shard
        parts.append(f'<p class="note">merged from {len(meta["shards"])} shards</p>')
        for index, shard in enumerate(meta["shards"]):
            parts.append(_corpus_table(shard, None, f"shard {index}"))
        if tokens:
            parts.append(table(["language", "tokens"], [[k, v] for k, v in tokens.items()], caption="tokens (merged)"))
    elif tokens:
        parts.append(table(["language", "tokens"], [[k, v] for k, v in tokens.items()]))
    parts.append("<h4>Provenance</h4>" + provenance(artefact))
    return "".join(parts)


# -- perplexity matrix -----------------------------------------------------------------------------
def perplexity_headline(matrix: Any) -> str:
    """The demo's science check in one sentence (own language vs others vs random), as HTML."""
    text = perplexity_sentence(matrix)
    return f'<p class="headline">{esc(text)}</p>' if text else ""


def _legend(limit: float) -> str:
    return (f'<span class="legend">{esc(percent(-limit, limit))}<i style="background:linear-gradient(90deg,'
            f'rgb(33,102,172),#fff,rgb(178,24,43))"></i>{esc(percent(limit, limit))} relative change</span>')


def render_perplexity_matrix(artefact: Artefact) -> str:
    from langneurons.evaluation.perplexity import load_perplexity

    matrix = load_perplexity(artefact.path)
    perplexity = matrix.perplexity.tolist()
    relative = matrix.change(relative=True).tolist() if "normal" in matrix.conditions else None
    changed = [abs(v) for r, row in enumerate(relative or []) if matrix.conditions[r] != "normal"
               for v in row if math.isfinite(v)]
    limit = max(changed, default=0.0)
    zeroing = matrix.meta.get("intervention") == "zero parameters"
    rows = []
    for r, condition in enumerate(matrix.conditions):
        label = condition
        if condition not in ("normal", "random"):
            label = f"zero {condition}'s parameters" if zeroing else f"deactivate {condition}"
        cells: list[Any] = [Cell(label, sort=r)]
        for c, lang in enumerate(matrix.languages):
            value = perplexity[r][c]
            text = esc(format_number(value))
            style, title = "", f"perplexity {value:.6g}"
            if relative is not None and condition != "normal":
                change = relative[r][c]
                text += f"<small>{esc(percent(change, limit))}</small>"
                style = diverging_style(change, limit)
                title += f", {change:+.3%} against normal"
            classes = "num diag" if condition == lang else "num"
            cells.append(Cell(text, sort=value, style=style, cls=classes, title=title, raw_html=True))
        rows.append(cells)
    tokens = [matrix.tokens.get(lang, "") for lang in matrix.languages]
    footer = [["predicted tokens", *tokens]] if matrix.tokens else []
    parts = [perplexity_headline(matrix) if relative is not None else "",
             table(["condition \\ evaluated", *matrix.languages], rows, footer=footer,
                   caption="perplexity (relative change against normal)", cls="matrix"),
             _legend(limit) if limit > 0 else ""]
    nll_rows = [[condition, *row] for condition, row in zip(matrix.conditions, matrix.nll.tolist())]
    parts.append(details(f"mean NLL ({matrix.meta.get('nll_unit', 'nats per predicted token')})",
                         table(["condition", *matrix.languages], nll_rows)))
    parts.append(figures(artefact))
    random = matrix.meta.get("random") if isinstance(matrix.meta.get("random"), dict) else {}
    parts.append("<h4>Provenance</h4>")
    if zeroing:
        edited = matrix.meta.get("parameter_set") if isinstance(matrix.meta.get("parameter_set"), dict) else {}
        extra = [("intervention", "weight entries set to 0"), ("parameter method", edited.get("method")),
                 ("parameter-set parameters", edited.get("parameters")),
                 ("entries per language", edited.get("sizes"))]
    else:
        neurons = matrix.meta.get("neurons") if isinstance(matrix.meta.get("neurons"), dict) else {}
        extra = [("neuron method", neurons.get("method")), ("neuron parameters", neurons.get("parameters")),
                 ("neurons per language", neurons.get("sizes"))]
    parts.append(provenance(artefact, extra=[*extra, ("random row seed", random.get("seed"))]))
    if matrix.meta.get("corpus"):
        parts.append(_corpus_table(matrix.meta["corpus"], None, "evaluation corpus"))
    return "".join(parts)


# -- neuron sets -----------------------------------------------------------------------------------
def layer_distribution_figure(neurons: Any) -> str:
    """``layer_distribution_plot`` of the set, embedded (drawn into a temporary file)."""
    from langneurons.analysis.plots import layer_distribution_plot

    with tempfile.TemporaryDirectory(prefix="langneurons-report-") as scratch:
        path = Path(scratch) / "layers.png"
        layer_distribution_plot(neurons, path)
        data = path.read_bytes()
    return figure(data, "image/png", f"{neurons.method} neurons per layer and language")


def layer_counts_table(languages: list[str], counts: list[list[int]]) -> str:
    """Languages x layers counts with a row total, coloured on one scale."""
    if not counts:
        return ""
    maximum = max((v for row in counts for v in row), default=0)
    rows = [[lang, *(Cell(str(v), sort=v, cls="num", style=sequential_style(v, maximum)) for v in row), sum(row)]
            for lang, row in zip(languages, counts)]
    totals = [sum(column) for column in zip(*counts)]
    return table(["language", *(str(i) for i in range(len(counts[0]))), "total"], rows,
                 footer=[["all", *totals, sum(totals)]], caption="neurons per layer (columns: layer index)")


def render_neuron_set(artefact: Artefact) -> str:
    from langneurons.sets.neuronset import load_neurons

    loaded = load_neurons(artefact.path)
    if len(loaded.sites) == 1:
        return _render_neuron_site(artefact, loaded)
    return "".join(f"<h4>Site {site}</h4>" + _render_neuron_site(artefact, loaded.restrict(sites=[site]),
                                                                 details=index == len(loaded.sites) - 1)
                   for index, site in enumerate(loaded.sites))


def _render_neuron_site(artefact: Artefact, neurons: Any, details: bool = True) -> str:
    total = neurons.num_layers * neurons.width
    sizes = neurons.sizes()
    counts = neurons.layer_counts().tolist()
    size_rows = [[lang, n, Cell(f"{n / total:.2%}" if total else "", sort=n / total if total else 0, cls="num")]
                 for lang, n in sizes.items()]
    source = neurons.source
    parts = [
        key_values([("method", neurons.method), ("neuron site", neurons.site),
                    ("neuron grid", f"{neurons.num_layers} layers × {neurons.width} neurons = {total:,}"),
                    ("languages", neurons.languages),
                    ("distinct neurons", int(sum(neurons.mask(lang) for lang in neurons.languages).gt(0).sum())
                     if neurons.languages else 0)]),
        table(["language", "neurons", "share of all neurons"], size_rows, caption="neurons per language"),
        layer_distribution_figure(neurons),
        layer_counts_table(neurons.languages, counts),
    ]
    if details:  # once per artefact, after its last site
        parts += [figures(artefact), tables(artefact), "<h4>Provenance</h4>", provenance(artefact)]
        if source.get("corpus"):
            parts.append(_corpus_table(source["corpus"], None, "statistics corpus"))
    return "".join(parts)


# -- overview --------------------------------------------------------------------------------------
def run_summary(run: Run) -> dict[str, Any]:
    """Models, languages, sites and creation times across a run's artefacts."""
    models, languages, sites, created = [], [], [], []
    for artefact in run.artefacts:
        meta = artefact.meta
        site_values = [meta.get("site"), *(meta.get("sites") if isinstance(meta.get("sites"), list) else [])]
        for value, into in ((model_of(meta), models), *((site, sites) for site in site_values),
                            (meta.get("created"), created)):
            if value and isinstance(value, str) and value not in into:
                into.append(value)
        for lang in meta.get("languages") or []:
            if isinstance(lang, str) and lang not in languages:
                languages.append(lang)
    return {"models": models, "languages": languages, "sites": sites, "created": sorted(created)}


def render_overview(run: Run) -> str:
    """The run's card body: what it holds, with links to each artefact's card."""
    summary = run_summary(run)
    created = summary["created"]
    span = (created[0] if len(created) == 1 else f"{created[0]} … {created[-1]}") if created else None
    items = []
    for artefact in sorted(run.artefacts, key=lambda a: (section_spec(a.kind).order, a.relative)):
        items.append(f'<li><a href="#{esc(artefact.anchor)}"><code>{esc(artefact.relative)}</code></a> '
                     f'<span class="badge">{esc(artefact.kind)}</span></li>')
    parts = [key_values([("directory", str(run.path.resolve())), ("model", summary["models"]),
                         ("languages", summary["languages"]), ("neuron site", summary["sites"]),
                         ("created", span), ("artefacts", len(run.artefacts))]),
             f'<ul class="artefacts">{"".join(items)}</ul>']
    for problem in run.problems:
        parts.append(warning(problem))
    return "".join(parts)


def register_builtin_sections() -> None:
    """The sections of the core artefacts (the analyses register theirs in their own modules)."""
    from langneurons.report.parameter_renderers import render_parameter_set

    register_section("activation_stats", render_activation_stats, "Recorded activation statistics", 10,
                     "What was recorded: model, neuron site, corpus files (with SHA-256) and tokens per language.",
                     stats_headline)
    register_section("perplexity_matrix", render_perplexity_matrix, "Deactivation perplexity matrix", 20,
                     "LAPE paper, Figure 2: perplexity of each evaluated language (columns) with no intervention, "
                     "random neurons, or one language's neurons deactivated (rows). Cell colour: relative change "
                     "against the normal row; the own-language cells are outlined.", perplexity_finding)
    register_section("neuron_set", render_neuron_set, "Language-specific neuron sets", 30,
                     "Which neurons each method selected per language, with its parameters, and their distribution "
                     "over layers (LAPE paper, Figure 5).", neuron_set_headline)
    register_section("parameter_set", render_parameter_set, "Language-specific parameters (PV)", 35,
                     "Parameter variation (LAPE paper, section 3.1 d): per language, the attention and FFN weight "
                     "entries that its fine-tuning changed least while the other languages' changed them most.",
                     parameter_set_headline)
    register_section("generations", None, "Generations", 80, "", generations_headline)
    register_section("language_accuracy", None, "Language accuracy of steered generation", 85,
                     "Share of outputs in the target language, normal vs steered (LAPE paper, Table 4).",
                     language_accuracy_headline)
