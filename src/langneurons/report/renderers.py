"""Specialised renderers: activation statistics, the perplexity matrix, neuron sets, generation results, and the
overview.

Each renderer takes an :class:`~langneurons.report.discover.Artefact` and returns its card's HTML body: figures
first, then tables behind their captions, raw records behind a details element, provenance collapsed (each
corpus, figure and table shown once per report). They are registered with
:func:`~langneurons.report.sections.register_section` when the package is imported.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from langneurons.report.context import content_key
from langneurons.report.discover import Artefact, Run
from langneurons.report.html import (Cell, diverging_style, esc, figure, figure_grid, format_number, key_values,
                                     same_as, sequential_style, table, warning)
from langneurons.report.html import details as html_details
from langneurons.report.headlines import (
    checkpoint_headline,
    generations_headline,
    language_accuracy_headline,
    neuron_set_headline,
    task_accuracy_headline,
    parameter_set_headline,
    percent,
    perplexity_headline as perplexity_finding,
    perplexity_sentence,
    pooled_headline,
    stats_headline,
)
from langneurons.report.sections import (HIDDEN_STATE_SITES, collapsed_table, figures, model_of, provenance,
                                         register_section, section_spec, summary_block, tables)

__all__ = ["layer_counts_table", "layer_distribution_figure", "percent", "perplexity_headline",
           "register_builtin_sections", "render_activation_stats", "render_generation_result", "render_neuron_set",
           "render_overview", "render_perplexity_matrix", "run_summary"]


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
    corpora: list[tuple[str, Any, Any]] = []
    if meta.get("corpus"):
        corpora.append(("corpus", meta["corpus"], tokens))
    elif isinstance(meta.get("shards"), list):  # merged statistics: one corpus block per shard
        parts.append(f'<p class="note">merged from {len(meta["shards"])} shards</p>')
        corpora += [(f"shard {index}", shard, None) for index, shard in enumerate(meta["shards"])]
    if tokens and not meta.get("corpus"):
        parts.append(collapsed_table("tokens per language", table(["language", "tokens"],
                                                                   [[k, v] for k, v in tokens.items()]), len(tokens)))
    parts.append(provenance(artefact, corpora=corpora))
    return "".join(parts)


# -- perplexity matrix -----------------------------------------------------------------------------
def perplexity_headline(matrix: Any) -> str:
    """The demo's science check in one sentence (own language vs others vs random), as HTML."""
    text = perplexity_sentence(matrix)
    return f'<p class="headline">{esc(text)}</p>' if text else ""


def _legend(limit: float) -> str:
    return (f'<span class="legend">{esc(percent(-limit, limit))}<i style="background:linear-gradient(90deg,'
            f'rgb(33,102,172),#fff,rgb(178,24,43))"></i>{esc(percent(limit, limit))} relative change against '
            f"normal</span>")


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
    caption = "perplexity per condition and evaluated language, with the relative change against normal below"
    matrix_table = (table(["condition \\ evaluated", *matrix.languages], rows, footer=footer, cls="matrix")
                    + (_legend(limit) if limit > 0 else ""))
    nll_rows = [[condition, *row] for condition, row in zip(matrix.conditions, matrix.nll.tolist())]
    parts = [figures(artefact),
             collapsed_table(caption, matrix_table, len(rows)),
             collapsed_table(f"mean NLL ({matrix.meta.get('nll_unit', 'nats per predicted token')})",
                             table(["condition", *matrix.languages], nll_rows), len(nll_rows))]
    random = matrix.meta.get("random") if isinstance(matrix.meta.get("random"), dict) else {}
    if zeroing:
        edited = matrix.meta.get("parameter_set") if isinstance(matrix.meta.get("parameter_set"), dict) else {}
        extra = [("intervention", "weight entries set to 0"), ("parameter method", edited.get("method")),
                 ("parameter-set parameters", edited.get("parameters")),
                 ("entries per language", edited.get("sizes"))]
    else:
        neurons = matrix.meta.get("neurons") if isinstance(matrix.meta.get("neurons"), dict) else {}
        extra = [("neuron method", neurons.get("method")), ("neuron parameters", neurons.get("parameters")),
                 ("neurons per language", neurons.get("sizes"))]
    parts.append(provenance(artefact, extra=[*extra, ("random row seed", random.get("seed"))],
                            corpora=[("evaluation corpus", matrix.meta.get("corpus"), None)]))
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
                 footer=[["all", *totals, sum(totals)]])


def _layer_artefact(artefact: Artefact, neurons: Any) -> Artefact | None:
    """The run's layer distribution of this very set (same method and sizes), if it has one."""
    for other in artefact.run.of_kind("layer_distribution"):
        source = other.meta.get("neurons") if isinstance(other.meta.get("neurons"), dict) else {}
        if source.get("method") == neurons.method and source.get("sizes") == neurons.sizes():
            return other
    return None


def render_neuron_set(artefact: Artefact) -> str:
    from langneurons.sets.neuronset import load_neurons

    loaded = load_neurons(artefact.path)
    if len(loaded.sites) == 1:
        return _render_neuron_site(artefact, loaded)
    first, *others = loaded.sites  # the first site in view, the others one click away
    rest = "".join(f"<h4>Site {site}</h4>" + _render_neuron_site(artefact, loaded.restrict(sites=[site]), details=False)
                   for site in others)
    return (f"<h4>Site {first}</h4>" + _render_neuron_site(artefact, loaded.restrict(sites=[first]), details=False)
            + html_details(f"Sites {', '.join(others)}", rest, cls="sites")
            + _render_neuron_site(artefact, loaded, details=True, summary=False))


def _render_neuron_site(artefact: Artefact, neurons: Any, details: bool = True, summary: bool = True) -> str:
    if not summary:  # only the artefact's own files and provenance (after the sites of a multi-site set)
        return "".join([figures(artefact), tables(artefact),
                        provenance(artefact, corpora=[("statistics corpus", neurons.source.get("corpus"), None)])])
    total = neurons.num_layers * neurons.width
    sizes = neurons.sizes()
    size_rows = [[lang, n, Cell(f"{n / total:.2%}" if total else "", sort=n / total if total else 0, cls="num")]
                 for lang, n in sizes.items()]
    empty = [lang for lang, n in sizes.items() if n == 0]
    parts = [
        key_values([("method", neurons.method), ("neuron site", neurons.site),
                    ("neuron grid", f"{neurons.num_layers} layers × {neurons.width} neurons = {total:,}"),
                    ("neurons per language", sizes),
                    ("distinct neurons", int(sum(neurons.mask(lang) for lang in neurons.languages).gt(0).sum())
                     if neurons.languages else 0)]),
    ]
    if empty:
        parts.append(warning(f"no neurons for {', '.join(empty)}: interventions on "
                             f"{'it' if len(empty) == 1 else 'them'} change nothing", problem=False))
    layers = _layer_artefact(artefact, neurons)
    if layers is not None:  # its own card shows the layer plot and table
        parts.append(same_as("Layer distribution (figure and table)", (layers.anchor, layers.relative)))
    else:
        parts.append(figure_grid([layer_distribution_figure(neurons)]))
        counts = neurons.layer_counts().tolist()
        parts.append(collapsed_table("neurons per layer (columns: layer index)",
                                     layer_counts_table(neurons.languages, counts), len(counts),
                                     content_key("layer counts", neurons.languages, counts)))
    parts.append(collapsed_table("neurons per language", table(["language", "neurons", "share of all neurons"],
                                                               size_rows), len(size_rows)))
    if details:  # once per artefact, after its last site
        parts += [figures(artefact), tables(artefact),
                  provenance(artefact, corpora=[("statistics corpus", neurons.source.get("corpus"), None)])]
    return "".join(parts)


# -- generation results ------------------------------------------------------------------------------
def render_generation_result(artefact: Artefact) -> str:
    """Language accuracy / generations: figure, the tables behind captions, then the telling records."""
    return summary_block({"title": artefact.meta.get("title")}) + figures(artefact) + tables(artefact) + \
        provenance(artefact, other_fields=False)


# -- overview --------------------------------------------------------------------------------------
def run_summary(run: Run) -> dict[str, Any]:
    """Models, languages, neuron sites (hidden-state sites such as ``layer.out`` left out) and creation times."""
    models, languages, sites, created = [], [], [], []
    for artefact in run.artefacts:
        meta = artefact.meta
        site_values = [meta.get("site"), *(meta.get("sites") if isinstance(meta.get("sites"), list) else [])]
        site_values = [site for site in site_values if site not in HIDDEN_STATE_SITES]
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
    register_section("record_checkpoint", None, "Recording checkpoints", 12,
                     "Partial statistics of an unfinished recording (resume it with --resume).", checkpoint_headline)
    register_section("perplexity_matrix", render_perplexity_matrix, "Deactivation perplexity matrix", 20,
                     "LAPE paper, Figure 2: perplexity of each evaluated language (columns) with no intervention, "
                     "random neurons, or one language's neurons deactivated (rows); the figure and the table both "
                     "show the relative change against the normal row, the own-language cells outlined.",
                     perplexity_finding)
    register_section("task_accuracy", None, "Task accuracy", 25,
                     "Accuracy per language (columns) without intervention, with random neurons, or with one "
                     "language's neurons deactivated (rows); multiple choice by log-likelihood or exact match "
                     "(docs/tasks.md).", task_accuracy_headline)
    register_section("neuron_set", render_neuron_set, "Language-specific neuron sets", 30,
                     "Which neurons each method selected per language, with its parameters, and their distribution "
                     "over layers (LAPE paper, Figure 5).", neuron_set_headline)
    register_section("parameter_set", render_parameter_set, "Language-specific parameters (PV)", 35,
                     "Parameter variation (LAPE paper, section 3.1 d): per language, the attention and FFN weight "
                     "entries that its fine-tuning changed least while the other languages' changed them most.",
                     parameter_set_headline)
    register_section("pooled_vectors", None, "Pooled hidden states", 58,
                     "Per-sentence pooled vectors of a parallel corpus (the input of SES and dominance).",
                     pooled_headline)
    register_section("generations", render_generation_result, "Generations", 80,
                     "Outputs under neuron interventions with their detected language; the telling ones first.",
                     generations_headline)
    register_section("language_accuracy", render_generation_result, "Language accuracy of steered generation", 85,
                     "Share of outputs in the target language, normal vs steered (LAPE paper, Table 4).",
                     language_accuracy_headline)
