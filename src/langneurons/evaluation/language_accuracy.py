"""Language accuracy of steered generation (LAPE paper, Tables 1, 4, 5): per language X, the share of outputs
detected as X, normal vs X's neurons activated (one column per strength), with the generation records.

The generation itself (conditions, prompt groups, records, the data-parallel loop) is
:mod:`langneurons.evaluation.steering`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.evaluation.generation import Condition, GenerationSettings
from langneurons.evaluation.langid import LanguageIdentifier, get_identifier
from langneurons.evaluation.steering import (
    GENERATIONS_FILE,
    SCHEMA_VERSION,
    GenerationRecord,
    PromptGroup,
    generate_records,
    read_generations,
    records_output,
    run_meta,
)
from langneurons.progress import progress_bar
from langneurons.recording.parallel_run import active_run
from langneurons.sets.output import Figure, Output, Table, read_matrix, read_output_meta, register_kind

ACCURACY_KIND = register_kind("language_accuracy", SCHEMA_VERSION, "rows languages, columns normal / steered")


@dataclass
class LanguageAccuracy:
    """Share of outputs in each language: rows ``languages``, columns ``normal`` and ``steered``.

    With several strengths the steered columns are ``steered@{strength}`` (one per strength).
    """

    languages: list[str]
    accuracy: torch.Tensor  # float64 [L, C]
    counts: dict[str, dict[str, int]]
    records: list[GenerationRecord]
    meta: dict[str, Any] = field(default_factory=dict)
    quality: torch.Tensor | None = None  # float64 [L, C] mean judge score (NaN where none), when judged
    columns: tuple[str, ...] = ("normal", "steered")

    def row(self, language: str) -> dict[str, float]:
        return dict(zip(self.columns, self.accuracy[self.languages.index(language)].tolist()))

    def improved(self, column: str | None = None) -> list[str]:
        """Languages whose share in a steered column (default: the last) is higher than the normal one."""
        index = self.columns.index(column) if column else len(self.columns) - 1
        return [lang for lang, row in zip(self.languages, self.accuracy.tolist()) if row[index] > row[0]]

    def format(self) -> str:
        width = max(10, *(len(c) + 2 for c in self.columns))
        lines = [f"{'language':<10}" + "".join(f"{c:>{width}}" for c in self.columns)]
        for lang, row in zip(self.languages, self.accuracy.tolist()):
            lines.append(f"{lang:<10}" + "".join(f"{v:>{width}.3f}" for v in row))
        for column in self.columns[1:]:
            lines.append(f"{column} > normal for {len(self.improved(column))} of {len(self.languages)} languages")
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """Headline numbers: per steered column, languages improved and the mean shares (normal, steered)."""
        values = self.accuracy.tolist()
        mean = [sum(column) / len(column) if column else float("nan") for column in zip(*values)] or []
        last = self.columns[-1]
        return {"languages": len(self.languages), "column": last, "improved": len(self.improved(last)),
                "improved_languages": self.improved(last), "mean_normal": mean[0] if mean else None,
                "mean_steered": mean[-1] if mean else None,
                "improved_per_column": {c: len(self.improved(c)) for c in self.columns[1:]}}

    def output(self) -> Output:
        """``language_accuracy.csv`` (+ ``content_quality.csv``), ``generations.jsonl``, ``language_accuracy.png``."""
        def share_table(file: str, title: str, values: torch.Tensor, what: str) -> Table:
            return Table(file, title, ["language", *self.columns],
                         [[lang, *row] for lang, row in zip(self.languages, values.tolist())],
                         rows_are="target language", columns_are=f"condition ({what})", decimals=4, missing="")

        tables = [share_table("language_accuracy.csv", "Share of outputs in the target language", self.accuracy,
                              "share of outputs detected as the row's language")]
        if self.quality is not None:
            tables.append(share_table("content_quality.csv", "Mean judge score", self.quality, "judge score 1-10"))
        meta = {"languages": self.languages, "columns": list(self.columns), "counts": self.counts,
                **{k: v for k, v in self.meta.items() if k not in ("languages", "columns", "counts")}}
        figure = Figure("language_accuracy.png", "Share of outputs in each language, normal vs steered",
                        lambda path: accuracy_bars(self, path))
        return Output(ACCURACY_KIND, self.meta.get("title") or "Language accuracy", tables, [figure], self.summary(),
                      meta, records=[records_output(self.records)])

    def save(self, directory: str | Path, plot: bool = True, force: bool = False) -> Path:
        """``language_accuracy.csv``, ``generations.jsonl``, ``meta.json``, ``language_accuracy.png``
        (and ``content_quality.csv`` when judged), atomically."""
        return self.output().save(directory, plot=plot, force=force)


def load_language_accuracy(directory: str | Path) -> LanguageAccuracy:
    """Read a result written by :meth:`LanguageAccuracy.save`."""
    root = Path(directory)
    meta = read_output_meta(root, ACCURACY_KIND, "a language-accuracy result")
    languages, columns, accuracy = read_matrix(root / "language_accuracy.csv", "a language-accuracy result")
    records = read_generations(root / GENERATIONS_FILE)
    extra = {k: v for k, v in meta.items() if k not in ("languages", "columns", "counts")}
    return LanguageAccuracy(languages, accuracy, meta.get("counts", {}), records, extra, columns=tuple(columns))


def accuracy_bars(result: LanguageAccuracy, path: str | Path) -> Path:
    """Grouped bars: share of outputs in each language, normal vs steered."""
    from langneurons.analysis.figures import new_figure, outside_legend, save_figure

    values = result.accuracy.numpy()
    positions = range(len(result.languages))
    fig = new_figure(figsize=(max(4.8, 1.5 + 0.6 * len(result.languages)), 3.2), dpi=110)
    ax = fig.subplots()
    count = len(result.columns)
    width = 0.8 / count
    colors = ["#9aa5b1", "#d1495b", "#edae49", "#00798c", "#30638e", "#003d5b"]
    for c, column in enumerate(result.columns):
        offset = (c - (count - 1) / 2) * width
        ax.bar([p + offset for p in positions], values[:, c], width=width, label=column, color=colors[c % len(colors)])
    ax.set_xticks(list(positions), result.languages)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of outputs in the language")
    ax.set_title(result.meta.get("title", "language accuracy"), fontsize=9)
    outside_legend(ax)
    return save_figure(fig, path)


def steering_languages(neurons: Any, stats: Any, candidates: Sequence[str] | None, langs: Sequence[str] | None
                       ) -> list[str]:
    """Languages present in the neuron set, the statistics and ``candidates`` (prompt files), or ``langs`` checked."""
    available = [lang for lang in neurons.languages if lang in stats.languages
                 and (candidates is None or lang in candidates)]
    if langs:
        missing = [lang for lang in langs if lang not in available]
        if missing:
            raise LangNeuronsError(f"cannot steer language(s) {', '.join(missing)}: each needs neurons, statistics"
                                   + (" and a prompt file" if candidates is not None else "")
                                   + f" (available: {', '.join(available) or 'none'})")
        return list(langs)
    if not available:
        raise LangNeuronsError("no language is in the neuron set, the statistics"
                               + (" and the prompts" if candidates is not None else ""))
    return available


def language_accuracy(model: Any, neurons: Any, stats: Any, prompts: dict[str, list[str]] | None = None,
                      unconditional: int | None = None, prompt_language: str | None = None,
                      deactivate_prompt_language: bool = False, strength: float | Sequence[float] = 1.0,
                      langs: Sequence[str] | None = None, settings: GenerationSettings | None = None,
                      identifier: str | LanguageIdentifier | None = None, judge: Any = None, tokenizer: Any = None,
                      progress: bool = True) -> LanguageAccuracy:
    """Table 4 (first block): per language X, share of outputs detected as X, normal vs X activated.

    Give ``prompts`` (``{lang: questions}``, see :func:`langneurons.evaluation.generation.read_prompts`), optionally
    with ``prompt_language``, or ``unconditional`` (samples per condition). Several ``strength`` values
    give one steered column each (sharing the normal outputs). Returns named rows / columns, every
    generation record and provenance. Data parallel under torchrun (see :func:`generate_records`); ``meta``
    records ``world_size`` and the prompts each rank generated (``rank_items``).
    """
    with active_run() as run:
        result = _language_accuracy(model, neurons, stats, prompts, unconditional, prompt_language,
                                    deactivate_prompt_language, strength, langs, settings, identifier, judge,
                                    tokenizer, progress)
        result.meta.update(run.report())
    return result


def _language_accuracy(model: Any, neurons: Any, stats: Any, prompts: dict[str, list[str]] | None,
                       unconditional: int | None, prompt_language: str | None, deactivate_prompt_language: bool,
                       strength: float | Sequence[float], langs: Sequence[str] | None,
                       settings: GenerationSettings | None, identifier: str | LanguageIdentifier | None,
                       judge: Any, tokenizer: Any, progress: bool) -> LanguageAccuracy:
    from langneurons.model.loading import as_loaded

    strengths = [float(strength)] if isinstance(strength, (int, float)) else [float(v) for v in strength]
    if not strengths or len(set(strengths)) != len(strengths):
        raise LangNeuronsError(f"give one or more distinct strengths, got {strengths}")
    loaded = as_loaded(model, tokenizer)
    if not isinstance(identifier, LanguageIdentifier):
        identifier = get_identifier(identifier)
    if (prompts is None) == (unconditional is None):
        raise LangNeuronsError("give either prompts or --unconditional N")
    if unconditional is not None:
        settings = settings or GenerationSettings(sample=True)
        if not settings.sample:
            raise LangNeuronsError("--unconditional samples: add --sample")
    settings = (settings or GenerationSettings()).validate()
    if prompt_language is not None and (prompts is None or prompt_language not in prompts):
        raise LangNeuronsError(f"no prompts in language {prompt_language!r}")
    if deactivate_prompt_language and prompt_language is None:
        raise LangNeuronsError("--deactivate-prompt-language needs --prompt-language")
    own_prompts = prompts is not None and prompt_language is None
    languages = steering_languages(neurons, stats, list(prompts) if own_prompts else None, langs)
    from langneurons.model.sites import locate_site

    for site in neurons.sites:  # another shape fails here, before the normal outputs are generated
        located = locate_site(loaded.model, site)
        neurons.check_shape(located.num_layers, located.width, what=f"model {loaded.name!r}", site=site)
    if prompt_language is not None and deactivate_prompt_language:
        neurons.layers(prompt_language)
    # groups and conditions
    if unconditional is not None:
        shared = PromptGroup("unconditional", None, unconditional=unconditional)
    elif prompt_language is not None:
        shared = PromptGroup(prompt_language, prompt_language, questions=prompts[prompt_language])
    else:
        shared = None
    normal = Condition()
    columns = ("normal", "steered") if len(strengths) == 1 else ("normal", *(f"steered@{v:g}" for v in strengths))
    plan: list[tuple[str, PromptGroup, list[Condition]]] = []  # (target language, group, steered conditions)
    for lang in languages:
        group = shared or PromptGroup(lang, lang, questions=prompts[lang])
        deactivate = [prompt_language] if deactivate_prompt_language and prompt_language != lang else []
        plan.append((lang, group, [Condition(deactivate=deactivate, activate=[lang], strength=v) for v in strengths]))
    records: list[GenerationRecord] = []
    normal_groups = [shared] if shared else [group for _, group, _ in plan]
    if shared:  # the work line: prompts x conditions
        count = len(shared.questions) + shared.unconditional
        factors = [(count, "prompts" if shared.questions else "samples"),
                   (1 + len(plan) * len(strengths), "conditions (normal + steered per language)")]
    else:
        factors = [(sum(len(group.questions) for _, group, _ in plan), f"prompts in {len(plan)} languages"),
                   (1 + len(strengths), "conditions (normal + steered)")]
    total = factors[0][0] * factors[1][0]
    with progress_bar("steer", total, "gen", factors, progress) as bar:  # one bar over every condition
        normal_records = generate_records(loaded, normal_groups, [normal], settings, neurons, stats, identifier,
                                          judge, bar)
        steered = [generate_records(loaded, [group], [condition], settings, neurons, stats, identifier, judge, bar)
                   for _, group, steered_conditions in plan for condition in steered_conditions]
    records.extend(normal_records)
    steered_iter = iter(steered)
    accuracy = torch.zeros(len(languages), len(columns), dtype=torch.float64)
    quality = torch.full((len(languages), len(columns)), float("nan"), dtype=torch.float64)
    counts: dict[str, dict[str, int]] = {}
    for row, (lang, group, steered_conditions) in enumerate(plan):
        base = normal_records if shared else [r for r in normal_records if r.language == lang]
        subsets = [base]
        for _ in steered_conditions:
            subsets.append(next(steered_iter))
            records.extend(subsets[-1])
        counts[lang] = {"outputs": len(base)}
        for column, subset in enumerate(subsets):
            hits = sum(r.detected_language == lang for r in subset)
            accuracy[row, column] = hits / len(subset)
            counts[lang][f"{columns[column]}_in_language"] = hits
            scores = [r.judge_score for r in subset if r.judge_score is not None]
            if scores:
                quality[row, column] = sum(scores) / len(scores)
    mode = ("unconditional" if unconditional is not None else
            f"prompts in {prompt_language}" if prompt_language is not None else "own-language prompts")
    conditions = [normal] + [condition for _, _, steered in plan for condition in steered]
    meta = run_meta(loaded, settings, identifier, conditions, neurons, stats, judge)
    label = ", ".join(f"{v:g}" for v in strengths)
    meta.update({"mode": mode, "strength": strengths[0] if len(strengths) == 1 else strengths,
                 "unconditional": unconditional, "prompt_language": prompt_language,
                 "deactivate_prompt_language": deactivate_prompt_language,
                 "title": f"language accuracy ({mode}, strength {label})",
                 "accuracy": "share of outputs whose detected language is the row's language"})
    return LanguageAccuracy(languages, accuracy, counts, records, meta,
                            quality if judge is not None else None, columns)
