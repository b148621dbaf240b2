"""MWork deactivation results in the layout of Tables 2-5 and 8-9 (Zhao et al. 2024), and the run that makes them.

:func:`mwork_deactivation` evaluates every condition of a :class:`~langneurons.analysis.mwork.DeactivationPlan`
on each evaluated language (its own neurons deactivated): perplexity on held-out text and the accuracy of any
task (:mod:`langneurons.evaluation.tasks`). :class:`MWorkResult` writes per metric ``{metric}.csv`` (rows
conditions, columns languages, English and the non-English mean), ``{metric}_delta.csv`` (Tables 2-5: setting,
method, per-language change, ``Δ_en``, ``Δ_non-en``, ``Δ↑``), a heatmap of the changes, ``sizes.csv`` (neurons
deactivated per condition and language, and their share of all neurons of the sites) and ``meta.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from langneurons.analysis.mwork import DeactivationPlan, split_condition
from langneurons.analysis.output import AnalysisOutput, Figure, Table, declare_kind, neuron_set_provenance, summary_of
from langneurons.errors import LangNeuronsError


def _headline(artefact: Any) -> str | None:
    return summary_of(artefact).get("headline")


KIND = declare_kind("mwork_deactivation", "MWork: deactivation by structure and layer band", 56,
                    "Language-specific neurons of the understanding layers, the task-solving attention (S-ATTN) and "
                    "FFN (S-FFN), and the generation layers deactivated, against random neurons of the same size "
                    "(Zhao et al. Tables 2-5, 8, 9).", _headline)


def _short(condition: str) -> str:
    """A condition as a short figure label (``no_shared@all_but_s_attn:lang-spec`` -> ``-shared all-S-ATTN LS``)."""
    for old, new in ((":lang-spec", " LS"), (":random", " rand"), ("all_but_s_attn", "all-S-ATTN"),
                     ("no_en_overlap@", "-en "), ("no_shared@", "-shared ")):
        condition = condition.replace(old, new)
    return condition


def _mean(values: Sequence[float]) -> float:
    values = [v for v in values if v == v]
    return sum(values) / len(values) if values else math.nan


@dataclass
class MWorkResult:
    """``values[metric]`` ``float64[conditions, languages]``; ``higher_is_better[metric]``; neuron counts."""

    conditions: list[str]
    languages: list[str]
    values: dict[str, torch.Tensor]
    higher_is_better: dict[str, bool]
    sizes: dict[str, dict[str, int]]
    total_neurons: int
    english: str = "en"
    meta: dict[str, Any] = field(default_factory=dict)

    def _groups(self) -> tuple[int | None, list[int]]:
        en = self.languages.index(self.english) if self.english in self.languages else None
        return en, [i for i in range(len(self.languages)) if i != en]

    def change(self, metric: str) -> torch.Tensor:
        """``float64[conditions, languages]``: accuracy minus normal, or perplexity / normal - 1."""
        values = self.values[metric]
        normal = values[self.conditions.index("normal")]
        return values - normal if self.higher_is_better[metric] else values / normal - 1

    def delta_rows(self, metric: str) -> list[list[Any]]:
        """Tables 2-5: ``setting, method, <lang changes>, Δ_en, Δ_non-en, Δ↑`` for every condition but normal."""
        change = self.change(metric)
        en, others = self._groups()
        rows = []
        for r, condition in enumerate(self.conditions):
            if condition == "normal":
                continue
            setting, kind = split_condition(condition)
            d_en = float(change[r, en]) if en is not None else math.nan
            d_non = _mean([float(change[r, i]) for i in others])
            up = d_en - d_non if self.higher_is_better[metric] else d_non - d_en
            rows.append([setting, kind, *change[r].tolist(), d_en, d_non, up])
        return rows

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for metric in self.values:
            per = {}
            for row in self.delta_rows(metric):
                per.setdefault(row[0], {})[row[1]] = {"delta_en": row[-3], "delta_non_en": row[-2], "delta_up": row[-1]}
            out[metric] = per
        shares = {c: _mean([n / self.total_neurons for n in by_lang.values()]) for c, by_lang in self.sizes.items()}
        out["share_of_neurons"] = shares
        first = next(iter(self.values), None)
        setting = "all" if first and "all" in out[first] else None
        if first and setting and {"random", "lang-spec"} <= set(out[first][setting]):
            spec, rand = out[first][setting]["lang-spec"], out[first][setting]["random"]
            unit = "points" if self.higher_is_better[first] else "relative"
            share = shares[f"{setting}:lang-spec"]
            out["headline"] = (f"Deactivating every language's neurons in all bands ({share:.2%} of the neurons)"
                               f" changes {first} by {spec['delta_non_en']:+.3g} (non-English) and "
                               f"{spec['delta_en']:+.3g} (English) ({unit}); random neurons of the same size: "
                               f"{rand['delta_non_en']:+.3g} and {rand['delta_en']:+.3g}.")
        return out

    def output(self) -> AnalysisOutput:
        tables, figures = [], []
        extra = [self.english, "non_en"]
        en, others = self._groups()
        for metric, values in self.values.items():
            name = metric.replace(":", "_")
            rows = [[c, *row, float(row[en]) if en is not None else math.nan, _mean([row[i] for i in others])]
                    for c, row in zip(self.conditions, values.tolist())]
            tables.append(Table(f"{name}.csv", f"{metric} per condition and evaluated language",
                                ["condition", *self.languages, *extra], rows,
                                rows_are="condition: normal, then {setting}:{random | lang-spec}",
                                columns_are=f"evaluated language (its own neurons deactivated); {self.english}; "
                                            "the non-English mean"))
            unit = "accuracy - normal" if self.higher_is_better[metric] else "perplexity / normal - 1"
            tables.append(Table(f"{name}_delta.csv", f"{metric}: change against normal (Tables 2-5 layout)",
                                ["setting", "method", *self.languages, "delta_en", "delta_non_en", "delta_up"],
                                self.delta_rows(metric), rows_are="setting and method (random / lang-spec)",
                                columns_are=f"change ({unit}) per language; Δ_en, Δ_non-en, Δ↑ (non-English hurt "
                                            "more than English)"))

            def draw(path: Path, metric: str = metric) -> None:
                from langneurons.analysis.figures import heatmap

                change = self.change(metric)
                keep = [i for i, c in enumerate(self.conditions) if c != "normal"]
                heatmap(change[keep], [_short(self.conditions[i]) for i in keep], self.languages, path,
                        f"{metric}: change against normal", "change", xlabel="evaluated language", diverging=True,
                        fmt="{:+.2f}")

            figures.append(Figure(f"{name}_delta.png", f"{metric}: change against normal", draw))
        size_rows = [[c, *(self.sizes.get(c, {}).get(lang, 0) for lang in self.languages),
                      _mean([self.sizes.get(c, {}).get(lang, 0) / self.total_neurons for lang in self.languages])]
                     for c in self.conditions]
        tables.append(Table("sizes.csv", "Neurons deactivated per condition and language", [
            "condition", *self.languages, "mean_share"], size_rows, rows_are="condition",
            columns_are=f"neurons deactivated; mean share of the {self.total_neurons} neurons of the sites"))
        meta = {"conditions": self.conditions, "languages": self.languages, "english": self.english,
                "higher_is_better": self.higher_is_better, "total_neurons": self.total_neurons, **self.meta}
        return AnalysisOutput(KIND, "MWork: deactivation by structure and layer band", tables, figures,
                              self.summary(), meta)

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        return self.output().save(directory, plot=plot)


def mwork_deactivation(loaded: Any, plan: DeactivationPlan, neurons: Any, packed: Any = None,
                       tasks: Sequence[Any] = (), languages: Sequence[str] | None = None, english: str = "en",
                       batch_size: int = 8, progress: bool = True) -> MWorkResult:
    """Perplexity on ``packed`` (a :class:`~langneurons.data.corpus.PackedCorpus`) and the accuracy of each task
    under every condition of ``plan``; each language is evaluated with its own neurons deactivated."""
    from langneurons.evaluation.perplexity import evaluate_conditions
    from langneurons.model.sites import locate_site

    if packed is None and not tasks:
        raise LangNeuronsError("MWork deactivation needs an evaluation corpus or a task")
    site_maps = {site: locate_site(loaded.model, site) for site in neurons.sites}
    for site, located in site_maps.items():
        neurons.check_shape(located.num_layers, located.width, what=f"model {loaded.name!r}", site=site)
    edit = plan.edit(loaded.model, site_maps)
    values: dict[str, torch.Tensor] = {}
    better: dict[str, bool] = {}
    from langneurons.sets.compatibility import model_provenance

    meta: dict[str, Any] = {"bands": plan.bands.describe(), "settings": {k: list(v) for k, v in plan.settings.items()},
                            **plan.meta, "neurons": neuron_set_provenance(neurons), **model_provenance(loaded)}
    langs = list(languages or (packed.languages if packed is not None else tasks[0].languages))
    missing = [lang for lang in langs if lang not in neurons.languages]
    if missing:
        raise LangNeuronsError(f"the neuron set has no language(s) {', '.join(missing)} to deactivate "
                               f"(has {', '.join(neurons.languages)})")
    if packed is not None:
        from langneurons.data.corpus import PackedCorpus

        chosen = PackedCorpus({lang: packed.windows[lang] for lang in langs}, packed.files, packed.seq_len,
                              packed.max_tokens)
        nll, tokens = evaluate_conditions(loaded.model, chosen, plan.conditions, edit, batch_size, progress)
        values["perplexity"], better["perplexity"] = nll.exp(), False
        meta["perplexity"] = {"tokens": tokens, **chosen.provenance()}
    for task in tasks:
        from langneurons.evaluation.tasks import evaluate_task

        task = task.select(langs) if hasattr(task, "select") else task
        result = evaluate_task(loaded, task, plan.conditions, edit, batch_size=batch_size, progress=progress)
        key = f"task:{task.name}"
        order = [result.languages.index(lang) for lang in langs]
        values[key], better[key] = result.accuracy[:, order], True
        meta[key] = {"metric": result.metric, "counts": result.counts, "settings": result.meta.get("task_settings")}
    total = sum(neurons.grid(site)[0] * neurons.grid(site)[1] for site in neurons.sites)
    sizes = {c: {lang: s.size(lang) for lang in langs} for c, s in plan.sets.items()}
    return MWorkResult(plan.conditions, langs, values, better, sizes, total, english, meta)
