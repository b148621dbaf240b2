"""Neuron sets: for each language, the neurons ``(site, layer, index)`` that a method selected.

A set holds one or several sites (``ffn.act``, ``ffn.down_in``, ``attn.q``, ``attn.k``, ``attn.v``,
``attn.o_in``), each with its own ``(num_layers, width)`` grid. Saved as an artefact directory
(``tensors.safetensors`` + ``meta.json``); schema version 2 stores one ``int64[n, 2]`` tensor of
``(layer, index)`` rows per language and site, ``neurons.{lang}.{site}``, and lists the sites and their
grids in the meta; version-1 files (one site, ``neurons.{lang}``) still load. A one-site set keeps the 0.1
API (``site``, ``num_layers``, ``width``, ``layers(lang)``, ``mask(lang)``, ...) and the meta keys
``site`` / ``num_layers`` / ``width`` / ``sizes``. Converts to and from the LAPE reference code's masks
(``List[language][layer] -> LongTensor`` saved with ``torch.save``, the ``*.neuron.pth`` files) for one site.
Set algebra and band restriction live in :mod:`langneurons.sets.neuron_algebra`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from langneurons.errors import LangNeuronsError
from langneurons.sets.artefacts import read_artefact, write_artefact

KIND = "neuron_set"
SCHEMA_VERSION = 2

Grid = tuple[int, int]


def _clean_ids(ids: Any, width: int, where: str) -> torch.Tensor:
    ids = torch.as_tensor(ids, dtype=torch.long).flatten().unique(sorted=True)
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= width):
        raise LangNeuronsError(f"{where}: neuron id out of range [0, {width})")
    return ids


class NeuronSet:
    """Language -> site -> layer -> sorted neuron ids, with the metadata of how they were found.

    One site (0.1 form)::

        NeuronSet({"en": [ids_layer0, ids_layer1, ...]}, num_layers, width, site="ffn.act")

    Several sites::

        NeuronSet({"en": {"ffn.act": [...], "attn.q": [...]}}, grids={"ffn.act": (L, 11008), "attn.q": (L, 4096)})

    A language that lacks a site of ``grids`` has no neurons there.

    Attributes:
        languages: language codes (or any labels: item ids, row names) in order.
        sites: the sites the set addresses, in order; ``grid(site)`` is that site's ``(num_layers, width)``.
        method, parameters: the selection method and its keyword parameters.
        source: provenance of the statistics the set was computed from (model, corpus, ...).
    """

    def __init__(self, neurons: Mapping[str, Any], num_layers: int | None = None, width: int | None = None,
                 site: str = "ffn.act", method: str = "manual", parameters: dict[str, Any] | None = None,
                 source: dict[str, Any] | None = None, *, grids: Mapping[str, Sequence[int]] | None = None) -> None:
        if grids is None:
            if num_layers is None or width is None:
                raise LangNeuronsError("a neuron set needs num_layers and width (one site) or grids (several sites)")
            grids = {site: (num_layers, width)}
            neurons = {lang: {site: layers} for lang, layers in neurons.items()}
        elif num_layers is not None or width is not None:
            raise LangNeuronsError("give either num_layers and width (one site) or grids, not both")
        if not grids:
            raise LangNeuronsError("a neuron set needs at least one site")
        self._grids: dict[str, Grid] = {s: (int(g[0]), int(g[1])) for s, g in grids.items()}
        self.sites = list(self._grids)
        self.languages = list(neurons)
        self.method, self.parameters, self.source = method, dict(parameters or {}), dict(source or {})
        self._neurons: dict[str, dict[str, list[torch.Tensor]]] = {}
        for lang, by_site in neurons.items():
            if not isinstance(by_site, Mapping):
                raise LangNeuronsError(f"language {lang!r}: with grids, give {{site: [ids per layer]}}")
            unknown = set(by_site) - set(self._grids)
            if unknown:
                raise LangNeuronsError(f"language {lang!r}: site(s) {sorted(unknown)} have no grid "
                                       f"(grids for {', '.join(self.sites)})")
            self._neurons[lang] = {}
            for s, (layers_n, width_n) in self._grids.items():
                layers = by_site.get(s)
                if layers is None:
                    layers = [torch.zeros(0, dtype=torch.long)] * layers_n
                if len(layers) != layers_n:
                    raise LangNeuronsError(f"language {lang!r} site {s!r}: {len(layers)} layers of ids, "
                                           f"expected {layers_n}")
                self._neurons[lang][s] = [_clean_ids(ids, width_n, f"language {lang!r} site {s!r} layer {i}")
                                          for i, ids in enumerate(layers)]

    # -- sites and grids --------------------------------------------------------------------------
    def _site(self, site: str | None, what: str = "") -> str:
        if site is None:
            if len(self.sites) == 1:
                return self.sites[0]
            raise LangNeuronsError(
                f"the neuron set has several sites ({', '.join(self.sites)}); {what or 'choose one'}: pass "
                f"site=... or use .restrict(sites=[...])")
        if site not in self._grids:
            raise LangNeuronsError(f"neuron set has no site {site!r} (has {', '.join(self.sites)})")
        return site

    @property
    def site(self) -> str:
        """The one site of a one-site set (an error names the sites of a multi-site set)."""
        return self._site(None, "neurons.site is ambiguous")

    @property
    def num_layers(self) -> int:
        """Layers of the grid (defined when every site has the same number of layers)."""
        counts = {grid[0] for grid in self._grids.values()}
        if len(counts) != 1:
            return self.grid(self._site(None, "the sites have different numbers of layers"))[0]
        return counts.pop()

    @property
    def width(self) -> int:
        """Neurons per layer of a one-site set."""
        return self.grid(self._site(None, "neurons.width is ambiguous"))[1]

    @property
    def grids(self) -> dict[str, Grid]:
        return dict(self._grids)

    def grid(self, site: str | None = None) -> Grid:
        """``(num_layers, width)`` of ``site``."""
        return self._grids[self._site(site)]

    # -- access -----------------------------------------------------------------------------------
    def _lang(self, language: str) -> dict[str, list[torch.Tensor]]:
        if language not in self._neurons:
            raise LangNeuronsError(f"neuron set has no language {language!r} (has {', '.join(self.languages)})")
        return self._neurons[language]

    def layers(self, language: str, site: str | None = None) -> list[torch.Tensor]:
        """Per layer, the sorted ``long[n]`` neuron ids of ``language`` at ``site``."""
        by_site = self._lang(language)
        return by_site[self._site(site)]

    def size(self, language: str, site: str | None = None) -> int:
        """Number of neurons of ``language`` (at ``site``, or over every site)."""
        by_site = self._lang(language)
        sites = self.sites if site is None else [self._site(site)]
        return sum(int(ids.numel()) for s in sites for ids in by_site[s])

    def sizes(self, site: str | None = None) -> dict[str, int]:
        """Language -> number of neurons (at ``site``, or over every site)."""
        return {lang: self.size(lang, site) for lang in self.languages}

    def layer_counts(self, site: str | None = None) -> torch.Tensor:
        """``int64[language, layer]``: how many neurons of each language lie in each layer of ``site``."""
        site = self._site(site)
        return torch.tensor([[int(ids.numel()) for ids in self._neurons[lang][site]] for lang in self.languages],
                            dtype=torch.long).view(len(self.languages), self._grids[site][0])

    def mask(self, language: str, site: str | None = None) -> torch.Tensor:
        """``bool[layer, neuron]`` membership mask of ``language`` at ``site``."""
        site = self._site(site)
        mask = torch.zeros(self._grids[site], dtype=torch.bool)
        for layer, ids in enumerate(self.layers(language, site)):
            mask[layer, ids] = True
        return mask

    def masks(self, language: str) -> dict[str, torch.Tensor]:
        """Site -> ``bool[layer, neuron]`` membership mask of ``language``."""
        return {site: self.mask(language, site) for site in self.sites}

    def pairs(self, language: str, site: str | None = None) -> torch.Tensor:
        """``int64[n, 2]`` rows of ``(layer, neuron)`` for ``language`` at ``site``."""
        layers = self.layers(language, site)
        rows = [torch.stack([torch.full_like(ids, layer), ids], dim=1) for layer, ids in enumerate(layers)]
        return torch.cat(rows) if rows else torch.zeros(0, 2, dtype=torch.long)

    def check_shape(self, num_layers: int, width: int, what: str = "the model", site: str | None = None) -> None:
        """Raise a clear error when the set was found on a grid of another shape (at ``site``)."""
        site = self._site(site)
        if (num_layers, width) != self._grids[site]:
            layers_n, width_n = self._grids[site]
            raise LangNeuronsError(
                f"neuron set is for {layers_n} layers x {width_n} neurons but {what} has "
                f"{num_layers} x {width} at site {site!r} (recorded on {self.source.get('model')!r}?)"
            )

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_masks(cls, masks: Mapping[str, Any], site: str = "ffn.act", **kwargs: Any) -> "NeuronSet":
        """From boolean masks: ``{lang: bool[L, W]}`` (one ``site``) or ``{lang: {site: bool[L, W]}}``."""
        per_site = {lang: (m if isinstance(m, Mapping) else {site: m}) for lang, m in masks.items()}
        grids: dict[str, Grid] = {}
        for lang, by_site in per_site.items():
            for s, mask in by_site.items():
                if mask.dim() != 2:
                    raise LangNeuronsError(f"mask of {lang!r} at {s!r} must be bool[layers, width], got "
                                           f"{tuple(mask.shape)}")
                shape = (int(mask.shape[0]), int(mask.shape[1]))
                if grids.setdefault(s, shape) != shape:
                    raise LangNeuronsError(f"site {s!r}: masks of shapes {grids[s]} and {shape}")
        if not grids:
            raise LangNeuronsError("no masks to build a neuron set from")
        neurons = {lang: {s: [row.nonzero().flatten() for row in mask.bool()] for s, mask in by_site.items()}
                   for lang, by_site in per_site.items()}
        return cls(neurons, grids=grids, **kwargs)

    def _derived(self, neurons: dict[str, dict[str, list[torch.Tensor]]], grids: Mapping[str, Grid],
                 step: dict[str, Any]) -> "NeuronSet":
        parameters = dict(self.parameters)
        parameters["derived"] = [*parameters.get("derived", []), step]
        return NeuronSet(neurons, grids=grids, method=self.method, parameters=parameters, source=self.source)

    def select(self, languages: str | Iterable[str]) -> "NeuronSet":
        """The set restricted to ``languages`` (in that order)."""
        languages = [languages] if isinstance(languages, str) else list(languages)
        return self._derived({lang: self._lang(lang) for lang in languages}, self._grids,
                             {"op": "select", "languages": languages})

    def union(self, other: "NeuronSet", language: str | None = None) -> "NeuronSet":
        from langneurons.sets.neuron_algebra import combine

        return combine(self, other, "union", language)

    def intersection(self, other: "NeuronSet", language: str | None = None) -> "NeuronSet":
        from langneurons.sets.neuron_algebra import combine

        return combine(self, other, "intersection", language)

    def difference(self, other: "NeuronSet", language: str | None = None) -> "NeuronSet":
        from langneurons.sets.neuron_algebra import combine

        return combine(self, other, "difference", language)

    __or__, __and__, __sub__ = union, intersection, difference

    def shared(self, languages: Iterable[str] | None = None, label: str = "shared") -> "NeuronSet":
        """A one-label set of the neurons that every one of ``languages`` (default: all) has."""
        from langneurons.sets.neuron_algebra import shared

        return shared(self, languages, label)

    def restrict(self, layers: Iterable[int] | None = None, sites: Iterable[str] | None = None) -> "NeuronSet":
        """Only the neurons in ``layers`` (e.g. ``range(a, b)``) of ``sites``; the grids stay the model's."""
        from langneurons.sets.neuron_algebra import restrict

        return restrict(self, layers, sites)

    # -- reference format -------------------------------------------------------------------------
    def to_reference_masks(self, site: str | None = None) -> list[list[torch.Tensor]]:
        """The LAPE reference code's masks of one site: ``masks[language][layer] = LongTensor`` of neuron ids.

        ``site`` defaults to the set's one site, or to its one FFN site (``ffn.*``) in a multi-site set.
        """
        ffn = [s for s in self.sites if s.startswith("ffn.")]
        if site is None and len(self.sites) > 1 and len(ffn) == 1:
            site = ffn[0]
        site = self._site(site, "the reference masks hold one site")
        return [[ids.clone() for ids in self._neurons[lang][site]] for lang in self.languages]

    @classmethod
    def from_reference_masks(cls, masks: list[list[torch.Tensor]], languages: list[str], width: int,
                             site: str = "ffn.act", **kwargs: Any) -> "NeuronSet":
        """Build a set from reference masks (``len(masks) == len(languages)``, one tensor per layer)."""
        if len(masks) != len(languages):
            raise LangNeuronsError(f"{len(masks)} masks for {len(languages)} languages")
        num_layers = len(masks[0]) if masks else 0
        return cls(dict(zip(languages, masks)), num_layers, width, site=site,
                   method=kwargs.pop("method", "reference"), **kwargs)

    # -- persistence ------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        """The ``meta.json`` fields (``site`` / ``num_layers`` / ``width`` for one-site sets, as in 0.1)."""
        meta: dict[str, Any] = {
            "languages": self.languages, "sites": self.sites,
            "grids": {site: list(grid) for site, grid in self._grids.items()},
            "method": self.method, "parameters": self.parameters, "sizes": self.sizes(),
            "sizes_by_site": {site: self.sizes(site) for site in self.sites}, "source": self.source,
        }
        if len(self.sites) == 1:
            meta.update(site=self.sites[0], num_layers=self._grids[self.sites[0]][0],
                        width=self._grids[self.sites[0]][1])
        return meta

    def save(self, directory: str | Path) -> Path:
        tensors = {f"neurons.{lang}.{site}": self.pairs(lang, site) for lang in self.languages for site in self.sites}
        return write_artefact(directory, KIND, SCHEMA_VERSION, tensors, self.meta())

    def __repr__(self) -> str:
        where = f"site={self.sites[0]!r}" if len(self.sites) == 1 else f"sites={self.sites!r}"
        return f"NeuronSet(method={self.method!r}, {where}, sizes={self.sizes()})"


def _from_pairs(pairs: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
    pairs = pairs.view(-1, 2).long()
    if pairs.numel() and (int(pairs[:, 0].min()) < 0 or int(pairs[:, 0].max()) >= num_layers):
        raise LangNeuronsError(f"layer index out of range [0, {num_layers})")
    return [pairs[pairs[:, 0] == layer, 1] for layer in range(num_layers)]


def load_neurons(directory: str | Path) -> NeuronSet:
    """Load a neuron set written by :meth:`NeuronSet.save` (schema 1 or 2; checksum verified)."""
    tensors, meta = read_artefact(directory, KIND, SCHEMA_VERSION)
    try:
        kwargs = dict(method=meta["method"], parameters=meta.get("parameters"), source=meta.get("source"))
        if int(meta.get("schema_version", 1)) < 2:
            layers = {lang: _from_pairs(tensors[f"neurons.{lang}"], meta["num_layers"]) for lang in meta["languages"]}
            return NeuronSet(layers, meta["num_layers"], meta["width"], site=meta["site"], **kwargs)
        grids = {site: tuple(grid) for site, grid in meta["grids"].items()}
        neurons = {lang: {site: _from_pairs(tensors[f"neurons.{lang}.{site}"], grid[0]) for site, grid in grids.items()}
                   for lang in meta["languages"]}
        return NeuronSet(neurons, grids=grids, **kwargs)
    except KeyError as exc:
        raise LangNeuronsError(f"{str(directory)!r} is not a valid neuron set: missing {exc}") from None


def save_reference_masks(neurons: NeuronSet, path: str | Path, site: str | None = None) -> Path:
    """Write the reference code's ``*.neuron.pth`` file (a ``torch.save`` of one site's masks)."""
    masks = neurons.to_reference_masks(site)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(masks, partial)
    partial.replace(path)
    return path


def load_reference_masks(path: str | Path, languages: list[str], width: int, site: str = "ffn.act") -> NeuronSet:
    """Read a reference ``*.neuron.pth`` file (tensors only: loaded with ``weights_only=True``)."""
    try:
        masks = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LangNeuronsError(f"mask file {str(path)!r} does not exist") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise LangNeuronsError(f"{str(path)!r} is not a reference mask file: {exc}") from None
    if not isinstance(masks, (list, tuple)) or not all(isinstance(m, (list, tuple)) for m in masks):
        raise LangNeuronsError(f"{str(path)!r} is not a list (language) of lists (layer) of tensors")
    return NeuronSet.from_reference_masks(list(map(list, masks)), languages, width, site=site,
                                          source={"reference_masks": str(path)})
