"""The output of a Sharing Matters run: tables, figures, summary and report section (one output style).

Files (``OUT/``): ``types_by_layer.csv`` (``layer,all_shared,partial_shared,specific,non_activated``, each row
sums to 1; Figure 2 left), ``types_by_language.csv`` (Figure 2 right), ``persistence.csv`` (Figure 5),
``dead_neurons.csv`` (Figure 6), ``types_by_threshold.csv`` (Figure 22), ``types_by_language_count.csv``
(Figure 19), ``contribution.csv`` (Figures 8, 9), ``effective.csv`` (Tables 1, 4 in the ``layer=all`` rows,
Figure 10), ``deactivation.csv`` and ``conversion.csv`` (Tables 2, 3: ``condition,<lang>,...``, accuracy in
[0, 1]), ``intervention_sizes.csv`` (neurons per row), ``item_types.npy`` (``int32[items, layers, 4]``),
``intervention_items.jsonl``, the figures and ``meta.json`` (what was skipped and why, in ``skipped``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from langneurons.analysis.figures import heatmap, line_plot, small_multiples
from langneurons.analysis.output import Array, Figure, Output, Records, Table, declare_kind, summary_of
from langneurons.analysis.sharing import SharingAccumulator
from langneurons.methods.neuron_types import TYPES


def _headline(artefact: Any) -> str | None:
    summary = summary_of(artefact)
    share = summary.get("mean_share")
    if not isinstance(share, dict) or "all_shared" not in share:
        return None
    text = (f"All-shared neurons are {share['all_shared']:.2%} of the FFN neurons on average over layers "
            f"(partial-shared {share.get('partial_shared', math.nan):.2%}, specific "
            f"{share.get('specific', math.nan):.2%}, non-activated {share.get('non_activated', math.nan):.2%})")
    accuracy = summary.get("deactivation_mean_accuracy")
    if isinstance(accuracy, dict) and "normal" in accuracy and "all_shared" in accuracy:
        text += (f"; deactivating each item's all-shared neurons moves mean accuracy from {accuracy['normal']:.3f} "
                 f"to {accuracy['all_shared']:.3f} (the same number of random neurons: "
                 f"{accuracy.get('random_all_shared', math.nan):.3f})")
    return text + "."


KIND = declare_kind("sharing_matters", "Sharing Matters: neuron types across languages", 70,
                    "Four types of FFN neurons per item across its translations (all-shared, partial-shared, "
                    "specific, non-activated), their contribution and effective scores, and task accuracy when "
                    "each item's neurons of a type are deactivated or converted (Wang et al. 2024).", _headline)


def _f(value: float) -> float:
    return float(value)


@dataclass
class SharingResult:
    """Everything a run computed; ``output()`` is its :class:`~langneurons.analysis.output.Output`."""

    accumulator: SharingAccumulator
    meta: dict[str, Any] = field(default_factory=dict)
    dead: Any = None  # DeadTokens
    interventions: dict[str, Any] = field(default_factory=dict)  # {family: TaskResult}
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return self.accumulator.languages

    @property
    def num_layers(self) -> int:
        return self.accumulator.num_layers

    # -- tables -------------------------------------------------------------------------------------------
    def tables(self) -> list[Table]:
        acc, layers = self.accumulator, range(self.num_layers)
        out = [Table("types_by_layer.csv", "Share of each layer's neurons of each type, averaged over items",
                     ["layer", *TYPES], [[layer, *acc.types_by_layer()[layer].tolist()] for layer in layers],
                     "layers", "types")]
        by_language = acc.types_by_language()
        rows = []
        for k, lang in enumerate(self.languages):
            for layer in layers:
                values = by_language[k, layer]
                rows += [[lang, layer, name, _f(values[t])] for t, name in enumerate(TYPES[:3])]
                rows.append([lang, layer, "active", _f(values.sum())])
        out.append(Table("types_by_language.csv", "Per language: share of the layer's neurons active in it, by type",
                         ["language", "layer", "type", "share"], rows, "language x layer x type", "share"))
        persistence, average = acc.persistence(), acc.types_by_layer()
        out.append(Table("persistence.csv", "Neurons with the same type in every item (overlap) vs average share",
                         ["layer", "type", "overlap", "average"],
                         [[layer, name, _f(persistence[layer, t]), _f(average[layer, t])]
                          for layer in layers for t, name in enumerate(TYPES)], "layer x type", "share"))
        if self.dead is not None:
            out.append(self._dead_table())
        sweep = acc.threshold_sweep()
        out.append(Table("types_by_threshold.csv", "Types at each activation threshold (Figure 22)",
                         ["threshold", "layer", *TYPES],
                         [[_f(t), layer, *sweep[j, layer].tolist()] for j, t in enumerate(acc.settings.thresholds)
                          for layer in layers], "threshold x layer", "types"))
        subsets = acc.language_subsets()
        out.append(Table("types_by_language_count.csv", "Types on the first m languages (Figure 19)",
                         ["languages", "layer", *TYPES],
                         [[m, layer, *subsets[j, layer].tolist()] for j, m in enumerate(acc.counts_)
                          for layer in layers], "language count x layer", "types"))
        if "contribution" not in self.skipped:
            out.append(self._contribution_table())
        if acc.has_effective:
            out.append(self._effective_table())
        for family, result in self.interventions.items():
            out.append(Table(f"{family}.csv", f"Accuracy under {family} by type, per language",
                             ["condition", *result.languages],
                             [[c, *row] for c, row in zip(result.conditions, result.accuracy.tolist())],
                             "conditions", "languages"))
        if self.interventions:
            rows = [[family, name, *[_f(v) for v in per_lang.values()]]
                    for family, result in self.interventions.items()
                    for name, per_lang in result.meta.get("sizes", {}).items()]
            out.append(Table("intervention_sizes.csv", "Mean number of neurons edited per row", ["family", "condition",
                             *self.languages], rows, "family x condition", "languages", decimals=2))
        return out

    def _dead_table(self) -> Table:
        acc, dead = self.accumulator, self.dead
        width, items, k = acc.width, acc.items, len(self.languages)
        every_token = dead.dead.double().sum((0, 1)) / (k * items * width)
        inactive = acc.inactive_last.sum(0) / (k * items * width)
        every_language = dead.dead_every_language.double().sum(0) / (items * width)
        non_activated = acc.types_by_layer()[:, TYPES.index("non_activated")]
        rows = [[layer, _f(every_token[layer]), _f(inactive[layer]),
                 _f(every_token[layer] / inactive[layer]) if inactive[layer] > 0 else math.nan,
                 _f(every_language[layer]), _f(non_activated[layer]),
                 _f(every_language[layer] / non_activated[layer]) if non_activated[layer] > 0 else math.nan]
                for layer in range(self.num_layers)]
        return Table("dead_neurons.csv", "Neurons inactive at every token of an input (Figure 6)",
                     ["layer", "dead_every_token", "inactive_last_token", "dead_of_inactive", "dead_every_language",
                      "non_activated", "dead_of_non_activated"], rows, "layers", "shares of the layer's neurons")

    def _contribution_table(self) -> Table:
        scores = self.accumulator.contribution()
        rows = []
        names = [*self.languages, "all"]
        for k, lang in enumerate(names):
            for layer in range(self.num_layers):
                for t, name in enumerate(TYPES):
                    if lang == "all":
                        values = [scores[key][:, layer, t].mean() for key in ("mean", "sum", "top_share")]
                    else:
                        values = [scores[key][k, layer, t] for key in ("mean", "sum", "top_share")]
                    rows.append([lang, layer, name, *map(_f, values)])
        return Table("contribution.csv", "Contribution score by type (mean, sum per item, share of the top "
                     f"{self.accumulator.settings.top:.0%})", ["language", "layer", "type", "mean", "sum", "top_share"],
                     rows, "language x layer x type", "statistics", decimals=8)

    def _effective_table(self) -> Table:
        acc = self.accumulator
        per_layer, overall = acc.effective(), acc.effective_overall()
        rows = []
        for k, lang in enumerate(self.languages):
            for t, name in enumerate(TYPES):
                rows.append([lang, "all", name, *[_f(overall[key][k, t]) for key in ("max", "min", "mean")]])
            for layer in range(self.num_layers):
                for t, name in enumerate(TYPES):
                    rows.append([lang, layer, name, *[_f(per_layer[key][k, layer, t]) for key in ("max", "min", "mean")]])
        return Table("effective.csv", "Effective score E_r . (A_i v_i) by type", ["language", "layer", "type", "max",
                     "min", "mean"], rows, "language x layer (all = every layer) x type", "statistics", decimals=8)

    # -- figures ------------------------------------------------------------------------------------------
    def figures(self) -> list[Figure]:
        acc = self.accumulator
        layers = list(range(self.num_layers))
        by_layer = acc.types_by_layer()
        series = lambda values: {name: values[:, t].tolist() for t, name in enumerate(TYPES)}  # noqa: E731
        figures = [Figure("types_by_layer.png", "Neuron types by layer (Figure 2 left)", lambda p: line_plot(
            layers, series(by_layer), p, "Share of neurons by type", "layer", "share"))]
        active = acc.types_by_language().sum(-1)
        figures.append(Figure("types_by_language.png", "Active neurons by language (Figure 2 right)", lambda p: line_plot(
            layers, {lang: active[k].tolist() for k, lang in enumerate(self.languages)}, p,
            "Share of neurons active in each language", "layer", "share")))
        overlap = acc.persistence()
        figures.append(Figure("persistence.png", "Same type in every item (Figure 5)", lambda p: small_multiples(
            {name: {"overlap": overlap[:, t].tolist(), "average": by_layer[:, t].tolist()}
             for t, name in enumerate(TYPES)}, p, "Neurons keeping their type over the test set", "layer", "share")))
        if self.dead is not None:
            table = self._dead_table()
            figures.append(Figure("dead_neurons.png", "Dead at every token (Figure 6)", lambda p: line_plot(
                layers, {"dead at every token": [row[1] for row in table.rows],
                         "dead in every language, of non-activated": [row[6] for row in table.rows]}, p,
                "Neurons inactive at every token of the input", "layer", "share")))
        sweep = acc.threshold_sweep()
        figures.append(Figure("types_by_threshold.png", "Types by threshold (Figure 22)", lambda p: small_multiples(
            {f"threshold {t:g}": series(sweep[j]) for j, t in enumerate(acc.settings.thresholds)}, p,
            "Neuron types at each activation threshold", "layer", "share")))
        subsets = acc.language_subsets()
        figures.append(Figure("types_by_language_count.png", "Types by number of languages (Figure 19)",
                              lambda p: small_multiples({name: {f"{m} languages": subsets[j, :, t].tolist()
                                                                for j, m in enumerate(acc.counts_)}
                                                         for t, name in enumerate(TYPES)}, p,
                                                        "Neuron types on growing language subsets", "layer", "share")))
        if "contribution" not in self.skipped:
            scores = acc.contribution()
            figures.append(Figure("contribution_top.png", "Types among the top contributors (Figure 8)",
                                  lambda p: small_multiples({lang: series(scores["top_share"][k])
                                                             for k, lang in enumerate(self.languages)}, p,
                                                            f"Type shares among each layer's top {acc.settings.top:.0%} "
                                                            "contributors", "layer", "share")))
            figures.append(Figure("contribution_mean_sum.png", "Mean and sum of contribution by type (Figure 9)",
                                  lambda p: small_multiples({"mean": series(scores["mean"].mean(0)),
                                                             "sum per item": series(scores["sum"].mean(0))}, p,
                                                            "Contribution score by type (mean over languages)",
                                                            "layer", "contribution")))
        if acc.has_effective:
            high = acc.effective()["max"].amax(0)
            figures.append(Figure("effective_max.png", "Maximum effective score by type (Figure 10)", lambda p: line_plot(
                layers, series(high), p, "Maximum effective score by type", "layer", "E_r . A_i v_i")))
        for family, result in self.interventions.items():
            figures.append(Figure(f"{family}.png", f"Accuracy under {family} (Tables 2, 3)",
                                  lambda p, r=result, f=family: heatmap(r.accuracy, r.conditions, r.languages, p,
                                                                        f"Accuracy under {f} by type", "accuracy",
                                                                        vmin=0.0, vmax=1.0)))
        return figures

    # -- summary and output ---------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        acc = self.accumulator
        by_layer = acc.types_by_layer()
        summary: dict[str, Any] = {
            "items": acc.items, "languages": self.languages,
            "mean_share": {name: _f(by_layer[:, t].mean()) for t, name in enumerate(TYPES)},
            "all_shared_peak_layer": int(by_layer[:, 0].argmax()),
            "overlap_mean": {name: _f(acc.persistence()[:, t].mean()) for t, name in enumerate(TYPES)}}
        if "contribution" not in self.skipped:
            total = acc.contribution()["sum"].sum(-1, keepdim=True)
            share = (acc.contribution()["sum"] / total.clamp_min(1e-300)).mean((0, 1))
            summary["contribution_share"] = {name: _f(share[t]) for t, name in enumerate(TYPES)}
        if acc.has_effective:
            overall = acc.effective_overall()
            summary["effective_max"] = {name: _f(overall["max"][:, t].max()) for t, name in enumerate(TYPES)}
        for family, result in self.interventions.items():
            summary[f"{family}_mean_accuracy"] = {c: _f(row.mean()) for c, row in zip(result.conditions,
                                                                                       result.accuracy)}
        if self.skipped:
            summary["skipped"] = dict(self.skipped)
        return summary

    def records(self) -> list[dict[str, Any]]:
        out = []
        for family, result in self.interventions.items():
            for condition, scores in result.items.items():
                for score in scores:
                    out.append({"family": family, "condition": condition, "id": score.id, "language": score.language,
                                "correct": score.correct, "prediction": score.prediction})
        return out

    def output(self) -> Output:
        arrays = [Array("item_types.npy", "Type counts per item and layer", self.accumulator.item_types(),
                        "item x layer", "types (all_shared, partial_shared, specific, non_activated)", "int32")]
        records = [Records("intervention_items.jsonl", "Every scored item under every condition", self.records())] \
            if self.interventions else []
        meta = {**self.meta, "skipped": dict(self.skipped)}
        return Output(KIND, "Sharing Matters: neuron types across languages and tasks", self.tables(), self.figures(),
                      self.summary(), meta, arrays=arrays, records=records)

    def save(self, directory: str | Path, plot: bool = True, force: bool = False) -> Path:
        return self.output().save(directory, plot=plot, force=force)
