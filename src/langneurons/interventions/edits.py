"""Neuron edits: which neurons, what to do to them, with which values, at which positions.

:class:`NeuronEdit` is the general edit; ``Zero``, ``SetValue``, ``Raise``, ``Scale`` and ``Add`` fix its kind,
and the 0.1 classes ``Deactivate`` / ``Activate`` (in :mod:`langneurons.interventions.neurons`) become one.

Which neurons:
  * ``NeuronEdit(neurons, languages)``: the union of ``languages`` (default: all) of the set, every row;
  * ``rows=[label_0, ..., label_{B-1}]``: row ``i`` gets the neurons of ``label_i`` (a language of the set, a
    list of them, or None for no neurons): per-row sets, e.g. a set whose labels are item ids (Sharing Matters
    deactivates each item's own all-shared neurons);
  * ``neurons=[set_0, ..., set_{B-1}]``: row ``i`` gets (the ``languages`` of) its own set.
  A multi-site set edits every site it holds (``sites=`` keeps some).

What, with which values (``x`` is the neuron's activation, ``v`` the value):
  ``zero`` x := 0; ``set`` x := v; ``raise`` x := max(x, v) (the LAPE paper's "increase to the average");
  ``scale`` x := x * v; ``add`` x := x + v. ``v`` is ``strength`` times one of
  * ``value``: a number, ``float[layers, width]`` (per neuron), ``float[B, layers, width]`` (per row and
    neuron), or ``{site: one of those}``;
  * ``stats``: the mean activation (``activation_sum / token_count``) of ``value_language`` (one language, or
    one per row), or, without it, of each neuron's own language (its row's label with ``rows=``; later
    languages win where sets overlap, as in 0.1).

At which positions: ``all``, ``last`` (each row's last real token of each forward call, left or right padding),
``prompt`` (calls that do not continue a KV cache: a plain forward, the first call of ``generate``),
``generated`` (calls that continue a KV cache: the tokens ``generate`` produces after the prompt). Under
``generate(use_cache=False)`` every call is a prompt call, so ``generated`` edits nothing there.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Mapping, Sequence

import torch

from langneurons.errors import LangNeuronsError
from langneurons.interventions.ops import KINDS, POSITIONS, Op
from langneurons.sets.neuronset import NeuronSet

RowLabels = Sequence["str | Sequence[str] | None"]


def _as_list(labels: str | Sequence[str] | None) -> list[str]:
    return [] if labels is None else [labels] if isinstance(labels, str) else list(labels)


class NeuronEdit:
    """One edit of neurons at their sites (see the module docstring for every argument)."""

    KIND = "zero"

    def __init__(self, neurons: NeuronSet | Sequence[NeuronSet], languages: str | Sequence[str] | None = None,
                 value: Any = None, *, kind: str | None = None, stats: Any = None,
                 value_language: str | Sequence[str] | None = None, strength: float = 1.0,
                 rows: RowLabels | None = None, positions: str = "all", sites: Sequence[str] | None = None) -> None:
        if kind is not None and type(self) is not NeuronEdit and kind != self.KIND:
            raise LangNeuronsError(f"{type(self).__name__} is a {self.KIND!r} edit, not {kind!r}")
        self.kind = kind or self.KIND
        if self.kind not in KINDS:
            raise LangNeuronsError(f"unknown edit kind {self.kind!r}; known: {', '.join(KINDS)}")
        if positions not in POSITIONS:
            raise LangNeuronsError(f"unknown positions {positions!r}; known: {', '.join(POSITIONS)}")
        if self.kind == "zero" and (value is not None or stats is not None):
            raise LangNeuronsError("a 'zero' edit takes no value or statistics")
        if self.kind != "zero" and (value is None) == (stats is None):
            raise LangNeuronsError(f"a {self.kind!r} edit needs exactly one of value=... or stats=...")
        if isinstance(neurons, NeuronSet):
            self.row_sets = None
        elif rows is not None:
            raise LangNeuronsError("give per-row sets either as a list of sets or as rows=[label per row], not both")
        else:
            self.row_sets = list(neurons)
            if not self.row_sets or not all(isinstance(s, NeuronSet) for s in self.row_sets):
                raise LangNeuronsError("neurons must be a NeuronSet or a non-empty list of NeuronSets (one per row)")
        self.neurons, self.positions, self.strength = neurons, positions, float(strength)
        self.languages = None if languages is None else _as_list(languages)
        self.value, self.stats, self.value_language = value, stats, value_language
        self.rows = None if rows is None else [_as_list(r) for r in rows]
        self._sites_filter = None if sites is None else _as_list(sites)
        self._means: torch.Tensor | None = None
        self.batch_size = self._batch_size()

    # -- which neurons --------------------------------------------------------------------------------
    def _batch_size(self) -> int | None:
        sizes = {}
        if self.rows is not None:
            sizes["rows"] = len(self.rows)
        if self.row_sets is not None:
            sizes["neuron sets"] = len(self.row_sets)
        if isinstance(self.value_language, (list, tuple)):
            sizes["value languages"] = len(self.value_language)
        values = self.value.values() if isinstance(self.value, Mapping) else [self.value]
        for value in values:
            if isinstance(value, torch.Tensor) and value.dim() == 3:
                sizes["per-row values"] = int(value.shape[0])
        if len(set(sizes.values())) > 1:
            raise LangNeuronsError(f"per-row parts of the edit disagree on the number of rows: {sizes}")
        return next(iter(sizes.values()), None)

    def row_labels(self) -> list[tuple[NeuronSet, list[str]]] | None:
        """Per row, the set and its labels whose neurons the row gets; None when every row gets the same."""
        if self.row_sets is not None:
            return [(s, s.languages if self.languages is None else self.languages) for s in self.row_sets]
        if self.rows is not None:
            return [(self.neurons, labels) for labels in self.rows]
        return None

    def shared_languages(self) -> list[str]:
        return self.neurons.languages if self.languages is None else self.languages

    @property
    def sets(self) -> list[NeuronSet]:
        return self.row_sets if self.row_sets is not None else [self.neurons]

    @property
    def sites(self) -> list[str]:
        """The sites this edit touches, in order."""
        sites: list[str] = []
        for neurons in self.sets:
            sites.extend(s for s in neurons.sites if s not in sites)
        if self._sites_filter is not None:
            missing = [s for s in self._sites_filter if s not in sites]
            if missing:
                raise LangNeuronsError(f"the edit's neurons have no site(s) {missing} (have {', '.join(sites)})")
            sites = [s for s in sites if s in self._sites_filter]
        return sites

    # -- checks ---------------------------------------------------------------------------------------
    def check(self, grids: Mapping[str, tuple[int, int]]) -> None:
        """Raise a clear error for any mismatch with the model's ``grids`` (site -> (layers, width))."""
        rows = self.row_labels()
        for neurons, labels in rows if rows is not None else [(self.neurons, self.shared_languages())]:
            for label in labels:
                neurons.layers(label, neurons.sites[0])  # clear error for an unknown language
            for site in self.sites:
                if site in neurons.sites:
                    neurons.check_shape(*grids[site], site=site)
        if self.value is not None:
            self._check_value(grids)
        if self.stats is not None:
            self._check_stats(grids, rows)

    def _check_value(self, grids: Mapping[str, tuple[int, int]]) -> None:
        if isinstance(self.value, Mapping):
            missing = [s for s in self.sites if s not in self.value]
            if missing:
                raise LangNeuronsError(f"value has no entry for site(s) {missing}")
        elif len(self.sites) > 1 and isinstance(self.value, torch.Tensor) and self.value.dim() > 0:
            raise LangNeuronsError(f"the edit spans sites {self.sites}: give value={{site: tensor}}")
        for site in self.sites:
            value = self.value[site] if isinstance(self.value, Mapping) else self.value
            value = torch.as_tensor(value)
            if value.dim() == 0:
                continue
            if value.dim() not in (2, 3) or tuple(value.shape[-2:]) != tuple(grids[site]):
                raise LangNeuronsError(
                    f"value at site {site!r} must be a number, float[{grids[site][0]}, {grids[site][1]}] or "
                    f"float[rows, {grids[site][0]}, {grids[site][1]}], got shape {tuple(value.shape)}")

    def _check_stats(self, grids: Mapping[str, tuple[int, int]], rows) -> None:
        stats = self.stats
        stats_site = stats.meta.get("site") if hasattr(stats, "meta") else None
        for site in self.sites:
            if stats_site and stats_site != site:
                raise LangNeuronsError(f"statistics are of site {stats_site!r}, neurons of {site!r}")
            if (stats.num_layers, stats.width) != tuple(grids[site]):
                raise LangNeuronsError("statistics and neuron set have different shapes")
        if self.value_language is not None:
            sources = _as_list(self.value_language)
        elif rows is not None:
            sources = [label for _, labels in rows for label in labels]
        else:
            sources = self.shared_languages()
        for source in sources:
            if source not in stats.languages:
                raise LangNeuronsError(f"statistics have no language {source!r} to take mean activations from")

    # -- values and operations --------------------------------------------------------------------
    def _mean_rows(self) -> torch.Tensor:
        if self._means is None:
            self._means = self.stats.mean_activation().double()
        return self._means

    def _from_labels(self, site: str, layer: int, labeled: list[tuple[NeuronSet, list[str]]]) -> torch.Tensor:
        """``float64[len(labeled), W]``: each neuron of a label gets that label's mean (later labels win)."""
        means, languages = self._mean_rows(), self.stats.languages
        out = torch.zeros(len(labeled), means.shape[-1], dtype=torch.float64)
        for row, (neurons, labels) in enumerate(labeled):
            if site not in neurons.sites:
                continue
            for label in labels:
                ids = neurons.layers(label, site)[layer]
                out[row, ids] = means[languages.index(label), layer, ids]
        return out

    def dense_values(self, site: str, layer: int) -> torch.Tensor:
        """``float64`` values of ``layer`` at ``site``: ``[]``, ``[W]`` (per neuron) or ``[B, W]`` (per row)."""
        if self.value is not None:
            value = self.value[site] if isinstance(self.value, Mapping) else self.value
            value = torch.as_tensor(value, dtype=torch.float64)
            out = value if value.dim() == 0 else value[layer] if value.dim() == 2 else value[:, layer]
        elif isinstance(self.value_language, str):
            out = self._mean_rows()[self.stats.languages.index(self.value_language), layer]
        elif self.value_language is not None:
            index = torch.tensor([self.stats.languages.index(lang) for lang in self.value_language])
            out = self._mean_rows()[index, layer]
        else:
            rows = self.row_labels()
            out = self._from_labels(site, layer, rows) if rows is not None else \
                self._from_labels(site, layer, [(self.neurons, self.shared_languages())])[0]
        return out * self.strength if self.strength != 1.0 else out

    def _gathered(self, site: str, layer: int, ids: torch.Tensor) -> torch.Tensor:
        dense = self.dense_values(site, layer)
        return dense if dense.dim() == 0 else dense[..., ids].contiguous()

    def op(self, site: str, layer: int, width: int) -> Op | None:
        """The :class:`Op` of this edit at ``layer`` of ``site`` (None when it has no neurons there)."""
        rows = self.row_labels()
        has_values = self.kind != "zero"
        if rows is None:
            if site not in self.neurons.sites:
                return None
            parts = [self.neurons.layers(lang, site)[layer] for lang in self.shared_languages()]
            ids = torch.cat(parts).unique(sorted=True) if parts else torch.zeros(0, dtype=torch.long)
            if not ids.numel():
                return None
            values = partial(self._gathered, site, layer, ids) if has_values else None
            return Op(self.kind, self.positions, ids=ids, values=values, rows=self.batch_size)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for row, (neurons, labels) in enumerate(rows):
            if site in neurons.sites:
                for label in labels:
                    mask[row, neurons.layers(label, site)[layer]] = True
        if not bool(mask.any()):
            return None
        values = partial(self.dense_values, site, layer) if has_values else None
        return Op(self.kind, self.positions, mask=mask, values=values, rows=len(rows))

    def describe(self) -> dict[str, Any]:
        """What the edit does (for provenance)."""
        data: dict[str, Any] = {"kind": self.kind, "positions": self.positions, "sites": self.sites}
        if self.row_sets is not None or self.rows is not None:
            data["rows"] = self.batch_size
        else:
            data["languages"] = self.shared_languages()
        if self.value is not None:
            data["value"] = self.value if isinstance(self.value, (int, float)) else "tensor"
        if self.stats is not None:
            data["value"] = "mean activation (activation_sum / token_count)"
            data["value_language"] = self.value_language
        if self.strength != 1.0:
            data["strength"] = self.strength
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class Zero(NeuronEdit):
    """Set the neurons to 0."""

    KIND = "zero"


class SetValue(NeuronEdit):
    """Set the neurons to a value (``value=`` or the mean activation from ``stats=``)."""

    KIND = "set"


class Raise(NeuronEdit):
    """Raise the neurons to at least a value: ``max(x, v)`` (the LAPE paper's "increase to the average")."""

    KIND = "raise"


class Scale(NeuronEdit):
    """Multiply the neurons by a factor (``value=``)."""

    KIND = "scale"


class Add(NeuronEdit):
    """Add a value to the neurons (``value=``, e.g. a steering vector as ``float[layers, width]``)."""

    KIND = "add"
