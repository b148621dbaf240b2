"""Steering the output language (LAPE paper, section 3.3.4, Tables 4 and 5).

:func:`generate_records` runs conditions (normal, deactivate / activate languages) over prompts or
over unconditional samples and identifies the language of every output; :func:`language_accuracy` is
Table 4's first block: for each language X, the share of outputs detected as X without intervention
(``normal``) and with X's neurons activated to X's mean activation x strength (``steered``). Three
kinds of prompts:

- ``prompts``: each language's own questions (Table 4: off-target answers to X questions);
- ``prompt_language=Y``: every X is steered on Y's questions (cross-lingual, as Table 5; with
  ``deactivate_prompt_language`` Y's neurons are deactivated too);
- ``unconditional=N``: N samples from the BOS token alone, normal once and with each X activated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.progress import Progress, progress_bar
from langneurons.sets.output import (
    Figure,
    Output,
    Records,
    Table,
    read_output_meta,
    read_records,
    read_table,
    register_kind,
    write_records,
)
from langneurons.errors import LangNeuronsError
from langneurons.evaluation.generation import (
    Condition,
    GenerationSettings,
    generate_texts,
    generate_unconditional,
    start_token_id,
)
from langneurons.evaluation.langid import LanguageIdentifier, get_identifier
from langneurons.model.loading import LoadedModel
from langneurons.recording.parallel_run import active_run, current_run, model_key

SCHEMA_VERSION = 1
GENERATIONS_KIND = register_kind("generations", SCHEMA_VERSION, "generation records with detected languages")
ACCURACY_KIND = register_kind("language_accuracy", SCHEMA_VERSION, "rows languages, columns normal / steered")
GENERATIONS_FILE = "generations.jsonl"


@dataclass
class GenerationRecord:
    """One output: the prompt's language and line (or sample number), the condition and the detected language."""

    language: str | None
    index: int
    prompt: str
    input: str
    condition: str
    deactivate: list[str]
    activate: list[str]
    strength: float | None
    output: str
    detected_language: str | None
    judge_score: float | None = None
    judge_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PromptGroup:
    """Prompts that are generated together: questions of one language, or ``count`` unconditional samples."""

    name: str
    language: str | None
    questions: list[str] = field(default_factory=list)
    unconditional: int = 0


def generate_records(loaded: LoadedModel, groups: Sequence[PromptGroup], conditions: Sequence[Condition],
                     settings: GenerationSettings, neurons: Any = None, stats: Any = None,
                     identifier: LanguageIdentifier | None = None, judge: Any = None,
                     progress: "bool | Progress" = True) -> list[GenerationRecord]:
    """Generate every group under every condition; detect each output's language (and judge it, if asked).

    One bar over prompts x conditions (announced first); given a running :class:`~langneurons.progress.Progress`
    (a caller's overall bar), it counts on that one. Data parallel under torchrun: each rank generates its
    batches of every group (see :func:`langneurons.evaluation.generation.generate_texts`), every rank gets every
    record. A condition and group are one named unit of the run (resumed runs skip finished ones); the
    ``normal`` outputs come from the run's cache when the same model, settings and prompts were generated before.
    """
    with active_run():
        return _generate_records(loaded, groups, conditions, settings, neurons, stats, identifier, judge, progress)


def _generate_records(loaded: LoadedModel, groups: Sequence[PromptGroup], conditions: Sequence[Condition],
                      settings: GenerationSettings, neurons: Any, stats: Any, identifier: LanguageIdentifier | None,
                      judge: Any, progress: "bool | Progress") -> list[GenerationRecord]:
    identifier = identifier or get_identifier()
    edits = {condition.name: condition.edits(neurons, stats) for condition in conditions}  # fail before generating
    total = sum(len(g.questions) + g.unconditional for g in groups) * len(conditions)
    records: list[GenerationRecord] = []
    site_map = None
    if neurons is not None and any(edits.values()):
        from langneurons.model.sites import locate_site

        site_map = locate_site(loaded.model, neurons.site)
        neurons.check_shape(site_map.num_layers, site_map.width, what=f"model {loaded.name!r}")
    bos_text = loaded.tokenizer.convert_ids_to_tokens(start_token_id(loaded.tokenizer)) if any(
        g.unconditional for g in groups) else ""
    run = current_run()
    fingerprint = model_key(loaded.model) if run.cache is not None else None
    prompts = sum(len(g.questions) + g.unconditional for g in groups)
    factors = [(prompts, "prompts" if any(g.questions for g in groups) else "samples"),
               (len(conditions), "conditions")]
    shown = progress if isinstance(progress, Progress) else bool(progress) and run.is_main
    with progress_bar("generate", total, "gen", factors, shown) as bar:
        for condition in conditions:
            for group in groups:
                bar.describe(f"{condition.name} {group.name}")
                if group.unconditional:
                    def generate(group: PromptGroup = group, condition: Condition = condition) -> list[str]:
                        return generate_unconditional(loaded, group.unconditional, settings, edits[condition.name],
                                                      site_map=site_map, progress=bar)
                    items = [("", bos_text)] * group.unconditional
                else:
                    def generate(group: PromptGroup = group, condition: Condition = condition) -> list[str]:
                        return generate_texts(loaded, group.questions, settings, edits[condition.name],
                                              site_map=site_map, progress=bar)
                    items = [(q, settings.template.format(question=q)) for q in group.questions]
                key = _normal_key(fingerprint, loaded, settings, group) if condition.is_normal else None
                with run.scope(f"generate/{condition.name}/{group.name}"):
                    outputs = run.cached(key, generate)
                detected = identifier.detect_many(outputs)
                for index, ((question, text), output, code) in enumerate(zip(items, outputs, detected)):
                    records.append(GenerationRecord(
                        group.language, index, question, text, condition.name, list(condition.deactivate),
                        list(condition.activate), condition.strength if condition.activate else None, output, code))
    if judge is not None:
        judged = [record for record in records if record.prompt]
        names = "+".join(c.name for c in conditions) + "/" + "+".join(g.name for g in groups)
        with run.scope(f"judge/{names}"):
            scores = run.map(len(judged), lambda i: tuple(_judge(judge, judged[i])))
        for record, (score, reason) in zip(judged, scores):
            record.judge_score, record.judge_reason = score, reason
    return records


def _judge(judge: Any, record: GenerationRecord) -> tuple[float | None, str | None]:
    result = judge.score(record.prompt, record.output)
    return result.score, result.reason


def _normal_key(fingerprint: dict[str, Any] | None, loaded: LoadedModel, settings: GenerationSettings,
                group: PromptGroup) -> dict[str, Any] | None:
    """The cache key of a group's outputs without intervention (``None`` without a model fingerprint)."""
    if fingerprint is None:
        return None
    from langneurons._version import __version__
    from langneurons.recording.progress import digest

    tokenizer = loaded.tokenizer
    return {"what": "generations", "version": __version__, "model": fingerprint,
            "tokenizer": [getattr(tokenizer, "name_or_path", None), len(tokenizer)],
            "settings": settings.describe(), "questions": digest(group.questions),
            "unconditional": group.unconditional}


def write_generations(path: Path, records: Sequence[GenerationRecord]) -> None:
    """One JSON object per line (UTF-8, not ASCII-escaped)."""
    write_records(path, [record.to_json() for record in records])


def read_generations(path: str | Path) -> list[GenerationRecord]:
    """Records from a ``generations.jsonl``."""
    records = []
    for number, record in enumerate(read_records(path), 1):
        try:
            records.append(GenerationRecord(**record))
        except TypeError as exc:
            raise LangNeuronsError(f"{str(path)!r} record {number}: not a generation record ({exc})") from None
    return records


def _records(records: Sequence[GenerationRecord]) -> Records:
    return Records(GENERATIONS_FILE, "Every output: prompt, condition, output text, detected language",
                   [record.to_json() for record in records])


def save_generations(directory: str | Path, records: Sequence[GenerationRecord], meta: dict[str, Any],
                     force: bool = False) -> Path:
    """``generations.jsonl`` and ``meta.json`` (provenance), written atomically."""
    conditions = sorted({record.condition for record in records})
    summary = {"records": len(records), "conditions": conditions}
    return Output(GENERATIONS_KIND, meta.get("title") or "Generations", summary=summary,
                  meta={**meta, "records": len(records)}, records=[_records(records)]).save(directory, force=force)


def run_meta(loaded: LoadedModel, settings: GenerationSettings, identifier: LanguageIdentifier,
             conditions: Sequence[Condition], neurons: Any = None, stats: Any = None, judge: Any = None,
             prompts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Provenance shared by the generation artefacts: model, neurons, statistics, settings, identifier."""
    from langneurons.sets.compatibility import model_provenance

    meta: dict[str, Any] = {**model_provenance(loaded), "generation": settings.describe(),
                            "language_identifier": identifier.describe(),
                            "conditions": [c.describe(neurons, stats) for c in conditions]}
    if neurons is not None:
        meta["neurons"] = {"site": neurons.site, "method": neurons.method, "parameters": neurons.parameters,
                           "sizes": neurons.sizes(), "source": neurons.source}
    if stats is not None:
        meta["stats"] = {key: stats.meta.get(key) for key in ("model", "site", "corpus", "dtype") if key in stats.meta}
        meta["stats"]["token_count"] = dict(zip(stats.languages, stats.token_count.tolist()))
    if judge is not None:
        meta["judge"] = judge.describe()
    if prompts is not None:
        meta["prompts"] = prompts
    return meta


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
                      meta, records=[_records(self.records)])

    def save(self, directory: str | Path, plot: bool = True, force: bool = False) -> Path:
        """``language_accuracy.csv``, ``generations.jsonl``, ``meta.json``, ``language_accuracy.png``
        (and ``content_quality.csv`` when judged), atomically."""
        return self.output().save(directory, plot=plot, force=force)


def load_language_accuracy(directory: str | Path) -> LanguageAccuracy:
    """Read a result written by :meth:`LanguageAccuracy.save`."""
    root = Path(directory)
    meta = read_output_meta(root, ACCURACY_KIND, "a language-accuracy result")
    header, rows = read_table(root / "language_accuracy.csv")
    try:
        accuracy = torch.tensor([[float(v) if v else float("nan") for v in row[1:]] for row in rows],
                                dtype=torch.float64)
    except ValueError as exc:
        raise LangNeuronsError(f"{str(root)!r} is not a language-accuracy result: {exc}") from None
    records = read_generations(root / GENERATIONS_FILE)
    extra = {k: v for k, v in meta.items() if k not in ("languages", "columns", "counts")}
    return LanguageAccuracy([row[0] for row in rows], accuracy, meta.get("counts", {}), records, extra,
                            columns=tuple(header[1:]))


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
