"""Selection-ratio sweep (LAPE paper section 3.3.1, Figure 4).

For each selection ratio ``r`` (the method's ``top_rate``; the paper varies it from 0 to 10%), the
neurons are re-selected from the same statistics, one language's neurons are deactivated and the
perplexity of every evaluated language is measured. The corpus is packed once; ``normal`` (no
intervention) is the reference of the change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.analysis.output import AnalysisOutput, Figure, Table, declare_kind, summary_of
from langneurons.data.corpus import PackedCorpus, default_seq_len
from langneurons.errors import LangNeuronsError
from langneurons.interventions.neurons import deactivate
from langneurons.model.loading import LoadedModel, as_loaded
from langneurons.methods import get_method
from langneurons.evaluation.perplexity import corpus_windows, language_nll, normal_key
from langneurons.progress import corpus_factors, progress_bar
from langneurons.sets.compatibility import check_context, model_provenance
from langneurons.model.sites import locate_site
from langneurons.recording.parallel_run import active_run, model_key



def _headline(artefact) -> str | None:
    summary = summary_of(artefact)
    lang, changes = summary.get("language"), summary.get("relative_change_at_max_ratio")
    if not lang or not isinstance(changes, dict) or lang not in changes:
        return None
    others = [v for k, v in changes.items() if k != lang and isinstance(v, (int, float))]
    text = f"Deactivating {lang}'s neurons at ratio {summary.get('max_ratio', 0):.0%} changes its perplexity by " \
           f"{changes[lang]:+.1%}"
    return text + (f" (other languages {sum(others) / len(others):+.1%} on average)." if others else ".")


KIND = declare_kind("selection_sweep", "Selection-ratio sweep", 55,
                    "PPL change as the selection ratio grows (LAPE paper, Figure 4).", _headline)
#: the paper's range, 0 to 10% in steps of 1%
DEFAULT_RATIOS = tuple(round(0.01 * step, 2) for step in range(11))


def check_ratios(ratios: Sequence[float]) -> list[float]:
    """Sorted distinct ratios, each in [0, 1]; a clear error otherwise."""
    values = sorted({float(r) for r in ratios})
    if not values:
        raise LangNeuronsError("give at least one selection ratio")
    bad = [r for r in values if not 0.0 <= r <= 1.0]
    if bad:
        raise LangNeuronsError(f"selection ratios must be in [0, 1], got {bad[0]}")
    return values


@dataclass
class SelectionSweep:
    """Mean NLL ``nll[ratio, evaluated language]`` (``float64``) with ``language``'s neurons deactivated."""

    language: str
    ratios: list[float]
    languages: list[str]
    nll: torch.Tensor
    normal_nll: torch.Tensor  # float64[evaluated language], no intervention
    neurons: list[int]  # size of ``language``'s set at each ratio
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def perplexity(self) -> torch.Tensor:
        return self.nll.exp()

    @property
    def normal_perplexity(self) -> torch.Tensor:
        return self.normal_nll.exp()

    def change(self, relative: bool = False) -> torch.Tensor:
        """``float64[ratio, language]``: perplexity minus normal (divided by normal minus 1 with ``relative``)."""
        normal = self.normal_perplexity[None, :]
        return self.perplexity / normal - 1 if relative else self.perplexity - normal

    def _table(self, file: str, title: str, values: torch.Tensor, normal: torch.Tensor | None) -> Table:
        rows = [["normal", "", 0, *normal.tolist()]] if normal is not None else []
        rows += [[f"{ratio:g}", ratio, n, *row] for ratio, n, row in zip(self.ratios, self.neurons, values.tolist())]
        return Table(file, title, ["condition", "ratio", "neurons", *self.languages], rows,
                     rows_are=f"normal, then selection ratio (top_rate) with {self.language}'s neurons deactivated",
                     columns_are="condition, ratio, size of the deactivated set, then evaluated language")

    def output(self) -> AnalysisOutput:
        tables = [
            self._table("perplexity.csv", f"Perplexity with {self.language} neurons deactivated", self.perplexity,
                        self.normal_perplexity),
            self._table("perplexity_change.csv", "Perplexity change against normal", self.change(), None),
            self._table("nll.csv", "Mean NLL (nats per predicted token)", self.nll, self.normal_nll),
        ]

        def draw(path: Path) -> None:
            from langneurons.analysis.figures import line_plot

            change = self.change()
            series = {lang: change[:, c].tolist() for c, lang in enumerate(self.languages)}
            line_plot([100 * r for r in self.ratios], series, path,
                      f"PPL change when deactivating {self.language} neurons", "selection ratio (%)", "PPL change",
                      integer_x=False)

        last = self.change(relative=True)[-1]
        summary = {"language": self.language, "max_ratio": self.ratios[-1],
                   "relative_change_at_max_ratio": dict(zip(self.languages, last.tolist()))}
        return AnalysisOutput(KIND, f"Selection-ratio sweep: deactivating {self.language}", tables,
                              [Figure("perplexity_change.png", "PPL change over the selection ratio", draw)],
                              summary, self.meta)

    def save(self, directory: str | Path, plot: bool = True) -> Path:
        """Write ``perplexity.csv``, ``perplexity_change.csv``, ``nll.csv``, the plot and ``meta.json``."""
        return self.output().save(directory, plot=plot)


def selection_sweep(
    model: nn.Module | LoadedModel | str,
    corpus: str | Path | PackedCorpus,
    stats: Any,
    language: str,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    method: str = "lape",
    method_params: dict[str, Any] | None = None,
    langs: list[str] | None = None,
    max_tokens: int | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
) -> SelectionSweep:
    """Deactivate ``language``'s neurons selected at each ratio from ``stats``; PPL on every corpus language.

    ``method_params`` are the method's other parameters (``top_rate`` is the swept one). Data parallel under
    torchrun (each rank evaluates its batches); the ``normal`` row is the perplexity matrix's (one cache entry
    per model, corpus and batching, when the current run has a cache).
    """
    ratios = check_ratios(ratios)
    params = dict(method_params or {})
    if "top_rate" in params:
        raise LangNeuronsError("top_rate is the swept ratio; give it through ratios, not the method parameters")
    if language not in stats.languages:
        raise LangNeuronsError(f"statistics have no language {language!r} (have {', '.join(stats.languages)})")
    resolved = get_method(method, top_rate=ratios[0], **params).get_params()  # clear error for bad parameters
    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype)
    site = stats.meta.get("site", "ffn.act")
    site_map = locate_site(loaded.model, site)
    if (site_map.num_layers, site_map.width) != (stats.num_layers, stats.width):
        raise LangNeuronsError(f"statistics are for {stats.num_layers} layers x {stats.width} neurons but model "
                               f"{loaded.name!r} has {site_map.num_layers} x {site_map.width} at site {site!r}")
    check_context(loaded.model, seq_len, f"model {loaded.name!r}")
    with active_run() as run:
        packed = corpus_windows(corpus, loaded.tokenizer, seq_len or default_seq_len(loaded.model), batch_size,
                                langs, max_tokens)
        selections = [get_method(method, top_rate=ratio, **params).fit(stats).select() for ratio in ratios]
        sizes = [selection.size(language) for selection in selections]
        evaluated = packed.languages
        normal = torch.zeros(len(evaluated), dtype=torch.float64)
        nll = torch.zeros(len(ratios), len(evaluated), dtype=torch.float64)
        fingerprint = model_key(loaded.model) if run.cache is not None else None
        total = sum(int(batch.numel()) for batch in packed.batches.values()) * (len(ratios) + 1)  # this rank's
        per_language = {lang: packed.counts[lang] * packed.seq_len for lang in evaluated}  # all ranks'
        factors = corpus_factors(len(ratios) + 1, "conditions (normal + ratios)", per_language)
        with progress_bar("sweep", total, "tok", factors, progress and run.is_main) as bar:
            for c, lang in enumerate(evaluated):
                bar.describe(f"normal->{lang}")
                with run.scope(f"sweep/normal/{lang}"):
                    summed, count = language_nll(loaded.model, packed, lang, bar,
                                                 cache_key=normal_key(fingerprint, packed, lang))
                normal[c] = summed / count
            for r, selection in enumerate(selections):
                with deactivate(loaded.model, selection, language, site_map=site_map):
                    for c, lang in enumerate(evaluated):
                        bar.describe(f"{ratios[r]:g}->{lang}")
                        with run.scope(f"sweep/{ratios[r]!r}/{lang}"):
                            summed, count = language_nll(loaded.model, packed, lang, bar)
                        nll[r, c] = summed / count
        report = run.report()
    if not bool(torch.isfinite(nll).all() and torch.isfinite(normal).all()):
        raise LangNeuronsError("perplexity is not finite (try --dtype float32)")
    meta = {
        **model_provenance(loaded),
        "site": site,
        "deactivated_language": language,
        "method": method,
        "method_parameters": {key: value for key, value in resolved.items() if key != "top_rate"},
        "ratios": ratios,
        "neurons_per_ratio": dict(zip((f"{r:g}" for r in ratios), sizes)),
        "statistics": {key: stats.meta.get(key) for key in ("model", "revision", "model_type", "dtype", "site",
                                                             "corpus", "token_count") if key in stats.meta},
        "corpus": {"path": None if isinstance(corpus, PackedCorpus) else str(corpus), **packed.provenance()},
        "parameters": {"batch_size": batch_size},
        "nll_unit": "nats per predicted token",
        **report,
    }
    return SelectionSweep(language, ratios, list(evaluated), nll, normal, sizes, meta)
