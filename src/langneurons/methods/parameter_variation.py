"""Parameter variation (PV): the LAPE paper's parameter baseline (Tang et al. 2024, sections 3.1 d and 3.2).

"We compare the model parameters before and after monolingual instruction tuning ... We mainly
consider the parameters inside the MHA and FFN modules, i.e., the weight matrices in Equations 1, 2,
and 3. We compute the rate of change across various languages, and select parameters that exhibit a
low rate of change in one or two languages but a high rate in others. In detail, we refine the change
ratio by subtracting the maximum value and then conduct L1 normalization for entropy calculation."
Then "we identify 1% of the neurons or parameters ... [and] directly zero the parameters".

Given a base model ``theta_0`` and one model fine-tuned per language ``theta_k`` (same architecture):

1. considered parameters: every entry of the MHA and FFN weight matrices of every decoder layer
   (q / k / v or fused qkv, o; gate / up or fc1, down: :func:`langneurons.model.weights.considered_parameters`),
   pooled over all matrices into one vector of ``N`` entries;
2. rate of change, element-wise: ``r_k = |theta_k - theta_0| / (|theta_0| + eps)``, ``eps = 1e-8``
   (only matters where the base weight is exactly 0);
3. refinement: ``r'_k = max_j r_j - r_k`` (a language whose tuning barely moved the entry gets a large
   value, the language that moved it most gets 0), then L1 normalisation over languages
   ``p_k = r'_k / sum_j r'_j`` (``0/0 -> 0``: an entry every language moved equally has all zeros);
4. the entropy selection of LAPE (:mod:`langneurons.methods.entropy`) on ``p[K, 1, N]``: entries with
   no ``p_k`` above the ``filter_rate`` percentile of all ``K x N`` values are excluded (this drops
   the equal-change entries, whose all-zero ``p`` has entropy 0); the ``round(top_rate * N)``
   lowest-entropy entries are selected (ties by position); each goes to every language whose ``p_k``
   is above the ``activation_bar_ratio`` percentile. Defaults as LAPE: 0.01, 0.95, 0.95.

The result is a :class:`~langneurons.sets.parameterset.ParameterSet`; zero it with
:func:`langneurons.interventions.parameters.zero_parameters` and evaluate it with
:func:`parameter_perplexity_matrix`. With two languages every entry the two tunings moved differently
has entropy 0 (one ``r'_k`` is always 0), so the ranking is left to position order: use three or more.
When ``K x N`` exceeds ``max_values_in_memory`` the selection is streamed matrix by matrix (exactly the
same result, several passes over the weights; :mod:`langneurons.methods.streamed_entropy`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.methods.base import NeuronMethod, check_rate, get_method, register_method
from langneurons.methods.streamed_entropy import (
    PooledSelection,
    pooled_entropy_select,
    streamed_entropy_select,
)
from langneurons.interventions.parameters import zero_parameters
from langneurons.sets.parameterset import (
    ParameterSet,
    from_flat_indices,
    random_parameters_like,
)
from langneurons.model.weights import as_weight_source, considered_parameters
from langneurons.sets.compatibility import check_context, model_provenance

if TYPE_CHECKING:  # the perplexity modules are imported lazily (methods/ must not import perplexity.py)
    from langneurons.data.corpus import PackedCorpus
    from langneurons.model.loading import LoadedModel
    from langneurons.evaluation.perplexity import PerplexityMatrix

DEFAULT_EPS = 1e-8


def change_rates(base: torch.Tensor, tuned: list[torch.Tensor], eps: float = DEFAULT_EPS) -> torch.Tensor:
    """``float64[K, n]`` element-wise rate of change ``|theta_k - theta_0| / (|theta_0| + eps)`` (flattened)."""
    theta0 = base.detach().double().flatten()
    scale = theta0.abs() + eps
    return torch.stack([(t.detach().double().flatten() - theta0).abs() / scale for t in tuned])


def refined_values(rates: torch.Tensor) -> torch.Tensor:
    """``float64[K, n]``: ``r' = max_k r - r`` L1-normalised over languages (``0/0 -> 0``)."""
    refined = rates.max(0, keepdim=True).values - rates
    total = refined.sum(0, keepdim=True)
    normed = torch.where(total > 0, refined / torch.where(total > 0, total, torch.ones_like(total)), 0.0)
    return torch.where(normed > 0, normed, 0.0)  # no -0.0 (the streamed selection reads bit patterns)


@dataclass
class ParameterChanges:
    """A base model and one fine-tuned model per language: the input PV is fitted on.

    ``base`` and each ``finetuned[lang]`` are anything :func:`langneurons.model.weights.as_weight_source`
    reads (model directory, hub id, module, ``{name: tensor}``). ``parameters`` overrides the
    considered ``{name: shape}`` (default: the MHA / FFN matrices of the base model's architecture;
    required for plain dicts).
    """

    base: Any
    finetuned: dict[str, Any]
    parameters: dict[str, tuple[int, ...]] | None = None
    shapes: dict[str, tuple[int, ...]] = field(init=False)

    def __post_init__(self) -> None:
        if len(self.finetuned) < 2:
            raise LangNeuronsError(f"parameter variation needs fine-tuned models of at least 2 languages, "
                                   f"got {len(self.finetuned)}")
        self.base_source = as_weight_source(self.base)
        self.sources = {lang: as_weight_source(model) for lang, model in self.finetuned.items()}
        if self.parameters is not None:
            self.shapes = {name: tuple(shape) for name, shape in self.parameters.items()}
        else:
            structure = getattr(self.base_source, "structure", None)
            if structure is None:
                raise LangNeuronsError("a state dict as base model needs parameters={name: shape} to consider")
            self.shapes = considered_parameters(structure)
        if not self.shapes:
            raise LangNeuronsError("no parameters to consider")
        for name in self.shapes:
            for lang, source in [("base", self.base_source), *self.sources.items()]:
                if not source.has(name):
                    raise LangNeuronsError(f"{'base model' if lang == 'base' else f'fine-tuned model of {lang!r}'} "
                                           f"has no parameter {name!r}")

    @property
    def languages(self) -> list[str]:
        return list(self.sources)

    @property
    def total(self) -> int:
        return sum(int(torch.Size(shape).numel()) for shape in self.shapes.values())

    def values(self, eps: float = DEFAULT_EPS) -> Iterator[torch.Tensor]:
        """Per considered matrix, in order, the refined normalised values ``float64[K, numel]``."""
        for name, shape in self.shapes.items():
            base = self.base_source.get(name)
            tuned = []
            for lang, source in self.sources.items():
                tensor = source.get(name)
                if tuple(tensor.shape) != tuple(shape) or tuple(base.shape) != tuple(shape):
                    raise LangNeuronsError(f"parameter {name!r}: shape {tuple(tensor.shape)} in the model of {lang!r}, "
                                           f"{tuple(base.shape)} in the base model, {tuple(shape)} expected")
                tuned.append(tensor)
            yield refined_values(change_rates(base, tuned, eps))

    def provenance(self) -> dict[str, Any]:
        from langneurons.sets.compatibility import weights_fingerprint

        base = {**self.base_source.provenance(),
                "model_fingerprint": weights_fingerprint(self.shapes, self.base_source.get)}
        return {"base": base,
                "finetuned": {lang: source.provenance() for lang, source in self.sources.items()}}


@register_method
class ParameterVariation(NeuronMethod):
    """PV: lowest-entropy weight entries of the refined per-language rate of change (see the module doc).

    A registered method like the others, declared ``consumes = "models"`` (``fit`` takes a
    :class:`ParameterChanges`: a base model and one fine-tuned model per language) and
    ``returns = "parameter_set"`` (``select`` gives a :class:`~langneurons.sets.parameterset.ParameterSet`);
    :func:`identify_parameters` is its one-call entry point. Fitted: ``selection_`` (pooled indices, entropy,
    membership, percentiles) and ``scores_`` (``float64[n]`` entropy of the selected entries, in selection
    order: the full ``N``-entry entropy is not kept).
    """

    name = "pv"
    consumes = "models"
    returns = "parameter_set"

    def __init__(self, top_rate: float = 0.01, filter_rate: float = 0.95, activation_bar_ratio: float = 0.95,
                 eps: float = DEFAULT_EPS, max_values_in_memory: int = 1 << 27):
        self.top_rate = check_rate("top_rate", top_rate)
        self.filter_rate = check_rate("filter_rate", filter_rate)
        self.activation_bar_ratio = check_rate("activation_bar_ratio", activation_bar_ratio)
        if not eps > 0:
            raise LangNeuronsError(f"eps must be positive, got {eps}")
        self.eps = float(eps)
        self.max_values_in_memory = int(max_values_in_memory)

    def fit(self, changes: ParameterChanges) -> "ParameterVariation":
        if not isinstance(changes, ParameterChanges):
            raise LangNeuronsError("method 'pv' needs a base model and fine-tuned models (ParameterChanges), "
                                   "not activation statistics; use identify_parameters(base, finetuned) or "
                                   "`langneurons identify --method pv --base BASE --finetuned LANG=PATH ...`")
        if len(changes.languages) == 2:
            warnings.warn("parameter variation with 2 languages: every entry moved differently has entropy 0, "
                          "so the ranking falls back to position order", LangNeuronsWarning, stacklevel=2)
        self.changes_ = changes
        if changes.total * len(changes.languages) <= self.max_values_in_memory:
            values = torch.cat(list(changes.values(self.eps)), dim=1)
            self.selection_: PooledSelection = pooled_entropy_select(values, self.top_rate, self.filter_rate,
                                                                     self.activation_bar_ratio)
        else:
            self.selection_ = streamed_entropy_select(lambda: changes.values(self.eps), self.top_rate,
                                                      self.filter_rate, self.activation_bar_ratio,
                                                      shape=(len(changes.languages), changes.total))
        self.scores_ = self.selection_.entropy
        return self

    def select(self) -> ParameterSet:
        self._check_fitted()
        selection, changes = self.selection_, self.changes_
        flat = {lang: selection.selected[selection.membership[k]] for k, lang in enumerate(changes.languages)}
        parameters = {**self.get_params(), "filter_value": selection.filter_value,
                      "activation_bar": selection.activation_bar, "considered": selection.total,
                      "passing_filter": selection.passing,
                      "selected_before_assignment": int(selection.selected.numel())}
        return from_flat_indices(flat, changes.shapes, method=self.name, parameters=parameters,
                                 source=changes.provenance())


def identify_parameters(base: Any, finetuned: dict[str, Any], top_rate: float = 0.01, filter_rate: float = 0.95,
                        activation_bar_ratio: float = 0.95, eps: float = DEFAULT_EPS,
                        parameters: dict[str, tuple[int, ...]] | None = None,
                        max_values_in_memory: int = 1 << 27) -> ParameterSet:
    """PV in one call: ``identify_parameters("base/", {"en": "ft-en/", "zh": "ft-zh/", ...})``."""
    method = get_method("pv", top_rate=top_rate, filter_rate=filter_rate, activation_bar_ratio=activation_bar_ratio,
                        eps=eps, max_values_in_memory=max_values_in_memory)
    return method.fit(ParameterChanges(base, dict(finetuned), parameters)).select()


def parameter_perplexity_matrix(
    model: nn.Module | "LoadedModel" | str,
    corpus: str | Path | "PackedCorpus",
    parameter_set: ParameterSet,
    langs: list[str] | None = None,
    max_tokens: int | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tokenizer: Any = None,
    random_seed: int = 0,
    include_random: bool = True,
    zero_languages: list[str] | None = None,
    progress: bool = True,
) -> "PerplexityMatrix":
    """The perplexity matrix with parameters zeroed instead of neurons deactivated.

    Rows: ``normal``, ``random`` (for column ``j`` a seeded random set as large as language ``j``'s,
    drawn from all considered entries), then one row per language whose entries are zeroed; columns
    the evaluated languages. Same NLL as :func:`langneurons.evaluation.perplexity.perplexity_matrix`.
    """
    from langneurons.data.corpus import PackedCorpus, default_seq_len, load_corpus
    from langneurons.model.loading import as_loaded
    from langneurons.evaluation.perplexity import (
        PerplexityMatrix,
        evaluate_conditions,
        random_language,
    )

    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype)
    parameter_set.check_model(loaded.model, what=f"model {loaded.name!r}")
    rows = zero_languages if zero_languages is not None else parameter_set.languages
    for lang in rows:
        parameter_set.indices(lang)  # clear error for an unknown language
    if isinstance(corpus, PackedCorpus):
        packed = corpus
    else:
        check_context(loaded.model, seq_len, f"model {loaded.name!r}")
        packed = load_corpus(corpus, loaded.tokenizer, seq_len or default_seq_len(loaded.model), langs=langs,
                             max_tokens=max_tokens)
    random_set = random_parameters_like(parameter_set, seed=random_seed) if include_random else None

    def edit(condition: str, lang: str, column: int):
        if condition == "random":
            return zero_parameters(loaded.model, random_set, random_language(random_set.languages, lang, column))
        return zero_parameters(loaded.model, parameter_set, condition)

    conditions = ["normal"] + (["random"] if include_random else []) + list(rows)
    nll, tokens = evaluate_conditions(loaded.model, packed, conditions, edit, batch_size, progress)
    meta = {
        **model_provenance(loaded),
        "intervention": "zero parameters",
        "parameter_set": {"method": parameter_set.method, "parameters": parameter_set.parameters,
                          "sizes": parameter_set.sizes(), "total": parameter_set.total,
                          "source": parameter_set.source},
        "random": {"seed": random_seed, "sizes": random_set.sizes() if random_set else None},
        "corpus": {"path": None if isinstance(corpus, PackedCorpus) else str(corpus), **packed.provenance()},
        "parameters": {"batch_size": batch_size},
        "nll_unit": "nats per predicted token",
    }
    return PerplexityMatrix(conditions, list(packed.languages), nll, tokens, meta)
