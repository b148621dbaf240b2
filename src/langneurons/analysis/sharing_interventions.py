"""Sharing Matters, Tables 2 and 3: task accuracy when each item's neurons of a type are deactivated or converted.

While the model answers item ``i`` in language ``k``, the row's neurons are taken from that item's own types
(computed from the recorded last-token activations, :mod:`langneurons.methods.neuron_types`):

* **deactivation** (Table 2), condition ``T`` in ``all_shared``, ``partial_shared``, ``specific``: the neurons of
  type ``T`` that the row has (``scope="active"``, the default: the all-shared neurons, the neurons specific to
  ``k``, the partial-shared ones active in ``k``; ``scope="type"``: every neuron of the type) are set to 0.
  Control ``random_T``: in every layer the same number of neurons, drawn uniformly from the layer (one
  permutation per item, layer and type, so languages with equal counts get equal sets).
* **conversion** (Table 3), condition ``T`` in ``partial_shared``, ``specific``, ``partial_shared+specific``: the
  neurons of the type(s) that are inactive in ``k`` (``A <= t``) are set to ``t + epsilon`` (just above the
  threshold; ``epsilon = 1e-3`` by default), so that they are active in every language: all-shared.
  All-shared neurons have nothing to convert, so conversion has no ``all_shared`` row. Control ``random_T``:
  the same number of neurons per row and layer, drawn from the neurons inactive in that row, set likewise.

Interpretation (the paper has no code for either): the edit applies at every position of the forward passes
that score the item (``positions="all"``: prompt and continuation; the types themselves are those of the
prompt's last token), on the type site ``ffn.act``. Rows of one batch belong to different items; the per-row
sets are built from each row's item (:class:`~langneurons.interventions.edits.NeuronEdit` with ``rows=``).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import AbstractContextManager
from typing import Any, Sequence

import torch

from langneurons.analysis.sharing_items import SharingItems
from langneurons.errors import LangNeuronsError
from langneurons.evaluation.tasks.run import TaskResult, evaluate_task
from langneurons.interventions.edits import NeuronEdit
from langneurons.interventions.neurons import intervene
from langneurons.methods.neuron_types import (
    SCOPES,
    TYPES,
    active_mask,
    check_threshold,
    conversion_masks,
    item_generator,
    random_masks,
    row_type_masks,
    types_from_active,
)
from langneurons.model.sites import locate_site
from langneurons.sets.neuronset import NeuronSet

DEACTIVATION_TYPES = ("all_shared", "partial_shared", "specific")
CONVERSION_TYPES = ("partial_shared", "specific", "partial_shared+specific")
FAMILIES = ("deactivation", "conversion")
TYPE_SITE = "ffn.act"


def conditions(family: str, random: bool = True) -> list[str]:
    """The rows of a table (without ``normal``): the types, then ``random_<type>`` per type."""
    if family not in FAMILIES:
        raise LangNeuronsError(f"unknown intervention family {family!r}; choose one of {', '.join(FAMILIES)}")
    kinds = list(DEACTIVATION_TYPES if family == "deactivation" else CONVERSION_TYPES)
    return kinds + ([f"random_{kind}" for kind in kinds] if random else [])


class TypeEdits:
    """Per-item, per-row neuron edits by type from last-token activations ``acts`` (``PooledVectors``
    ``[K, N, L, W]``, mode ``last``) of ``items``; see the module docstring."""

    def __init__(self, model: Any, acts: Any, items: SharingItems, threshold: float = 0.0, scope: str = "active",
                 epsilon: float = 1e-3, seed: int = 0, positions: str = "all", cache_items: int = 256) -> None:
        if scope not in SCOPES:
            raise LangNeuronsError(f"unknown scope {scope!r}; choose one of {', '.join(SCOPES)}")
        self.epsilon = check_threshold(epsilon, "conversion epsilon")
        if self.epsilon <= 0:
            raise LangNeuronsError(f"the conversion epsilon must be above 0, got {epsilon}")
        self.model, self.acts, self.items = model, acts, items
        self.threshold, self.scope, self.seed, self.positions = check_threshold(threshold), scope, int(seed), positions
        self.site_map = locate_site(model, TYPE_SITE)  # located before any per-row edit is entered
        self._index = items.index_of()
        self._languages = {lang: k for k, lang in enumerate(items.languages)}
        self._cache: OrderedDict[int, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._cache_items = cache_items

    def _types(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        if item not in self._cache:
            active = active_mask(self.acts.vectors[:, item].float(), self.threshold)  # [K, L, W]
            self._cache[item] = (active, types_from_active(active))
            if len(self._cache) > self._cache_items:
                self._cache.popitem(last=False)
        self._cache.move_to_end(item)
        return self._cache[item]

    def masks(self, family: str, condition: str, item: int) -> torch.Tensor:
        """``bool[K, L, W]``: the neurons each language's row of ``item`` gets under ``condition``."""
        if condition not in conditions(family):
            raise LangNeuronsError(f"unknown {family} condition {condition!r}; known: {', '.join(conditions(family))}")
        active, codes = self._types(item)
        random = condition.startswith("random_")
        kinds = condition.removeprefix("random_").split("+")
        if family == "deactivation":
            chosen = row_type_masks(active, codes, kinds, self.scope)
            candidates = None
        else:
            chosen = conversion_masks(active, codes, kinds)
            candidates = ~active
        if not random:
            return chosen
        salt = (FAMILIES.index(family) * 10 + conditions(family, random=False).index(condition.removeprefix("random_")))
        return random_masks(chosen, item_generator(self.seed, item, salt), candidates)

    def edit(self, family: str, condition: str, row_items: Sequence[Any]) -> NeuronEdit:
        """The edit of one forward batch whose row ``j`` scores ``row_items[j]`` (a task item: ``id``, ``language``)."""
        labels, masks = [], {}
        for row in row_items:
            if row.id not in self._index or row.language not in self._languages:
                raise LangNeuronsError(f"item {row.id!r} ({row.language}) is not one of the analysed items")
            item, k = self._index[row.id], self._languages[row.language]
            label = f"{item}:{k}"
            if label not in masks:
                masks[label] = self.masks(family, condition, item)[k]
            labels.append(label)
        neurons = NeuronSet.from_masks(masks, site=TYPE_SITE)
        if family == "deactivation":
            return NeuronEdit(neurons, kind="zero", rows=labels, positions=self.positions)
        return NeuronEdit(neurons, value=self.threshold + self.epsilon, kind="set", rows=labels,
                          positions=self.positions)

    def batch_edit(self, family: str):
        """``batch_edit(condition, row_items)`` for :func:`~langneurons.evaluation.tasks.evaluate_task`."""

        def opened(condition: str, row_items: Sequence[Any]) -> AbstractContextManager:
            return intervene(self.model, [self.edit(family, condition, row_items)], site_map=self.site_map)

        return opened

    def sizes(self, family: str, names: Sequence[str]) -> torch.Tensor:
        """``float64[len(names), K]``: the mean number of neurons a row gets, per condition and language."""
        total = torch.zeros(len(names), len(self.items.languages), dtype=torch.float64)
        for item in range(self.items.num_items):
            for j, name in enumerate(names):
                total[j] += self.masks(family, name, item).sum((1, 2)).double()
        return total / max(1, self.items.num_items)


def run_interventions(loaded: Any, edits: TypeEdits, families: Sequence[str] = FAMILIES, random: bool = True,
                      batch_size: int = 8, chunk_size: int | None = None, progress: bool = True
                      ) -> dict[str, TaskResult]:
    """``{family: TaskResult}`` with rows ``normal`` then the family's conditions (``normal`` is scored once)."""
    task = edits.items.task
    if task is None:
        raise LangNeuronsError("interventions need a task with gold answers (give --task)")
    results: dict[str, TaskResult] = {}
    normal = None
    for family in families:
        names = conditions(family, random)
        wanted = names if normal is not None else ["normal", *names]
        result = evaluate_task(loaded, task, wanted, batch_size=batch_size, chunk_size=chunk_size, progress=progress,
                               batch_edit=edits.batch_edit(family))
        if normal is None:
            normal = result
        else:  # prepend the normal row scored with the first family
            result = TaskResult(result.task, result.metric, ["normal", *result.conditions], result.languages,
                                torch.cat([normal.row("normal").unsqueeze(0), result.accuracy]), result.counts,
                                {"normal": normal.items["normal"], **result.items}, result.meta)
        result.meta["sizes"] = {name: dict(zip(edits.items.languages, row.tolist()))
                                for name, row in zip(names, edits.sizes(family, names))}
        results[family] = result
    return results


__all__ = ["CONVERSION_TYPES", "DEACTIVATION_TYPES", "FAMILIES", "TYPES", "TypeEdits", "conditions",
           "run_interventions"]
