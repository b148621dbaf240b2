"""The lingua franca metrics over training checkpoints and model sizes (Zeng et al. 2024, Figures 4, 5 and 7).

Each point (a checkpoint or a model) gets the same analysis as the main model on the same items: LRDS and SADS
(whole model and per layer), the key regions at the same threshold, SKLR and the key neurons per layer. A
checkpoint is a local model folder or a hub revision of the main model; its step is the last number in its name
(``checkpoint-2000`` -> 2000, ``global_step1000`` -> 1000), or its place in the list when a name has none. Models
of several sizes are placed by their number of parameters. The points are independent items: one model is
loaded, measured and released at a time (:func:`measure_point`).
"""

from __future__ import annotations

import gc
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError
from langneurons.sets.output import Figure, Table

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass
class ModelPoint:
    """One model to measure: ``label`` (as given), the model (path or hub id) and its revision."""

    label: str
    model: str
    revision: str | None = None

    @property
    def step(self) -> int | None:
        found = _LAST_NUMBER.search(Path(self.label.rstrip("/")).name or self.label)
        return int(found.group(1)) if found else None


@dataclass
class PointGroup:
    """``name``: ``evolution`` (checkpoints, by step) or ``scale`` (models, by parameters)."""

    name: str
    points: list[ModelPoint]


def _looks_local(text: str) -> bool:
    return os.path.sep in text or text.startswith(".") or os.path.exists(text)


def model_points(model: Any, checkpoints: list[str], models: list[str], revision: str | None = None
                 ) -> list[PointGroup]:
    """Checked points: a checkpoint that is an existing folder is that model, otherwise a hub revision of ``model``
    (a one-line error when ``model`` is a local folder or a model object, which have no revisions)."""
    name = str(model) if isinstance(model, (str, os.PathLike)) else getattr(model, "name", None)
    training = []
    for item in checkpoints:
        item = str(item)
        if os.path.isdir(item):
            training.append(ModelPoint(item, item))
        elif name is None or os.path.isdir(name):
            raise LangNeuronsError(f"checkpoint {item!r} is not a model folder (and the main model has no hub "
                                   "revisions)")
        elif os.path.sep in item or item.startswith("."):
            raise LangNeuronsError(f"checkpoint {item!r} does not exist")
        else:
            training.append(ModelPoint(item, name, item))
    sizes = []
    for item in models:
        item = str(item)
        if _looks_local(item) and not os.path.isdir(item):
            raise LangNeuronsError(f"model {item!r} does not exist")
        sizes.append(ModelPoint(item, item))
    return [PointGroup("evolution", training), PointGroup("scale", sizes)]


@dataclass
class PointResult:
    """The metrics of one point."""

    label: str
    step: int | None
    parameters: int
    lrds: float
    sads: float
    layer_lrds: list[float]
    layer_sads: list[float]
    layer_counts: list[int]  # key neurons per layer, summed over languages
    sizes: dict[str, int]  # key neurons per language
    total_neurons: int
    provenance: dict[str, Any] = field(default_factory=dict)
    task_accuracy: dict[str, float] | None = None  # the task's accuracy per language, unedited, when a task is given

    @property
    def sklr(self) -> int:
        return sum(self.sizes.values())


def _load_error(point: ModelPoint, exc: BaseException) -> LangNeuronsError:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    prefix = f"cannot load model {point.model!r}: "
    text = text[len(prefix):] if text.startswith(prefix) else text
    return LangNeuronsError(f"checkpoint {point.label!r} does not load: {text}")


def check_points(groups: list[PointGroup]) -> None:
    """Read every point's configuration (cheap) so that a checkpoint that cannot load fails before any work."""
    from transformers import AutoConfig

    for group in groups:
        for point in group.points:
            try:
                AutoConfig.from_pretrained(point.model, revision=point.revision)
            except Exception as exc:  # OSError, ValueError, JSON errors: the loader's own types
                raise _load_error(point, exc) from None


def load_point(point: ModelPoint, **placement: Any):
    """The point's model, or a one-line error naming it."""
    from langneurons.model.loading import load_model

    try:
        return load_model(point.model, revision=point.revision, **placement)
    except Exception as exc:  # a broken weights file raises the loader's own error types
        raise _load_error(point, exc) from None


def measure_point(point: ModelPoint, parallel: Any, threshold: float = 2.0, placement: dict | None = None,
                  progress: bool = True, task: Any = None, task_batch_size: int = 8, **settings: Any) -> PointResult:
    """Load ``point``, record its vectors on ``parallel``, and compute its metrics (one independent item); with
    ``task`` (a :class:`~langneurons.evaluation.tasks.Task`), also its accuracy."""
    from langneurons.analysis.lingua_franca import activation_vectors, analyse_vectors

    loaded = load_point(point, **(placement or {}))
    try:
        vectors = activation_vectors(loaded, parallel, progress=progress, **settings)
        scores, regions = analyse_vectors(vectors, threshold)
        counts = regions.layer_counts().sum(0)
        result = PointResult(point.label, point.step, int(loaded.provenance()["num_parameters"]), scores.lrds,
                             scores.sads, scores.layer_lrds.tolist(), scores.layer_sads.tolist(), counts.tolist(),
                             regions.sizes(), regions.num_layers * regions.width,
                             {k: v for k, v in loaded.provenance().items() if k != "device"})
        if task is not None:
            from langneurons.evaluation.tasks import evaluate_task

            scored = evaluate_task(loaded, task, ["normal"], batch_size=task_batch_size, progress=progress)
            result.task_accuracy = dict(zip(scored.languages, scored.accuracy[0].tolist()))
    finally:
        del loaded
        gc.collect()
    return result


@dataclass
class Evolution:
    """The metrics of every point of a group, in the order given."""

    name: str
    points: list[PointResult]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def axis(self) -> str:
        """``parameters`` (models), ``step`` (checkpoints with numbers) or ``order`` (their place in the list)."""
        if self.name == "scale":
            return "parameters"
        return "step" if all(p.step is not None for p in self.points) else "order"

    def x(self) -> list[float]:
        if self.axis == "parameters":
            return [float(p.parameters) for p in self.points]
        if self.axis == "step":
            return [float(p.step) for p in self.points]
        return [float(i) for i in range(len(self.points))]

    @property
    def has_task(self) -> bool:
        return bool(self.points) and all(p.task_accuracy for p in self.points)

    def mean_task_accuracy(self) -> list[float]:
        return [sum(p.task_accuracy.values()) / len(p.task_accuracy) for p in self.points] if self.has_task else []

    def summary(self) -> dict[str, Any]:
        summary = {"axis": self.axis, "points": [p.label for p in self.points], "x": self.x(),
                   "lrds": [p.lrds for p in self.points], "sads": [p.sads for p in self.points],
                   "sklr": [p.sklr for p in self.points]}
        if self.has_task:
            summary["task_accuracy"] = self.mean_task_accuracy()
        return summary

    def tables(self) -> list[Table]:
        languages = list(dict.fromkeys(lang for p in self.points for lang in p.sizes))
        task = ["task_accuracy"] if self.has_task else []
        accuracy = self.mean_task_accuracy()
        rows = [[p.label, x, p.lrds, p.sads, p.sklr, 100 * p.sklr / p.total_neurons, *accuracy[i:i + 1],
                 *(p.sizes.get(lang, 0) for lang in languages)] for i, (p, x) in enumerate(zip(self.points, self.x()))]
        what = "checkpoint" if self.name == "evolution" else "model"
        main = Table(f"{self.name}.csv", f"LRDS, SADS and SKLR per {what} (Figure {4 if what == 'checkpoint' else 7})",
                     ["point", self.axis, "lrds", "sads", "sklr", "sklr_percent", *task, *languages], rows,
                     rows_are=f"{what}, in the order given",
                     columns_are=f"{self.axis}, LRDS, SADS, SKLR, SKLR as % of the site's neurons, "
                                 + ("the task's accuracy (mean over languages), " if task else "")
                                 + "key neurons per language")
        layer_rows = [[p.label, layer, p.layer_lrds[layer], p.layer_sads[layer], p.layer_counts[layer]]
                      for p in self.points for layer in range(len(p.layer_counts))]
        layers = Table(f"{self.name}_layers.csv", f"Per-layer LRDS, SADS and key neurons per {what} (Figure 5)",
                       ["point", "layer", "lrds", "sads", "key_neurons"], layer_rows,
                       rows_are=f"({what}, layer)", columns_are="LRDS, SADS, key neurons (all languages)")
        return [main, layers]

    def figures(self) -> list[Figure]:
        from langneurons.analysis import lingua_franca_plots as plots

        xlabel = {"parameters": "parameters", "step": "training step", "order": "checkpoint"}[self.axis]
        labels = [p.label if len(p.label) < 24 else Path(p.label.rstrip("/")).name for p in self.points]
        panels = {"LRDS (language)": [p.lrds for p in self.points], "SKLR (key neurons)": [p.sklr for p in self.points],
                  "SADS (meaning)": [p.sads for p in self.points]}
        if self.has_task:
            panels["task accuracy"] = self.mean_task_accuracy()
        title = "Over training" if self.name == "evolution" else "Over model size"
        return [
            Figure(f"{self.name}.png", f"LRDS, SKLR and SADS {title.lower()} (Figures 4, 7)",
                   lambda path: plots.evolution_figure(self.x(), panels, path, title, xlabel,
                                                       labels if self.axis == "order" else None,
                                                       log_x=self.axis == "parameters")),
            Figure(f"{self.name}_layers.png", f"Key neurons per layer {title.lower()} (Figure 5)",
                   lambda path: plots.layer_lines({label: p.layer_counts for label, p in zip(labels, self.points)},
                                                  path, f"Key neurons per layer, {title.lower()}", "key neurons")),
        ]


def evolution(group: PointGroup, parallel: Any, threshold: float = 2.0, device: Any = None, dtype: Any = None,
              device_map: Any = None, offload_folder: Any = None, progress: bool = True, storage_dir: Any = None,
              task: Any = None, task_batch_size: int = 8, **settings: Any) -> Evolution:
    """Measure every point of ``group`` on ``parallel`` (the same items and settings as the main model), and its
    accuracy on ``task`` when given."""
    placement = {"device": device, "dtype": dtype, "device_map": device_map, "offload_folder": offload_folder}
    results = []
    for index, point in enumerate(group.points):
        directory = None if storage_dir is None else Path(storage_dir) / f"{group.name}-{index}"
        results.append(measure_point(point, parallel, threshold, placement, progress, task, task_batch_size,
                                     storage_dir=directory, **settings))
    meta = {"points": [{"label": p.label, "model": p.model, "revision": p.revision} for p in group.points],
            "models": [r.provenance for r in results]}
    return Evolution(group.name, results, meta)
