"""Task accuracy per condition and language, in the layout of the perplexity matrix.

Rows are conditions (``normal``, ``random``, ``deactivate:X``, or any name an ``edit`` understands), columns
the task's languages; each entry is the share of that language's items scored right. Every condition but
``normal`` runs inside ``edit(condition, lang, column)``, a callable returning a context manager that changes
the forward pass reversibly (the same contract as
:func:`langneurons.evaluation.perplexity.evaluate_conditions`), so any intervention works.

On disk (:meth:`TaskResult.save`): ``accuracy.csv`` (``condition,<lang>,...``), ``items.jsonl`` (one line per
condition and item: id, language, correct, prediction, details) and ``meta.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.evaluation.tasks.items import Task
from langneurons.evaluation.tasks.scoring import BatchContext, ItemScore, score_items
from langneurons.progress import Progress, progress_bar
from langneurons.recording.parallel_run import active_run
from langneurons.sets.compatibility import model_provenance
from langneurons.sets.output import Figure, Output, Records, Table, read_matrix, read_output_meta, read_records, \
    register_kind

SCHEMA_VERSION = 1
KIND = register_kind("task_accuracy", SCHEMA_VERSION, "rows conditions, columns languages: task accuracy")
_OWN_KEYS = ("task", "metric", "conditions", "languages", "counts")

Edit = Callable[[str, str, int], AbstractContextManager]


@dataclass
class TaskResult:
    """``accuracy float64[len(conditions), len(languages)]``, item counts per language, and every item's score."""

    task: str
    metric: str
    conditions: list[str]
    languages: list[str]
    accuracy: torch.Tensor
    counts: dict[str, int]
    items: dict[str, list[ItemScore]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, condition: str) -> torch.Tensor:
        return self.accuracy[self.conditions.index(condition)]

    def output(self) -> Output:
        """The result in the one output style: ``accuracy.csv``, ``items.jsonl``, ``accuracy.png``."""
        table = Table("accuracy.csv", f"Accuracy on {self.task} ({self.metric}) per condition and language",
                      ["condition", *self.languages],
                      [[condition, *values] for condition, values in zip(self.conditions, self.accuracy.tolist())],
                      rows_are="condition: normal, random, then the language whose neurons are deactivated",
                      columns_are="language of the items (accuracy in [0, 1])")
        records = [{"condition": condition, **asdict(score)} for condition, scores in self.items.items()
                   for score in scores]

        def draw(path: Path) -> None:
            from langneurons.analysis.figures import heatmap

            heatmap(self.accuracy, self.conditions, self.languages, path, f"{self.task}: accuracy", "accuracy",
                    xlabel="language", ylabel="condition", vmin=0.0, vmax=1.0)

        summary = {"normal": dict(zip(self.languages, self.row("normal").tolist()))} \
            if "normal" in self.conditions else {}
        meta = {"task": self.task, "metric": self.metric, "conditions": self.conditions, "languages": self.languages,
                "counts": self.counts, **{k: v for k, v in self.meta.items() if k not in _OWN_KEYS}}
        return Output(KIND, f"Task accuracy: {self.task}", [table], [Figure("accuracy.png", "Accuracy", draw)],
                      summary, meta, records=[Records("items.jsonl", "Every item's score per condition", records)])

    def save(self, directory: str | Path, plot: bool = True, force: bool = False) -> Path:
        """Write ``accuracy.csv``, ``items.jsonl``, ``accuracy.png`` and ``meta.json`` atomically."""
        return self.output().save(directory, plot=plot, force=force)


def load_task_result(directory: str | Path) -> TaskResult:
    """Read a result written by :meth:`TaskResult.save`."""
    root = Path(directory)
    meta = read_output_meta(root, KIND, "a task result")
    conditions, languages, accuracy = read_matrix(root / "accuracy.csv", "a task result")
    items: dict[str, list[ItemScore]] = {}
    for data in read_records(root / "items.jsonl"):
        items.setdefault(data.pop("condition"), []).append(ItemScore(**data))
    return TaskResult(meta["task"], meta["metric"], conditions, languages, accuracy,
                      meta.get("counts", {}), items, {k: v for k, v in meta.items() if k not in _OWN_KEYS})


def _units(task: Task) -> int:
    return sum(len(item.options) for item in task.items) if task.metric == "choice" else len(task.items)


def accuracy_by_normalization(result: TaskResult) -> dict[str, dict[str, dict[str, float]]]:
    """For a choice task: ``{normalization: {condition: {lang: accuracy}}}`` for sum, token and char."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in ("sum", "token", "char"):
        for condition, scores in result.items.items():
            for lang in result.languages:
                mine = [s for s in scores if s.language == lang]
                value = sum(bool(s.details.get(f"correct_{name}")) for s in mine) / max(1, len(mine))
                out.setdefault(name, {}).setdefault(condition, {})[lang] = value
    return out


def evaluate_task(loaded: Any, task: Task, conditions: Sequence[str] = ("normal",), edit: Edit | None = None,
                  batch_size: int = 8, chunk_size: int | None = None, progress: bool = True,
                  batch_edit: Callable[[str, list], AbstractContextManager] | None = None) -> TaskResult:
    """Score every item of ``task`` under every condition; ``loaded`` is a :class:`LoadedModel` (model + tokenizer).

    ``edit(condition, lang, column)`` opens the intervention of a condition for one language's items;
    ``batch_edit(condition, row_items)``, when given, is opened around each forward batch instead (per-row
    interventions: row ``i`` of the batch scores ``row_items[i]``). ``normal`` runs the model as it is.

    Data parallel under torchrun (each rank scores its batches, see :mod:`~langneurons.evaluation.tasks.scoring`);
    each condition and language is a named unit of the run (a resumed run skips finished ones), and the
    ``normal`` row comes from the run's cache when the same model, items and batching were scored before.
    """
    with active_run() as run:
        result = _evaluate_task(run, loaded, task, conditions, edit, batch_size, chunk_size, progress, batch_edit)
        result.meta.update(run.report())
    return result


def _normal_key(fingerprint: dict[str, Any] | None, task: Task, lang: str, batch_size: int,
                chunk_size: int | None) -> dict[str, Any] | None:
    if fingerprint is None:
        return None
    from langneurons._version import __version__
    from langneurons.recording.progress import digest

    return {"what": "task", "version": __version__, "model": fingerprint, "task": task.describe(),
            "items": digest([asdict(item) for item in task.by_language(lang)]), "language": lang,
            "batch_size": batch_size, "chunk_size": chunk_size}


def _evaluate_task(run: Any, loaded: Any, task: Task, conditions: Sequence[str], edit: Edit | None, batch_size: int,
                   chunk_size: int | None, progress: bool,
                   batch_edit: Callable[[str, list], AbstractContextManager] | None) -> TaskResult:
    from langneurons.recording.parallel_run import model_key

    task.validate()
    conditions = list(conditions)
    if len(set(conditions)) != len(conditions):
        raise LangNeuronsError(f"conditions repeat: {conditions}")
    if any(c != "normal" for c in conditions) and edit is None and batch_edit is None:
        raise LangNeuronsError("conditions other than 'normal' need an edit")
    model, tokenizer = loaded.model, loaded.tokenizer
    languages = task.languages
    accuracy = torch.zeros(len(conditions), len(languages), dtype=torch.float64)
    items: dict[str, list[ItemScore]] = {}
    fingerprint = model_key(loaded.model) if run.cache is not None else None
    factors = [(len(conditions), "conditions"), (_units(task), "rows")]
    shown = progress if isinstance(progress, Progress) else bool(progress) and run.is_main
    with progress_bar(f"task {task.name}", _units(task) * len(conditions), "row", factors, shown) as bar:
        for r, condition in enumerate(conditions):
            items[condition] = []
            for c, lang in enumerate(languages):
                bar.describe(f"{condition}->{lang}")
                normal = condition == "normal"
                per_batch: BatchContext | None = None
                if batch_edit is not None and not normal:
                    per_batch = lambda rows, condition=condition: batch_edit(condition, rows)  # noqa: E731
                opened = nullcontext() if normal or per_batch is not None else edit(condition, lang, c)

                def score(per_batch: BatchContext | None = per_batch, lang: str = lang) -> list[dict[str, Any]]:
                    return [asdict(s) for s in score_items(model, tokenizer, task, task.by_language(lang), batch_size,
                                                           chunk_size, per_batch, bar)]

                key = _normal_key(fingerprint, task, lang, batch_size, chunk_size) if normal else None
                with run.scope(f"task/{condition}/{lang}"), opened:
                    scores = [ItemScore(**data) for data in run.cached(key, score)]
                accuracy[r, c] = sum(s.correct for s in scores) / len(scores)
                items[condition].extend(scores)
    counts = {lang: len(task.by_language(lang)) for lang in languages}
    meta = {**(model_provenance(loaded) if hasattr(loaded, "provenance") else {}), "task_settings": task.describe(),
            "parameters": {"batch_size": batch_size, "chunk_size": chunk_size}}
    result = TaskResult(task.name, task.metric, conditions, languages, accuracy, counts, items, meta)
    if task.metric == "choice":
        result.meta["accuracy_by_normalization"] = accuracy_by_normalization(result)
    return result


def neuron_conditions(loaded: Any, neurons: Any, deactivate_languages: Sequence[str] | None = None,
                      include_random: bool = True, random_seed: int = 0) -> tuple[list[str], Edit, dict[str, Any]]:
    """Conditions ``normal``, ``random``, ``deactivate:X`` for a neuron set, their ``edit`` and their provenance.

    As in the perplexity matrix, the ``random`` row deactivates, for column ``lang``, a seeded random set as
    large as ``lang``'s own (or, for a language the set does not have, the sets in turn).
    """
    from langneurons.evaluation.perplexity import random_language
    from langneurons.interventions.neurons import deactivate
    from langneurons.methods.baselines import random_like
    from langneurons.model.sites import locate_site

    site_map = locate_site(loaded.model, neurons.site)
    neurons.check_shape(site_map.num_layers, site_map.width, what=f"model {loaded.name!r}")
    rows = list(deactivate_languages) if deactivate_languages is not None else list(neurons.languages)
    for lang in rows:
        neurons.layers(lang)  # clear error for an unknown language
    random_set = random_like(neurons, seed=random_seed) if include_random else None

    def edit(condition: str, lang: str, column: int) -> AbstractContextManager:
        if condition == "random":
            return deactivate(loaded.model, random_set, random_language(random_set.languages, lang, column),
                              site_map=site_map)
        if condition.startswith("deactivate:"):
            return deactivate(loaded.model, neurons, condition.split(":", 1)[1], site_map=site_map)
        raise LangNeuronsError(f"unknown condition {condition!r}")

    conditions = ["normal"] + (["random"] if include_random else []) + [f"deactivate:{lang}" for lang in rows]
    meta = {"site": neurons.site,
            "neurons": {"method": neurons.method, "parameters": neurons.parameters, "sizes": neurons.sizes(),
                        "source": neurons.source},
            "random": {"seed": random_seed, "sizes": random_set.sizes() if random_set else None}}
    return conditions, edit, meta


def task_accuracy(model: Any, task: Task, neurons: Any = None, deactivate_languages: Sequence[str] | None = None,
                  include_random: bool = True, random_seed: int = 0, batch_size: int = 8,
                  chunk_size: int | None = None, tokenizer: Any = None, progress: bool = True, **load: Any
                  ) -> TaskResult:
    """:func:`evaluate_task` with the neuron-set conditions (just ``normal`` without ``neurons``).

    ``model`` is a path / hub id (``load`` goes to :func:`langneurons.model.loading.as_loaded`), a model with
    ``tokenizer``, or a :class:`LoadedModel`.
    """
    from langneurons.model.loading import as_loaded

    loaded = as_loaded(model, tokenizer, **load)
    if neurons is None:
        conditions, edit, meta = ["normal"], None, {}
    else:
        conditions, edit, meta = neuron_conditions(loaded, neurons, deactivate_languages, include_random, random_seed)
    result = evaluate_task(loaded, task, conditions, edit, batch_size, chunk_size, progress)
    result.meta.update(meta)
    return result
