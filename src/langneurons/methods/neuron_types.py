"""Sharing Matters (Wang et al. 2024): four types of FFN neurons across the K translations of one item.

For an item and its translations into the languages ``langs`` and a neuron ``n`` of layer ``l``, ``A_lang`` is the
neuron's activation at the LAST token of the input in language ``lang`` (the paper's section 3.3: "we use the
activation state x_S ... as that is when the LLM performs the prediction task"), and ``t`` the activation
threshold (0 in the paper's eqs. 4-7; the sweep of its Figure 22 uses 0 .. 0.5):

* all-shared (eq. 4):      ``N_all = ∩_lang {n : A_lang > t}``                (active in every language)
* non-activated (eq. 5):   ``N_non = ∩_lang {n : A_lang <= t}``               (active in none)
* specific (eq. 6):        ``N_spec = ∪_k ({n : A_k > t} ∩ ∩_{j != k} {n : A_j <= t})``   (active in exactly one)
* partial-shared (eq. 7):  ``N_part = N - N_all - N_non - N_spec``            (active in 2 .. K-1 languages)

With ``c`` the number of languages in which the neuron is active, the four are ``c == K``, ``c == 0``,
``c == 1`` and the rest: a partition of every layer's neurons (for ``K >= 2``; with one language eqs. 4 and 6
coincide, so at least two languages are required). Codes: :data:`TYPES` in the order of the tables
(``all_shared, partial_shared, specific, non_activated`` = 0, 1, 2, 3).

Which neurons a language's row of an item "has" (for interventions and for :meth:`NeuronTypes.select`):
interpretation: a row of language ``k`` gets the neurons of the type that are active in ``k`` (``scope="active"``,
the default: all of the all-shared neurons, the neurons specific to ``k``, the partial-shared ones active in
``k``), or every neuron of the type (``scope="type"``). Conversion to all-shared (the paper's Table 3) concerns
the other part: the neurons of the type that are INACTIVE in ``k`` (:func:`conversion_masks`).

:class:`NeuronTypes` is the method under the one method contract: it consumes last-token
:class:`~langneurons.stats.pooled.PooledVectors` (``record_pooled(..., mode="last")`` on a parallel corpus) and
selects one item's neurons of one type per language (or, with ``item=None``, the neurons of that type in every
item: the "overlap" of the paper's Figure 5).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from langneurons.errors import LangNeuronsError
from langneurons.methods.base import NeuronMethod, register_method
from langneurons.sets.neuronset import NeuronSet

#: the four types, in the order of the tables; their codes are the positions in this tuple
TYPES = ("all_shared", "partial_shared", "specific", "non_activated")
ALL_SHARED, PARTIAL_SHARED, SPECIFIC, NON_ACTIVATED = range(4)
SCOPES = ("active", "type")


def check_threshold(threshold: Any, name: str = "threshold") -> float:
    """``threshold`` as a finite float; a one-line error for anything that is not a number."""
    if isinstance(threshold, bool):
        raise LangNeuronsError(f"the {name} must be a number, got {threshold!r}")
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise LangNeuronsError(f"the {name} must be a number, got {threshold!r}") from None
    if not math.isfinite(value):
        raise LangNeuronsError(f"the {name} must be a finite number, got {threshold!r}")
    return value


def type_code(kind: str | int) -> int:
    """The code of a type name (``"all_shared"``, ...; ``"all-shared"`` too) or a code."""
    if isinstance(kind, int) and 0 <= kind < len(TYPES):
        return kind
    name = str(kind).replace("-", "_")
    if name not in TYPES:
        raise LangNeuronsError(f"unknown neuron type {kind!r}; known: {', '.join(TYPES)}")
    return TYPES.index(name)


def active_mask(activations: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """``bool``, same shape: ``A > threshold`` (eqs. 4-7 with the threshold in place of 0)."""
    return activations > check_threshold(threshold)


def types_from_active(active: torch.Tensor, language_dim: int = -3) -> torch.Tensor:
    """``uint8`` type codes from ``active`` ``bool[..., K, L, W]`` (languages at ``language_dim``): eqs. 4-7.

    Returns the codes with the language dimension removed (``[..., L, W]``); ``K >= 2``.
    """
    languages = active.shape[language_dim]
    if languages < 2:
        raise LangNeuronsError(f"neuron types need at least 2 languages, got {languages}")
    count = active.sum(language_dim)
    codes = torch.full(count.shape, PARTIAL_SHARED, dtype=torch.uint8, device=active.device)
    codes[count == languages] = ALL_SHARED
    codes[count == 1] = SPECIFIC
    codes[count == 0] = NON_ACTIVATED
    return codes


def neuron_types(activations: torch.Tensor, threshold: float = 0.0, language_dim: int = -3) -> torch.Tensor:
    """Type codes ``uint8[..., L, W]`` of last-token activations ``[..., K, L, W]`` at ``threshold``."""
    return types_from_active(active_mask(activations, threshold), language_dim)


def type_shares(codes: torch.Tensor) -> torch.Tensor:
    """``float64[..., L, 4]``: the share of each layer's neurons of each type (codes ``[..., L, W]``)."""
    counts = torch.stack([(codes == t).sum(-1) for t in range(len(TYPES))], dim=-1)
    return counts.double() / codes.shape[-1]


def row_type_masks(active: torch.Tensor, codes: torch.Tensor, kinds: str | Sequence[str],
                   scope: str = "active") -> torch.Tensor:
    """``bool[K, L, W]``: the neurons of ``kinds`` that each language's row of one item gets (see the module
    docstring; ``active`` ``bool[K, L, W]``, ``codes`` ``[L, W]``)."""
    if scope not in SCOPES:
        raise LangNeuronsError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
    chosen = _of_kinds(codes, kinds).unsqueeze(0).expand_as(active)
    return chosen & active if scope == "active" else chosen.clone()


def conversion_masks(active: torch.Tensor, codes: torch.Tensor, kinds: str | Sequence[str]) -> torch.Tensor:
    """``bool[K, L, W]``: per language, the neurons of ``kinds`` INACTIVE in that language (raising them just
    above the threshold turns them into all-shared neurons: the paper's Table 3)."""
    return _of_kinds(codes, kinds).unsqueeze(0) & ~active


def _of_kinds(codes: torch.Tensor, kinds: str | Sequence[str]) -> torch.Tensor:
    kinds = [kinds] if isinstance(kinds, (str, int)) else list(kinds)
    chosen = torch.zeros(codes.shape, dtype=torch.bool, device=codes.device)
    for kind in kinds:
        chosen |= codes == type_code(kind)
    return chosen


def random_masks(like: torch.Tensor, generator: torch.Generator, candidates: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """``bool[..., L, W]`` with, in every row and layer, as many neurons as ``like`` has, drawn uniformly (from
    ``candidates`` where given, e.g. the neurons inactive in that row; fewer when there are not enough).

    One permutation per layer is shared by the leading rows (the languages of one item), so equal counts
    give equal sets and a smaller count a subset of a larger one.
    """
    layers, width = like.shape[-2:]
    perms = torch.stack([torch.randperm(width, generator=generator) for _ in range(layers)])  # [L, W]
    pool = torch.ones_like(like) if candidates is None else candidates.expand_as(like)
    in_order = torch.gather(pool, -1, perms.expand(*like.shape[:-2], layers, width).to(like.device))
    wanted = like.sum(-1, keepdim=True)
    keep_in_order = in_order & (in_order.long().cumsum(-1) <= wanted)
    out = torch.zeros_like(like)
    out.scatter_(-1, perms.expand_as(like).to(like.device), keep_in_order)
    return out


def item_generator(seed: int, item: int, salt: int = 0) -> torch.Generator:
    """A generator seeded by ``(seed, item, salt)`` (the same draw for an item whatever its batch)."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(item)) * 101 + int(salt))


@register_method
class NeuronTypes(NeuronMethod):
    """The neurons of one type (eqs. 4-7) for one item of last-token pooled vectors, per language.

    ``fit(pooled)`` takes :class:`~langneurons.stats.pooled.PooledVectors` ``[K, items, L, W]`` (mode
    ``last``) and computes the type codes of every item; ``scores_`` ``[L, W]`` is the share of items in which
    each neuron has the type ``kind`` (higher = more often). ``select()`` gives, per language, the neurons of
    ``kind`` the language's row has (``scope``, see the module docstring) for item ``item``, or, with
    ``item=None``, the neurons of type ``kind`` in EVERY item (their Figure 5's "overlap").
    """

    name = "neuron_types"
    consumes = "pooled_vectors"
    lower_is_specific = False

    def __init__(self, kind: str = "all_shared", threshold: float = 0.0, item: int | None = 0,
                 scope: str = "active"):
        type_code(kind)
        if scope not in SCOPES:
            raise LangNeuronsError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
        self.kind, self.threshold, self.item, self.scope = kind, check_threshold(threshold), item, scope

    def fit(self, pooled: Any) -> "NeuronTypes":
        if getattr(pooled, "mode", "last") != "last":
            raise LangNeuronsError(f"neuron types need last-token vectors (mode 'last'), got mode {pooled.mode!r}")
        vectors = pooled.vectors  # [K, N, L, W]
        if self.item is not None and not 0 <= int(self.item) < vectors.shape[1]:
            raise LangNeuronsError(f"item {self.item} is not one of the {vectors.shape[1]} items")
        self.pooled_ = pooled
        code = type_code(self.kind)
        hits = torch.zeros(vectors.shape[2:], dtype=torch.float64)
        for start in range(0, vectors.shape[1], 64):
            active = active_mask(vectors[:, start:start + 64].float(), self.threshold)  # [K, n, L, W]
            hits += (types_from_active(active, language_dim=0) == code).sum(0)
        self.scores_ = hits / vectors.shape[1]
        return self

    def select(self) -> NeuronSet:
        self._check_fitted()
        pooled = self.pooled_
        if self.item is None:
            every = self.scores_ == 1.0
            masks = {lang: every.clone() for lang in pooled.languages}
        else:
            active = active_mask(pooled.vectors[:, int(self.item)].float(), self.threshold)
            rows = row_type_masks(active, types_from_active(active), self.kind, self.scope)
            masks = {lang: rows[k] for k, lang in enumerate(pooled.languages)}
        meta = getattr(pooled, "meta", {}) or {}
        source = {key: meta[key] for key in ("model", "revision", "model_type", "dtype", "site", "corpus")
                  if key in meta} or {"pooled_vectors": {"languages": pooled.languages,
                                                         "items": int(pooled.vectors.shape[1])}}
        return NeuronSet.from_masks(masks, site=meta.get("site") or "ffn.act", method=self.name,
                                    parameters=self.get_params(), source=source)
