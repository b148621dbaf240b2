""""Converging to a Lingua Franca" (Zeng et al. 2024): similarity maps, LRDS / SADS, key linguistic regions.

The steps, each a function:

1. :func:`prepare_parallel` - the items of a parallel corpus (blank in no language), at least 2 in 2 languages;
2. :func:`activation_vectors` - eq. 5: per-sample vectors at a neuron site (mean over the sample's tokens, or sum),
   batched with padding masked (:func:`~langneurons.recording.pooled.record_pooled`, the one pooling loop);
3. :func:`~langneurons.analysis.alignment.alignment` - eqs. 6-9: the similarity map, LRDS and SADS of the whole
   model and of each layer;
4. :func:`key_regions` - eqs. 10-14 (:class:`~langneurons.methods.key_regions.KeyRegions`): a neuron set;
5. :func:`~langneurons.analysis.region_deactivation.deactivation_table` - Table 1;
6. :func:`~langneurons.analysis.evolution.evolution` - Figures 4, 5 and 7 over checkpoints or model sizes.

:func:`lingua_franca` runs them all and returns a :class:`LinguaFranca`, whose ``save(out)`` writes
``lrds_sads.csv`` (``layer,lrds,sads``: ``all`` first, then layers from 0), ``key_neurons.csv``
(``language,layer,count``), ``key_region_sizes.csv``, ``similarity.npy`` (float32 ``[N, N]``, samples by language
then item, languages in ``meta.json["languages"]`` order), the deactivation and evolution tables when computed,
the figures, ``meta.json`` and the regions as a neuron set in ``key_regions.neurons``, all in one atomic write.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from langneurons.analysis.alignment import Alignment, alignment, lrds_sads, similarity_map
from langneurons.analysis.region_deactivation import DeactivationTable, deactivation_table, task_table
from langneurons.analysis.output import Array, Figure, Output, Table, declare_kind, summary_of
from langneurons.data.parallel import ParallelCorpus, as_parallel_corpus
from langneurons.errors import LangNeuronsError
from langneurons.methods.key_regions import KeyRegions, check_groups
from langneurons.sets.artefacts import atomic_directory
from langneurons.sets.neuronset import NeuronSet
from langneurons.stats.pooled import PooledVectors

REGIONS_DIR = "key_regions.neurons"
#: the public names of the steps (``ln.alignment_scores`` is :func:`~langneurons.analysis.alignment.alignment`)
alignment_scores = alignment
__all__ = ["Alignment", "DeactivationTable", "LinguaFranca", "activation_vectors", "alignment", "alignment_scores",
           "analyse_vectors", "deactivation_table", "key_regions", "lingua_franca", "lingua_franca_evolution",
           "lrds_sads", "prepare_parallel", "region_counts", "similarity_map", "task_table"]


def _headline(artefact: Any) -> str | None:
    return headline_of(summary_of(artefact))


def headline_of(summary: dict[str, Any]) -> str | None:
    """The report's one sentence from a lingua franca summary."""
    if not isinstance(summary.get("lrds"), (int, float)):
        return None
    text = (f"LRDS {summary['lrds']:.3f}, SADS {summary['sads']:.3f} over {summary.get('languages')} languages; "
            f"key linguistic regions hold {summary.get('sklr')} neurons (SKLR).")
    own = summary.get("own_increase_range")
    if isinstance(own, list) and len(own) == 2 and None not in own:
        text += f" Deactivating a language's region raises its own perplexity by {own[0]:.0f}-{own[1]:.0f}%"
        rand = summary.get("random_increase_range")
        if isinstance(rand, list) and len(rand) == 2 and None not in rand:
            text += f" (random {summary.get('random_percent', 0):g}%: {rand[0]:.0f}-{rand[1]:.0f}%)"
        text += "."
    return text


KIND = declare_kind("lingua_franca", "Lingua franca: LRDS / SADS and key linguistic regions", 70,
                    "Similarity of per-sample neuron activations (Zeng et al. 2024): language regions, semantic "
                    "alignment, and their evolution.", _headline)


# -- 1. the corpus ----------------------------------------------------------------------------------------------
def prepare_parallel(corpus: Any, langs: list[str] | None = None, max_samples: int | None = None,
                     sample_seed: int | None = None) -> ParallelCorpus:
    """The items of ``corpus`` that are non-blank in every language: the first ``max_samples``, or ``max_samples``
    drawn at random with ``sample_seed`` (kept in corpus order; the paper draws 100 verses). At least two languages
    and two items, else a one-line error. ``source["item_ids"]`` lists the items used."""
    parallel = as_parallel_corpus(corpus, langs)
    if len(parallel.languages) < 2:
        raise LangNeuronsError(f"the lingua franca analysis needs at least two languages, the corpus has "
                               f"{len(parallel.languages)} ({', '.join(parallel.languages)})")
    nonblank = [i for i in parallel.items if all(parallel.texts(lang)[i].strip() for lang in parallel.languages)]
    keep = nonblank
    if max_samples is not None:
        if max_samples < 2:
            raise LangNeuronsError(f"--max-samples must be at least 2, got {max_samples}")
        if sample_seed is not None and max_samples < len(keep):
            keep = sorted(random.Random(sample_seed).sample(keep, max_samples))
        else:
            keep = keep[:max_samples]
    check_groups(len(parallel.languages), len(keep))
    selected = parallel.select(items=keep)
    selected.source = {**parallel.source, "items_total": parallel.num_items,
                       "dropped_blank": parallel.num_items - len(nonblank), "sample_seed": sample_seed,
                       "item_ids": keep}
    return selected


# -- 2. the vectors ------------------------------------------------------------------------------------------------
def activation_vectors(model: Any, corpus: Any, site: str = "ffn.act", pooling: str = "mean",
                       add_bos: bool = False, max_length: int | None = 512, batch_size: int = 16,
                       padding_side: str = "right", storage: str = "auto", storage_dir: str | Path | None = None,
                       tokenizer: Any = None, device: Any = None, dtype: Any = None, revision: str | None = None,
                       device_map: Any = None, offload_folder: Any = None, progress: bool = True) -> PooledVectors:
    """Eq. 5: ``[language, sample, layer, width]`` vectors at ``site`` (``ffn.act``; ``ffn.down_in`` is what their
    code reads for LLaMA), the mean (or with ``pooling="sum"`` the sum) over each sample's tokens.

    Lines are tokenized without special tokens (their code); ``add_bos`` runs a BOS first and leaves it out of
    the mean. ``corpus`` is anything :func:`prepare_parallel` accepts (call it first to choose items).
    """
    from langneurons.recording.pooled import record_pooled

    if pooling not in ("mean", "sum"):
        raise LangNeuronsError(f"pooling must be mean or sum, got {pooling!r}")
    parallel = corpus if isinstance(corpus, ParallelCorpus) else prepare_parallel(corpus)
    check_groups(len(parallel.languages), parallel.num_items)
    vectors = record_pooled(model, parallel, site=site, mode=pooling, max_length=max_length, batch_size=batch_size,
                            tokenizer=tokenizer, device=device, dtype=dtype, progress=progress,
                            padding_side=padding_side, add_bos=add_bos, storage=storage, storage_dir=storage_dir,
                            revision=revision, device_map=device_map, offload_folder=offload_folder)
    vectors.meta["corpus"] = parallel.provenance()
    return vectors


# -- 4. the regions --------------------------------------------------------------------------------------------------
def key_regions(vectors: PooledVectors | torch.Tensor, threshold: float = 2.0) -> NeuronSet:
    """Eqs. 10-14: per language, the neurons whose contribution z-score exceeds ``threshold`` (a neuron set)."""
    return KeyRegions(threshold=threshold).fit(vectors).select()


def region_counts(regions: NeuronSet) -> list[list[Any]]:
    """``key_neurons.csv`` rows ``[language, layer, count]`` (Figure 5 by language)."""
    counts = regions.layer_counts()
    return [[lang, layer, int(counts[k, layer])] for k, lang in enumerate(regions.languages)
            for layer in range(regions.num_layers)]


# -- the result ----------------------------------------------------------------------------------------------------
@dataclass
class LinguaFranca:
    """Everything of one model: the alignment scores and map, the key regions, optionally Table 1 and evolution."""

    languages: list[str]
    num_items: int
    alignment: Alignment
    regions: NeuronSet
    deactivation: Any = None  # DeactivationTable
    evolutions: list[Any] = field(default_factory=list)  # Evolution (training, scale)
    tasks: Any = None  # task accuracy under the same conditions, when a task was given
    meta: dict[str, Any] = field(default_factory=dict)
    vectors: PooledVectors | None = None  # the main model's pooled vectors (not written by save)

    @property
    def sklr(self) -> int:
        """The size of the key linguistic regions: the sum of the region sizes (a neuron in two regions counts twice)."""
        return sum(self.regions.sizes().values())

    @property
    def total_neurons(self) -> int:
        return self.regions.num_layers * self.regions.width

    def summary(self) -> dict[str, Any]:
        a = self.alignment
        summary: dict[str, Any] = {
            "languages": len(self.languages), "samples_per_language": self.num_items, "lrds": a.lrds, "sads": a.sads,
            "layer_lrds": a.layer_lrds.tolist(), "layer_sads": a.layer_sads.tolist(), "sklr": self.sklr,
            "sklr_percent": 100 * self.sklr / self.total_neurons, "key_neurons": self.regions.sizes(),
            "threshold": self.regions.parameters.get("threshold"),
            "max_z_score": self.regions.parameters.get("max_z_score")}
        if self.regions.parameters.get("note"):
            summary["note"] = self.regions.parameters["note"]
        if self.deactivation is not None:
            summary.update(self.deactivation.summary())
        if self.tasks is not None:
            summary.update(self.tasks.summary())
        for evolution in self.evolutions:
            summary[evolution.name] = evolution.summary()
        return summary

    def output(self) -> Output:
        regions = self.regions
        sizes = regions.sizes()
        tables = [
            Table("lrds_sads.csv", "LRDS (eq. 8) and SADS (eq. 9): the whole model, then each layer (Figure 3)",
                  ["layer", "lrds", "sads"], self.alignment.rows(),
                  rows_are="all (layers concatenated, eq. 6), then the layer (0-based; its vectors normalised alone)",
                  columns_are="LRDS, SADS"),
            Table("key_neurons.csv", "Key neurons per language and layer (Figure 5)", ["language", "layer", "count"],
                  region_counts(regions), rows_are="(language, layer)", columns_are="key neurons"),
            Table("key_region_sizes.csv", "Size of each key linguistic region and SKLR (Figure 6)",
                  ["language", "key_neurons", "percent"],
                  [*([lang, n, 100 * n / self.total_neurons] for lang, n in sizes.items()),
                   ["SKLR", self.sklr, 100 * self.sklr / self.total_neurons]],
                  rows_are="language, then SKLR (the sum)", columns_are="key neurons, % of all neurons of the site"),
        ]
        arrays = [Array("similarity.npy", "Cosine similarity of every pair of samples (eq. 7, Figure 2)",
                        self.alignment.similarity, rows_are="sample (language, then item; languages as in meta.json)",
                        columns_are="sample (same order)")]
        counts = regions.layer_counts()
        figures = [
            Figure("similarity.png", "Similarity map (Figure 2)", lambda path: _plots().similarity_figure(
                self.alignment.similarity, self.languages, path, "Similarity map of neuron activations")),
            Figure("lrds_sads.png", "LRDS and SADS per layer (Figure 3)", lambda path: _plots().layer_scores_figure(
                self.alignment.layer_lrds.tolist(), self.alignment.layer_sads.tolist(), path,
                "Layer-wise LRDS and SADS")),
            Figure("key_neurons_layers.png", "Key neurons per layer (Figure 5)", lambda path: _plots().stacked_bars(
                counts, regions.languages, path, "Key neurons per layer", "layer", "key neurons")),
            Figure("key_neurons_languages.png", "Key neurons per language (Figure 6)", lambda path:
                   _plots().stacked_bars(torch.tensor([list(sizes.values())]), ["key neurons"], path,
                                         "Key neurons per language", "language", "key neurons", list(sizes))),
        ]
        if self.deactivation is not None:
            tables += self.deactivation.tables()
            figures += self.deactivation.figures()
        if self.tasks is not None:
            tables += self.tasks.tables()
        for evolution in self.evolutions:
            tables += evolution.tables()
            figures += evolution.figures()
        meta = {**self.meta, "languages": self.languages, "num_items": self.num_items,
                "regions": {"path": REGIONS_DIR, "method": regions.method, "parameters": regions.parameters,
                            "sizes": sizes}}
        if self.deactivation is not None:
            meta["deactivation"] = self.deactivation.meta
        if self.evolutions:
            meta["evolution"] = {e.name: e.meta for e in self.evolutions}
        summary = self.summary()
        return Output(KIND, "Lingua franca: similarity, LRDS / SADS, key linguistic regions", tables, figures,
                      summary, meta, arrays=arrays, headline=headline_of(summary))

    def save(self, directory: str | Path, plot: bool = True, force: bool = False) -> Path:
        """Write everything (see the module docstring) and the regions in ``key_regions.neurons``, atomically."""
        output = self.output()
        with atomic_directory(directory, kind=KIND, force=force) as staging:
            output.save(staging, plot=plot)  # staging is empty: written there (itself atomically)
            self.regions.save(staging / REGIONS_DIR)
        return Path(directory)


def _plots():
    from langneurons.analysis import lingua_franca_plots

    return lingua_franca_plots


def analyse_vectors(vectors: PooledVectors, threshold: float = 2.0) -> tuple[Alignment, NeuronSet]:
    """Steps 3 and 4 on recorded vectors: ``(alignment, key regions)``."""
    return alignment(vectors), key_regions(vectors, threshold)


def lingua_franca(model: Any, corpus: Any, site: str = "ffn.act", pooling: str = "mean", threshold: float = 2.0,
                  add_bos: bool = False, max_samples: int | None = None, sample_seed: int | None = None,
                  langs: list[str] | None = None, max_length: int | None = 512, batch_size: int = 16,
                  padding_side: str = "right", storage: str = "auto", storage_dir: str | Path | None = None,
                  ppl_corpus: Any = None, random_percent: float = 10.0, seed: int = 0, seq_len: int | None = None,
                  max_tokens: int | None = None, ppl_batch_size: int = 8, checkpoints: list[str] | None = None,
                  models: list[str] | None = None, task: Any = None, task_data: Any = None,
                  task_limit: int | None = None, task_batch_size: int = 8, tokenizer: Any = None, device: Any = None,
                  dtype: Any = None, revision: str | None = None, device_map: Any = None, offload_folder: Any = None,
                  progress: bool = True) -> LinguaFranca:
    """Every step on ``model`` (and, with ``checkpoints`` / ``models``, the evolution); see the module docstring.

    ``ppl_corpus`` (a folder of ``{lang}.txt``) adds Table 1 (``random_percent`` % random neurons, ``seed``);
    ``checkpoints``: local model folders or hub revisions of ``model``, in training order; ``models``: models of
    several sizes. ``task`` (a :class:`~langneurons.evaluation.tasks.Task`, a task name such as ``cloze`` read from
    ``task_data``, or a task file; ``task_limit`` items per language) is scored under the conditions of Table 1,
    and unedited at every evolution point. The result keeps the pooled vectors (``.vectors``; ``.vectors.save(dir)``
    writes them).
    """
    from langneurons.analysis.evolution import check_points, evolution, model_points
    from langneurons.model.loading import as_loaded

    parallel = prepare_parallel(corpus, langs, max_samples, sample_seed)
    if isinstance(task, (str, Path)):
        from langneurons.evaluation.tasks import load_task

        task = load_task(task, task_data, langs=parallel.languages, limit=task_limit)
    points = model_points(model, checkpoints or [], models or [], revision)
    check_points(points)
    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype, revision=revision, device_map=device_map,
                       offload_folder=offload_folder)
    settings = dict(site=site, pooling=pooling, add_bos=add_bos, max_length=max_length, batch_size=batch_size,
                    padding_side=padding_side, storage=storage, storage_dir=storage_dir)
    vectors = activation_vectors(loaded, parallel, progress=progress, **settings)
    scores, regions = analyse_vectors(vectors, threshold)
    deactivation = None
    if ppl_corpus is not None:
        deactivation = deactivation_table(loaded, ppl_corpus, regions, random_percent, seed, langs=parallel.languages,
                                          max_tokens=max_tokens, seq_len=seq_len, batch_size=ppl_batch_size,
                                          progress=progress)
    tasks = None
    if task is not None:
        tasks = task_table(loaded, task, regions, random_percent, seed, batch_size=task_batch_size, progress=progress)
    evolutions = [evolution(group, parallel, threshold=threshold, device=device, dtype=dtype, device_map=device_map,
                            offload_folder=offload_folder, progress=progress, task=task,
                            task_batch_size=task_batch_size, **settings)
                  for group in points if group.points]
    meta = {**{k: v for k, v in vectors.meta.items() if k not in ("storage", "languages")},
            "pooling": pooling, "threshold": threshold, "vector_storage": vectors.storage}
    if tasks is not None:
        meta["task"] = {k: v for k, v in tasks.result.meta.items() if k in ("task_settings", "parameters", "random")}
    return LinguaFranca(parallel.languages, parallel.num_items, scores, regions, deactivation, evolutions, tasks, meta,
                        vectors)


def lingua_franca_evolution(model: Any, corpus: Any, checkpoints: list[str] | None = None,
                            models: list[str] | None = None, threshold: float = 2.0, revision: str | None = None,
                            langs: list[str] | None = None, max_samples: int | None = None,
                            sample_seed: int | None = None, task: Any = None, progress: bool = True,
                            **settings: Any) -> list[Any]:
    """Step 6 alone: the metrics at every checkpoint of ``model`` (folders or hub revisions) and every model of
    ``models``, on the same items; returns one :class:`~langneurons.analysis.evolution.Evolution` per group given.
    ``settings``: the vector options of :func:`activation_vectors` and ``device`` / ``dtype`` / ``device_map``."""
    from langneurons.analysis.evolution import check_points, evolution, model_points

    parallel = prepare_parallel(corpus, langs, max_samples, sample_seed)
    groups = model_points(model, checkpoints or [], models or [], revision)
    check_points(groups)
    return [evolution(group, parallel, threshold=threshold, task=task, progress=progress, **settings)
            for group in groups if group.points]
