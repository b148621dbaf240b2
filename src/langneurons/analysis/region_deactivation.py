"""Table 1 of "Converging to a Lingua Franca": perplexity increase when a language's key region is deactivated.

With a task (:mod:`langneurons.evaluation.tasks`), the task's accuracy under the same conditions
(:func:`task_table`, ``task_accuracy.csv``: rows evaluated languages, columns the full model, the random set and
each region).

Rows: the evaluated languages. Columns: the full model's perplexity, then the increase (%) when a random set of
``random_percent`` % of all neurons of the site is deactivated, then the increase when each language's key region
is. The last two rows give the number of neurons deactivated by each column and their share of all neurons.
``increase = (PPL_condition / PPL_full - 1) * 100``. One seeded random set serves every evaluated language (the
paper's "Random 10%"), unlike the size-matched random row of :func:`~langneurons.evaluation.perplexity.perplexity_matrix`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.evaluation.perplexity import PerplexityMatrix, perplexity_matrix
from langneurons.methods.baselines import random_neuron_set
from langneurons.sets.neuronset import NeuronSet
from langneurons.sets.output import Figure, Table

#: the condition (and pseudo-language of the combined set) of the random set ("random" is the size-matched row
#: of perplexity_matrix)
RANDOM = "random_neurons"


def with_random_set(regions: NeuronSet, random_percent: float, seed: int = 0) -> NeuronSet:
    """``regions`` plus a language ``"random"``: ``random_percent`` % of all neurons of the site, seeded."""
    if len(regions.sites) != 1:
        raise LangNeuronsError("the deactivation table needs key regions of one site")
    if not 0 < float(random_percent) <= 100:
        raise LangNeuronsError(f"the random percentage must be in (0, 100], got {random_percent}")
    if RANDOM in regions.languages:
        raise LangNeuronsError(f"a language may not be called {RANDOM!r} (the random condition's name)")
    total = regions.num_layers * regions.width
    size = round(float(random_percent) / 100 * total)
    drawn = random_neuron_set({RANDOM: size}, regions.num_layers, regions.width, seed=seed, site=regions.site)
    layers = {lang: regions.layers(lang) for lang in regions.languages}
    layers[RANDOM] = drawn.layers(RANDOM)
    return NeuronSet(layers, regions.num_layers, regions.width, site=regions.site, method=regions.method,
                     parameters={**regions.parameters, "random_percent": float(random_percent), "random_seed": seed},
                     source=regions.source)


@dataclass
class DeactivationTable:
    """The perplexity matrix (rows ``normal``, ``random``, one per key region) and the sizes of what it deactivated."""

    matrix: PerplexityMatrix
    sizes: dict[str, int]  # neurons deactivated per condition (``random`` and every region language)
    total_neurons: int
    random_percent: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def regions(self) -> list[str]:
        return [c for c in self.matrix.conditions if c not in ("normal", RANDOM)]

    @property
    def evaluated(self) -> list[str]:
        return list(self.matrix.languages)

    def increase(self) -> torch.Tensor:
        """``float64[evaluated, 1 + regions]``: the increase (%) under ``random`` then each region."""
        change = self.matrix.change(relative=True) * 100  # [condition, evaluated]
        order = [self.matrix.conditions.index(c) for c in [RANDOM, *self.regions]]
        return change[order].T

    def own_increase(self) -> dict[str, float]:
        """The increase (%) of each language's perplexity when its own key region is deactivated (the diagonal)."""
        values = self.increase()
        return {lang: float(values[self.evaluated.index(lang), 1 + self.regions.index(lang)])
                for lang in self.regions if lang in self.evaluated}

    def summary(self) -> dict[str, Any]:
        own = self.own_increase()
        values = self.increase()
        off = [float(values[e, 1 + r]) for e, lang in enumerate(self.evaluated)
               for r, region in enumerate(self.regions) if region != lang]
        random_column = values[:, 0].tolist()

        def span(items: list[float]) -> list[float] | None:
            return [min(items), max(items)] if items else None

        return {"own_increase_percent": own, "own_increase_range": span(list(own.values())),
                "other_increase_range": span(off), "random_increase_range": span(random_column),
                "random_percent": self.random_percent}

    def tables(self) -> list[Table]:
        percent = f"{self.random_percent:g}"
        header = ["language", "full_model_perplexity", f"random_{percent}pct", *(f"x_{r}" for r in self.regions)]
        full = self.matrix.row("normal")
        rows: list[list[Any]] = [[lang, float(full[e]), *self.increase()[e].tolist()]
                                 for e, lang in enumerate(self.evaluated)]
        counts = [self.sizes[RANDOM], *(self.sizes[r] for r in self.regions)]
        rows.append(["key_neuron_number", None, *counts])
        rows.append(["key_neuron_percentage", None, *(100 * n / self.total_neurons for n in counts)])
        table = Table("deactivation.csv", "Perplexity increase (%) when a key region or a random set is deactivated "
                      "(Table 1)", header, rows, decimals=3, missing="",
                      rows_are="evaluated language; then the number and percentage of deactivated neurons",
                      columns_are=f"full-model perplexity, increase (%) with {percent}% random neurons deactivated, "
                                  "increase (%) with language x's key region deactivated")
        raw = Table("deactivation_perplexity.csv", "Perplexity per condition and evaluated language",
                    ["condition", *self.evaluated],
                    [[c, *row] for c, row in zip(self.matrix.conditions, self.matrix.perplexity.tolist())],
                    rows_are="condition: normal, random, then the language whose key region is deactivated",
                    columns_are="evaluated language (perplexity)")
        return [table, raw]

    def figures(self) -> list[Figure]:
        def draw(path: Path) -> None:
            from langneurons.analysis.figures import heatmap

            columns = [f"random {self.random_percent:g}%", *(f"x{r}" for r in self.regions)]
            heatmap(self.increase(), self.evaluated, columns, path, "Perplexity increase (%) after deactivation",
                    "increase (%)", xlabel="deactivated", ylabel="evaluated language", fmt="{:.0f}")

        return [Figure("deactivation.png", "Perplexity increase (%) after deactivation (Table 1)", draw)]


def deactivation_table(model: Any, corpus: Any, regions: NeuronSet, random_percent: float = 10.0, seed: int = 0,
                       langs: list[str] | None = None, max_tokens: int | None = None, seq_len: int | None = None,
                       batch_size: int = 8, progress: bool = True) -> DeactivationTable:
    """Table 1 on ``corpus`` (a folder of ``{lang}.txt`` files, or a packed corpus): every region deactivated in
    turn, and ``random_percent`` % of all neurons at random (``seed``); ``langs``: the evaluated languages."""
    combined = with_random_set(regions, random_percent, seed)
    matrix = perplexity_matrix(model, corpus, combined, langs=langs, max_tokens=max_tokens, seq_len=seq_len,
                               batch_size=batch_size, include_random=False,
                               deactivate_languages=[RANDOM, *regions.languages], progress=progress)
    matrix.meta["random"] = {"seed": seed, "percent": float(random_percent), "size": combined.size(RANDOM)}
    return DeactivationTable(matrix, combined.sizes(), regions.num_layers * regions.width, float(random_percent),
                             {"corpus": matrix.meta.get("corpus"), "random": matrix.meta["random"],
                              "parameters": matrix.meta.get("parameters")})


@dataclass
class TaskTable:
    """Task accuracy per evaluated language under ``normal``, the random set and each region (the conditions of
    :class:`DeactivationTable`)."""

    result: Any  # langneurons.evaluation.tasks.TaskResult
    regions: list[str]
    random_percent: float

    def accuracy(self) -> torch.Tensor:
        """``float64[language, 2 + regions]``: full model, random set, then each region deactivated."""
        order = ["normal", f"deactivate:{RANDOM}", *(f"deactivate:{r}" for r in self.regions)]
        return self.result.accuracy[[self.result.conditions.index(c) for c in order]].T

    def tables(self) -> list[Table]:
        percent = f"{self.random_percent:g}"
        header = ["language", "full_model", f"random_{percent}pct", *(f"x_{r}" for r in self.regions)]
        rows = [[lang, *values] for lang, values in zip(self.result.languages, self.accuracy().tolist())]
        return [Table("task_accuracy.csv", f"Task accuracy ({self.result.task}, {self.result.metric}) under the same "
                      "deactivations", header, rows, decimals=4,
                      rows_are="the task's language", columns_are=f"accuracy of the full model, with {percent}% random "
                      "neurons deactivated, with language x's key region deactivated")]

    def summary(self) -> dict[str, Any]:
        accuracy = self.accuracy()
        languages = self.result.languages
        own = {r: float(accuracy[languages.index(r), 2 + k]) for k, r in enumerate(self.regions) if r in languages}
        return {"task": self.result.task, "task_full_model": dict(zip(languages, accuracy[:, 0].tolist())),
                "task_random": dict(zip(languages, accuracy[:, 1].tolist())), "task_own_region": own}


def task_table(loaded: Any, task: Any, regions: NeuronSet, random_percent: float = 10.0, seed: int = 0,
               batch_size: int = 8, progress: bool = True) -> TaskTable:
    """``task`` (:class:`~langneurons.evaluation.tasks.Task`) scored under the conditions of Table 1."""
    from langneurons.evaluation.tasks import evaluate_task, neuron_conditions

    combined = with_random_set(regions, random_percent, seed)
    conditions, edit, meta = neuron_conditions(loaded, combined, [RANDOM, *regions.languages], include_random=False)
    result = evaluate_task(loaded, task, conditions, edit, batch_size=batch_size, progress=progress)
    result.meta.update(meta)
    return TaskTable(result, list(regions.languages), float(random_percent))
