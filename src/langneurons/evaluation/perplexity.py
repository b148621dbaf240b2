"""The deactivation perplexity matrix (LAPE paper, Figures 2-3).

Rows are conditions (``normal``, ``random``, then one row per language whose neurons are
deactivated), columns the evaluated languages. Each entry is the mean negative log-likelihood over
every predicted token of that language's non-overlapping windows, and its exponential (perplexity).
The ``random`` row deactivates, for column ``j``, a seeded random set as large as language ``j``'s.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.sets.output import Figure, Output, Table, read_matrix, read_output_meta, register_kind
from langneurons._version import __version__
from langneurons.data.corpus import PackedCorpus, default_seq_len
from langneurons.data.rank_windows import RankWindows, from_packed, load_rank_windows
from langneurons.errors import LangNeuronsError
from langneurons.evaluation.logprobs import sequence_nll
from langneurons.interventions.neurons import deactivate
from langneurons.model.loading import LoadedModel, as_loaded
from langneurons.methods.baselines import random_like
from langneurons.sets.neuronset import NeuronSet
from langneurons.model.sites import locate_site
from langneurons.progress import Progress, corpus_factors, progress_bar
from langneurons.recording.parallel_run import active_run, current_run, model_key
from langneurons.sets.compatibility import check_context, model_provenance

SCHEMA_VERSION = 1
KIND = register_kind("perplexity_matrix", SCHEMA_VERSION, "rows conditions, columns evaluated languages")
#: meta.json keys the matrix itself fills (everything else is provenance, kept in ``meta``)
_OWN_KEYS = ("conditions", "languages", "tokens")


@torch.inference_mode()
def batch_nll(model: nn.Module, windows: torch.Tensor, chunk_size: int | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and number of predicted tokens of one batch of windows ``long[b, seq]``."""
    nll, tokens = sequence_nll(model, windows, chunk_size=chunk_size)
    return float(nll.sum()), int(tokens.sum())


@torch.inference_mode()
def corpus_nll(model: nn.Module, windows: torch.Tensor, batch_size: int = 8, bar: Any = None,
               chunk_size: int | None = None) -> tuple[float, int]:
    """Summed NLL (nats) and number of predicted tokens over windows ``long[n, seq]`` (one process).

    The LM head and the log-softmax run on ``chunk_size`` positions at a time
    (:func:`langneurons.evaluation.logprobs.sequence_nll`), so the full logits are never held.
    """
    total, count = 0.0, 0
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size]
        nll, tokens = batch_nll(model, batch, chunk_size)
        total += nll
        count += tokens
        if bar is not None:
            bar.update(int(batch.numel()))
    return total, count


def normal_key(model_fingerprint: dict[str, Any] | None, windows: RankWindows, lang: str,
               chunk_size: int | None = None) -> dict[str, Any] | None:
    """The cache key of ``lang``'s NLL without intervention (``None`` when the corpus has no file checksum)."""
    entry = windows.files.get(lang) if isinstance(windows.files, dict) else None
    sha = entry.get("sha256") if isinstance(entry, dict) else None
    if model_fingerprint is None or not sha:
        return None
    return {"what": "corpus_nll", "version": __version__, "model": model_fingerprint, "language": lang,
            "corpus": {"sha256": sha, "seq_len": windows.seq_len, "max_tokens": windows.max_tokens,
                       "windows": windows.counts[lang]},
            "batch_size": windows.batch_size, "chunk_size": chunk_size}


def language_nll(model: nn.Module, windows: RankWindows, lang: str, bar: Any = None,
                 chunk_size: int | None = None, cache_key: dict[str, Any] | None = None) -> tuple[float, int]:
    """Summed NLL and predicted tokens of ``lang``: its batches split over the ranks of the current run
    (:mod:`langneurons.recording.parallel_run`), summed in batch order (the single-process sum, bit for bit)."""
    run = current_run()

    def unit(number: int) -> tuple[float, int]:
        batch = windows.batch(lang, number)
        result = batch_nll(model, batch, chunk_size)
        run.add_tokens(batch.numel())
        if bar is not None:
            bar.update(int(batch.numel()))
        return result

    parts = run.cached(cache_key, lambda: run.map(windows.num_batches(lang), unit, start=windows.first[lang]))
    total, count = 0.0, 0
    for nll, tokens in parts:
        total += nll
        count += tokens
    return total, count


def corpus_windows(corpus: str | Path | PackedCorpus, tokenizer: Any, seq_len: int, batch_size: int,
                   langs: list[str] | None = None, max_tokens: int | None = None) -> RankWindows:
    """The batches of ``corpus`` the current run's rank evaluates (it tokenizes only its share of the files)."""
    if isinstance(corpus, PackedCorpus):
        return from_packed(corpus, batch_size)
    run = current_run()
    return load_rank_windows(corpus, tokenizer, seq_len, batch_size, langs=langs, max_tokens=max_tokens,
                             owns=run.owns, part=run.rank, parts=run.world_size, all_sum=run.all_sum)


@dataclass
class PerplexityMatrix:
    """Mean NLL per (condition, evaluated language); ``nll[row, column]``, ``float64``."""

    conditions: list[str]
    languages: list[str]
    nll: torch.Tensor
    tokens: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def perplexity(self) -> torch.Tensor:
        return self.nll.exp()

    def row(self, condition: str) -> torch.Tensor:
        return self.perplexity[self.conditions.index(condition)]

    def change(self, relative: bool = False) -> torch.Tensor:
        """Perplexity minus the ``normal`` row (or divided by it minus 1 with ``relative``)."""
        normal = self.row("normal")
        return self.perplexity / normal - 1 if relative else self.perplexity - normal

    def _table(self, file: str, title: str, values: torch.Tensor, unit: str) -> Table:
        rows = [[condition, *row] for condition, row in zip(self.conditions, values.tolist())]
        return Table(file, title, ["condition", *self.languages], rows,
                     rows_are="condition: normal, random, then the language whose neurons are deactivated",
                     columns_are=f"evaluated language ({unit})")

    def output(self) -> Output:
        """The matrix in the one output style: ``perplexity.csv``, ``nll.csv``, ``perplexity_change.png``."""
        tables = [self._table("perplexity.csv", "Perplexity per condition and evaluated language", self.perplexity,
                              "perplexity"),
                  self._table("nll.csv", "Mean NLL per condition and evaluated language", self.nll,
                              self.meta.get("nll_unit", "nats per predicted token"))]

        def draw(path: Path) -> None:
            from langneurons.analysis.plots import perplexity_heatmap

            perplexity_heatmap(self, path)

        meta = {"conditions": self.conditions, "languages": self.languages, "tokens": self.tokens,
                **{k: v for k, v in self.meta.items() if k not in _OWN_KEYS}}
        headline = summary(self) if "normal" in self.conditions else {}
        return Output(KIND, self.meta.get("title") or "Deactivation perplexity matrix", tables,
                      [Figure("perplexity_change.png", "Relative PPL change against normal (%)", draw)], headline, meta)

    def save(self, directory: str | Path, plot: bool = True, force: bool = False) -> Path:
        """Write ``perplexity.csv``, ``nll.csv``, ``meta.json`` and ``perplexity_change.png`` atomically."""
        return self.output().save(directory, plot=plot, force=force)


def load_perplexity(directory: str | Path) -> PerplexityMatrix:
    """Read a matrix written by :meth:`PerplexityMatrix.save` (any version of this package)."""
    root = Path(directory)
    meta = read_output_meta(root, KIND, "a perplexity matrix")
    conditions, languages, nll = read_matrix(root / "nll.csv", "a perplexity matrix")
    extra = {k: v for k, v in meta.items() if k not in _OWN_KEYS}
    return PerplexityMatrix(conditions, languages, nll, meta.get("tokens", {}), extra)


def random_language(random_languages: list[str], lang: str, column: int) -> str:
    """Which language's random set the ``random`` row uses for evaluated language ``lang`` (column ``column``)."""
    return lang if lang in random_languages else random_languages[column % len(random_languages)]


def evaluate_conditions(
    model: nn.Module,
    packed: PackedCorpus,
    conditions: list[str],
    edit: Callable[[str, str, int], AbstractContextManager],
    batch_size: int = 8,
    progress: "bool | Progress" = True,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, int]]:
    """Mean NLL ``float64[len(conditions), len(packed.languages)]`` and predicted tokens per language.

    Row ``normal`` runs the model as it is; every other row runs inside ``edit(condition, lang, column)``,
    a context manager that changes the forward pass reversibly (deactivated neurons, zeroed parameters).
    One overall bar (conditions x languages x tokens, announced first: :mod:`langneurons.progress`).
    Under a data-parallel run each rank evaluates its batches (``packed`` may be the rank's
    :class:`~langneurons.data.rank_windows.RankWindows`); every condition and language is a named unit of
    the run, so a resumed run skips what was finished, and the ``normal`` row comes from the run's cache
    when it was computed before with the same model, corpus and batches.
    """
    windows = from_packed(packed, batch_size)
    run = current_run()
    fingerprint = model_key(model) if run.cache is not None else None
    nll = torch.zeros(len(conditions), len(windows.languages), dtype=torch.float64)
    tokens: dict[str, int] = {}
    per_language = {lang: windows.counts[lang] * windows.seq_len for lang in windows.languages}  # all ranks'
    total = sum(int(batch.numel()) for batch in windows.batches.values()) * len(conditions)  # this rank's
    shown = progress if isinstance(progress, Progress) else bool(progress) and run.is_main
    with progress_bar("perplexity", total, "tok", corpus_factors(len(conditions), "conditions", per_language),
                      shown) as bar:
        for r, condition in enumerate(conditions):
            for c, lang in enumerate(windows.languages):
                bar.describe(f"{condition}->{lang}")
                normal = condition == "normal"
                with run.scope(f"ppl/{condition}/{lang}"), nullcontext() if normal else edit(condition, lang, c):
                    key = normal_key(fingerprint, windows, lang, chunk_size) if normal else None
                    total_nll, count = language_nll(model, windows, lang, bar, chunk_size, key)
                nll[r, c] = total_nll / count
                tokens[lang] = count
    if not bool(torch.isfinite(nll).all()):
        raise LangNeuronsError("perplexity is not finite (try --dtype float32)")
    return nll, tokens


def perplexity_matrix(
    model: nn.Module | LoadedModel | str,
    corpus: str | Path | PackedCorpus,
    neurons: NeuronSet,
    langs: list[str] | None = None,
    max_tokens: int | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer: Any = None,
    random_seed: int = 0,
    include_random: bool = True,
    deactivate_languages: list[str] | None = None,
    progress: bool = True,
    device_map: str | dict | None = None,
    offload_folder: str | Path | None = None,
) -> PerplexityMatrix:
    """Evaluate every condition on every language of ``corpus`` (Figure 2 of the LAPE paper).

    ``device_map`` (e.g. ``"auto"``) places a model larger than one device with accelerate, layers that fit
    nowhere go to ``offload_folder``. Returns ``nll[condition, language]`` in a :class:`PerplexityMatrix`.
    Under torchrun (or inside :func:`~langneurons.recording.parallel_run.use_run`) every rank evaluates its
    batches and tokenizes only its share of the corpus; every rank returns the whole matrix.
    """
    with active_run() as run:
        return _perplexity_matrix(run, model, corpus, neurons, langs, max_tokens, seq_len, batch_size, device, dtype,
                                  tokenizer, random_seed, include_random, deactivate_languages, progress, device_map,
                                  offload_folder)


def _perplexity_matrix(run: Any, model: Any, corpus: Any, neurons: NeuronSet, langs: Any, max_tokens: Any,
                       seq_len: Any, batch_size: int, device: Any, dtype: Any, tokenizer: Any, random_seed: int,
                       include_random: bool, deactivate_languages: Any, progress: bool, device_map: Any,
                       offload_folder: Any) -> PerplexityMatrix:
    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype, device_map=device_map,
                       offload_folder=offload_folder)
    site_map = {site: locate_site(loaded.model, site) for site in neurons.sites}
    for site, located in site_map.items():
        neurons.check_shape(located.num_layers, located.width, what=f"model {loaded.name!r}", site=site)
    length = seq_len or default_seq_len(loaded.model)
    if not isinstance(corpus, PackedCorpus):
        check_context(loaded.model, length, f"model {loaded.name!r}")
    packed = corpus_windows(corpus, loaded.tokenizer, length, batch_size, langs, max_tokens)
    rows = deactivate_languages if deactivate_languages is not None else neurons.languages
    for lang in rows:
        neurons.layers(lang)  # clear error for an unknown language
    random_set = random_like(neurons, seed=random_seed) if include_random else None

    def edit(condition: str, lang: str, column: int) -> AbstractContextManager:
        if condition == "random":
            return deactivate(loaded.model, random_set, random_language(random_set.languages, lang, column),
                              site_map=site_map)
        return deactivate(loaded.model, neurons, condition, site_map=site_map)

    conditions = ["normal"] + (["random"] if include_random else []) + list(rows)
    nll, tokens = evaluate_conditions(loaded.model, packed, conditions, edit, batch_size, progress)
    meta = {
        **model_provenance(loaded),
        "site": neurons.sites[0] if len(neurons.sites) == 1 else neurons.sites,
        "neurons": {"method": neurons.method, "parameters": neurons.parameters, "sizes": neurons.sizes(),
                    "source": neurons.source},
        "random": {"seed": random_seed, "sizes": random_set.sizes() if random_set else None},
        "corpus": {"path": None if isinstance(corpus, PackedCorpus) else str(corpus), **packed.provenance()},
        "parameters": {"batch_size": batch_size},
        "nll_unit": "nats per predicted token",
        **run.report(),
    }
    return PerplexityMatrix(conditions, list(packed.languages), nll, tokens, meta)


def summary(matrix: PerplexityMatrix) -> dict[str, float]:
    """Diagonal vs off-diagonal relative increase, and vs the random row (the demo's science check)."""
    change = matrix.change(relative=True)
    diagonal, off, random_row = [], [], []
    row_max_on_diagonal = 0
    evaluated = [c for c in matrix.conditions if c in matrix.languages]
    for condition in evaluated:
        r, c = matrix.conditions.index(condition), matrix.languages.index(condition)
        diagonal.append(float(change[r, c]))
        off.extend(float(change[r, j]) for j in range(len(matrix.languages)) if j != c)
        row_max_on_diagonal += int(int(change[r].argmax()) == c)
    if "random" in matrix.conditions:
        random_row = [float(v) for v in change[matrix.conditions.index("random")]]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    return {
        "mean_diagonal_increase": mean(diagonal),
        "mean_off_diagonal_increase": mean(off),
        "mean_random_increase": mean(random_row),
        "row_max_on_diagonal": row_max_on_diagonal,
        "rows": len(evaluated),
    }
