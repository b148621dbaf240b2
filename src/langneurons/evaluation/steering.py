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


from langneurons.progress import Progress, progress_bar
from langneurons.sets.output import (
    Output,
    Records,
    read_records,
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


def records_output(records: Sequence[GenerationRecord]) -> Records:
    """The generation records as the ``generations.jsonl`` records of an :class:`~langneurons.sets.output.Output`."""
    return Records(GENERATIONS_FILE, "Every output: prompt, condition, output text, detected language",
                   [record.to_json() for record in records])


def save_generations(directory: str | Path, records: Sequence[GenerationRecord], meta: dict[str, Any],
                     force: bool = False) -> Path:
    """``generations.jsonl`` and ``meta.json`` (provenance), written atomically."""
    conditions = sorted({record.condition for record in records})
    summary = {"records": len(records), "conditions": conditions}
    return Output(GENERATIONS_KIND, meta.get("title") or "Generations", summary=summary,
                  meta={**meta, "records": len(records)},
                  records=[records_output(records)]).save(directory, force=force)


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


#: moved to :mod:`langneurons.evaluation.language_accuracy` (resolved lazily, so either import works)
_MOVED = {"LanguageAccuracy", "load_language_accuracy", "accuracy_bars", "steering_languages", "language_accuracy", "ACCURACY_KIND"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from langneurons.evaluation import language_accuracy

        return getattr(language_accuracy, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
