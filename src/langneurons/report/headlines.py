"""One-sentence findings of the core artefacts (statistics, perplexity matrices, neuron and parameter sets,
generations, language accuracy), read from their ``meta.json`` (and the matrix's ``nll.csv``).

Each function takes an :class:`~langneurons.report.discover.Artefact` and returns plain text or ``None``; they
are registered with the sections in :mod:`langneurons.report.renderers`.
"""

from __future__ import annotations

import math
from typing import Any

from langneurons.report.discover import Artefact
from langneurons.report.sections import model_of


def percent(value: float, scale: float) -> str:
    """``value`` as a signed percentage with enough decimals to tell values of magnitude ``scale`` apart."""
    if not math.isfinite(value):
        return str(value)
    decimals = 1 if scale <= 0 else min(4, max(1, 1 - math.floor(math.log10(scale * 100))))
    return f"{value:+.{decimals}%}"


def perplexity_sentence(matrix: Any) -> str:
    """The demo's science check in one sentence (own language vs others vs random); ``""`` without rows."""
    from langneurons.evaluation.perplexity import summary

    keys = summary(matrix)
    if not keys["rows"]:
        return ""
    scale = max((abs(v) for k, v in keys.items() if k.startswith("mean_") and math.isfinite(v)), default=0.0)

    def pct(value: float) -> str:
        return "n/a" if math.isnan(value) else percent(value, scale)

    zeroing = matrix.meta.get("intervention") == "zero parameters"
    edit, unit = ("Zeroing", "parameters") if zeroing else ("Deactivating", "neurons")
    text = (f"{edit} a language's own {unit} raises its perplexity by {pct(keys['mean_diagonal_increase'])} on "
            f"average (other languages {pct(keys['mean_off_diagonal_increase'])}")
    if not math.isnan(keys["mean_random_increase"]):
        text += f", random {unit} {pct(keys['mean_random_increase'])}"
    text += f"); the own language is hit hardest in {keys['row_max_on_diagonal']} of {keys['rows']} rows."
    return text


def perplexity_headline(artefact: Artefact) -> str | None:
    from langneurons.evaluation.perplexity import load_perplexity

    matrix = load_perplexity(artefact.path)
    return perplexity_sentence(matrix) or None if "normal" in matrix.conditions else None


def stats_headline(artefact: Artefact) -> str | None:
    meta = artefact.meta
    tokens = meta.get("token_count") if isinstance(meta.get("token_count"), dict) else {}
    languages = meta.get("languages") or list(tokens)
    total = sum(v for v in tokens.values() if isinstance(v, int))
    if not languages:
        return None
    grid = (f" ({meta['num_layers']} layers × {meta['width']} neurons)"
            if isinstance(meta.get("num_layers"), int) and isinstance(meta.get("width"), int) else "")
    model = model_of(meta)
    return (f"Recorded {total:,} tokens in {len(languages)} languages at {meta.get('site', 'ffn.act')}{grid}"
            + (f" of {model}." if model else "."))


def _sizes_sentence(sizes: dict[str, int], unit: str, total: int | None, what: str) -> str | None:
    if not sizes:
        return None
    values = list(sizes.values())
    mean = sum(values) / len(values)
    share = f", {mean / total:.2%} of the {total:,}" if total else ""
    text = f"{what} selected {min(values):,}–{max(values):,} {unit} per language (mean {mean:,.1f}{share})"
    empty = [lang for lang, n in sizes.items() if n == 0]
    if empty:
        text += f"; none for {', '.join(empty)}"
    return text + "."


def neuron_set_headline(artefact: Artefact) -> str | None:
    meta = artefact.meta
    sizes = meta.get("sizes") if isinstance(meta.get("sizes"), dict) else {}
    layers, width = meta.get("num_layers"), meta.get("width")
    total = layers * width if isinstance(layers, int) and isinstance(width, int) else None
    grids = meta.get("grids") if isinstance(meta.get("grids"), dict) else {}
    if total is None and grids and all(isinstance(g, list) and len(g) == 2 for g in grids.values()):
        total = sum(int(g[0]) * int(g[1]) for g in grids.values())  # a set over several sites (schema 2)
    sites = meta.get("sites") if isinstance(meta.get("sites"), list) else [meta.get("site", "?")]
    return _sizes_sentence(sizes, "neurons", total, f"{meta.get('method', 'the method')} at {', '.join(sites)}")


def parameter_set_headline(artefact: Artefact) -> str | None:
    meta = artefact.meta
    sizes = meta.get("sizes") if isinstance(meta.get("sizes"), dict) else {}
    total = meta.get("total") if isinstance(meta.get("total"), int) else None
    return _sizes_sentence(sizes, "weight entries", total, str(meta.get("method", "the method")))


def language_accuracy_headline(artefact: Artefact) -> str | None:
    summary = artefact.meta.get("summary") if isinstance(artefact.meta.get("summary"), dict) else {}
    normal, steered = summary.get("mean_normal"), summary.get("mean_steered")
    if not isinstance(normal, (int, float)) or not isinstance(steered, (int, float)):
        return None
    column = summary.get("column", "steered")
    return (f"Steering raises the share of outputs in the target language in {summary.get('improved', '?')} of "
            f"{summary.get('languages', '?')} languages ({column}: mean {normal:.0%} normal -> {steered:.0%}).")


def generations_headline(artefact: Artefact) -> str | None:
    meta = artefact.meta
    count = meta.get("records")
    conditions = meta.get("conditions") if isinstance(meta.get("conditions"), list) else []
    if not isinstance(count, int):
        return None
    return f"{count:,} outputs generated under {len(conditions)} condition{'s' if len(conditions) != 1 else ''}."


def pooled_headline(artefact: Artefact) -> str | None:
    meta = artefact.meta
    languages, samples = meta.get("languages") or [], meta.get("num_samples")
    if not languages or not isinstance(samples, int):
        return None
    return (f"Pooled ({meta.get('mode', 'mean')}) hidden states of {samples:,} aligned sentences in {len(languages)} "
            f"languages at {meta.get('site', '?')}, {meta.get('num_layers', '?')} layers.")


def checkpoint_headline(artefact: Artefact) -> str | None:
    position = artefact.meta.get("position") if isinstance(artefact.meta.get("position"), dict) else {}
    tokens = position.get("tokens_done")
    if not isinstance(tokens, int):
        return None
    return f"An unfinished recording: {tokens:,} tokens done (continue it with --resume)."


def task_accuracy_headline(artefact: Artefact) -> str | None:
    """``task (metric): mean accuracy normal X; deactivating a language's own neurons: Y on it (Z elsewhere)``."""
    meta = artefact.meta
    summary = meta.get("summary") if isinstance(meta.get("summary"), dict) else {}
    normal = summary.get("normal") if isinstance(summary.get("normal"), dict) else None
    if not normal:
        return None
    mean = sum(normal.values()) / len(normal)
    return (f"{meta.get('task', 'task')} ({meta.get('metric', '?')}): mean accuracy {mean:.1%} without "
            f"intervention over {len(normal)} language{'s' if len(normal) != 1 else ''}; the other rows of the "
            "table are the deactivation conditions.")
