"""Neuron sets: for each language, the neurons (layer, index) that a method selected.

Saved as an artefact directory (``tensors.safetensors`` with one ``int64[n, 2]`` tensor of
``(layer, neuron)`` rows per language, plus ``meta.json`` with method, parameters, site, shape and the
statistics' provenance). Converts to and from the LAPE reference code's masks
(``List[language][layer] -> LongTensor`` saved with ``torch.save``, the ``*.neuron.pth`` files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from langneurons.sets.artefacts import read_artefact, write_artefact
from langneurons.errors import LangNeuronsError

KIND = "neuron_set"
SCHEMA_VERSION = 1


class NeuronSet:
    """Language -> layer -> sorted neuron ids, with the metadata of how they were found.

    Attributes:
        languages: language codes in order.
        num_layers, width: the shape of the neuron grid the ids index (layers x neurons per layer).
        site: the neuron site the ids refer to (e.g. ``ffn.act``).
        method, parameters: the selection method and its keyword parameters.
        source: provenance of the statistics the set was computed from (model, corpus, ...).
    """

    def __init__(self, neurons: dict[str, list[torch.Tensor]], num_layers: int, width: int, site: str = "ffn.act",
                 method: str = "manual", parameters: dict[str, Any] | None = None,
                 source: dict[str, Any] | None = None) -> None:
        self.languages = list(neurons)
        self.num_layers, self.width, self.site = int(num_layers), int(width), site
        self.method, self.parameters, self.source = method, dict(parameters or {}), dict(source or {})
        self._neurons: dict[str, list[torch.Tensor]] = {}
        for lang, layers in neurons.items():
            if len(layers) != num_layers:
                raise LangNeuronsError(f"language {lang!r}: {len(layers)} layers of ids, expected {num_layers}")
            clean = []
            for layer, ids in enumerate(layers):
                ids = torch.as_tensor(ids, dtype=torch.long).flatten().unique(sorted=True)
                if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= width):
                    raise LangNeuronsError(f"language {lang!r} layer {layer}: neuron id out of range [0, {width})")
                clean.append(ids)
            self._neurons[lang] = clean

    # -- access ----------------------------------------------------------------------------------
    def layers(self, language: str) -> list[torch.Tensor]:
        """Per layer, the sorted ``long[n]`` neuron ids of ``language``."""
        if language not in self._neurons:
            raise LangNeuronsError(f"neuron set has no language {language!r} (has {', '.join(self.languages)})")
        return self._neurons[language]

    def size(self, language: str) -> int:
        return sum(int(ids.numel()) for ids in self.layers(language))

    def sizes(self) -> dict[str, int]:
        return {lang: self.size(lang) for lang in self.languages}

    def layer_counts(self) -> torch.Tensor:
        """``int64[language, layer]``: how many neurons of each language lie in each layer."""
        return torch.tensor([[int(ids.numel()) for ids in self._neurons[lang]] for lang in self.languages],
                            dtype=torch.long).view(len(self.languages), self.num_layers)

    def mask(self, language: str) -> torch.Tensor:
        """``bool[layer, neuron]`` membership mask of ``language``."""
        mask = torch.zeros(self.num_layers, self.width, dtype=torch.bool)
        for layer, ids in enumerate(self.layers(language)):
            mask[layer, ids] = True
        return mask

    def pairs(self, language: str) -> torch.Tensor:
        """``int64[n, 2]`` rows of ``(layer, neuron)`` for ``language``."""
        rows = [torch.stack([torch.full_like(ids, layer), ids], dim=1) for layer, ids in enumerate(self.layers(language))]
        return torch.cat(rows) if rows else torch.zeros(0, 2, dtype=torch.long)

    def check_shape(self, num_layers: int, width: int, what: str = "the model") -> None:
        """Raise a clear error when the set was found on a grid of another shape."""
        if (num_layers, width) != (self.num_layers, self.width):
            raise LangNeuronsError(
                f"neuron set is for {self.num_layers} layers x {self.width} neurons but {what} has "
                f"{num_layers} x {width} at site {self.site!r} (recorded on {self.source.get('model')!r}?)"
            )

    # -- reference format ---------------------------------------------------------------------------
    def to_reference_masks(self) -> list[list[torch.Tensor]]:
        """The LAPE reference code's masks: ``masks[language][layer] = LongTensor`` of neuron ids."""
        return [[ids.clone() for ids in self._neurons[lang]] for lang in self.languages]

    @classmethod
    def from_reference_masks(cls, masks: list[list[torch.Tensor]], languages: list[str], width: int,
                             site: str = "ffn.act", **kwargs: Any) -> "NeuronSet":
        """Build a set from reference masks (``len(masks) == len(languages)``, one tensor per layer)."""
        if len(masks) != len(languages):
            raise LangNeuronsError(f"{len(masks)} masks for {len(languages)} languages")
        num_layers = len(masks[0]) if masks else 0
        return cls(dict(zip(languages, masks)), num_layers, width, site=site,
                   method=kwargs.pop("method", "reference"), **kwargs)

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        tensors = {f"neurons.{lang}": self.pairs(lang) for lang in self.languages}
        meta = {
            "languages": self.languages, "num_layers": self.num_layers, "width": self.width, "site": self.site,
            "method": self.method, "parameters": self.parameters, "sizes": self.sizes(), "source": self.source,
        }
        return write_artefact(directory, KIND, SCHEMA_VERSION, tensors, meta)

    def __repr__(self) -> str:
        return f"NeuronSet(method={self.method!r}, site={self.site!r}, sizes={self.sizes()})"


def _from_pairs(pairs: torch.Tensor, num_layers: int) -> list[torch.Tensor]:
    return [pairs[pairs[:, 0] == layer, 1] for layer in range(num_layers)]


def load_neurons(directory: str | Path) -> NeuronSet:
    """Load a neuron set written by :meth:`NeuronSet.save` (checksum verified)."""
    tensors, meta = read_artefact(directory, KIND, SCHEMA_VERSION)
    try:
        layers = {lang: _from_pairs(tensors[f"neurons.{lang}"], meta["num_layers"]) for lang in meta["languages"]}
        return NeuronSet(layers, meta["num_layers"], meta["width"], site=meta["site"], method=meta["method"],
                         parameters=meta.get("parameters"), source=meta.get("source"))
    except KeyError as exc:
        raise LangNeuronsError(f"{str(directory)!r} is not a valid neuron set: missing {exc}") from None


def save_reference_masks(neurons: NeuronSet, path: str | Path) -> Path:
    """Write the reference code's ``*.neuron.pth`` file (a ``torch.save`` of the masks)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(neurons.to_reference_masks(), partial)
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
