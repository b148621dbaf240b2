"""Parameter sets: for each language, the weight entries (parameter name, flat index) a method selected.

The parameter-variation baseline of the LAPE paper (section 3.1 d) selects individual weights, not
neurons, so its result is a :class:`ParameterSet`: per language, per parameter name (as in
``model.named_parameters()``, e.g. ``model.layers.3.mlp.up_proj.weight``), sorted flat ``int64``
indices into that weight. The set also records the shape of every parameter that was *considered*
(the pool the 1% budget was taken from), so a random set of the same sizes can be drawn and a model
can be checked before anything is zeroed.

Saved as an artefact directory: ``tensors.safetensors`` with one ``int64[n]`` tensor per
(language, parameter) named ``"{language}/{parameter}"`` (empty ones are not stored) and
``meta.json`` with kind ``parameter_set``, the considered shapes, method, parameters and provenance
(base model, fine-tuned model per language).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from langneurons.sets.artefacts import read_artefact, write_artefact
from langneurons.errors import LangNeuronsError

KIND = "parameter_set"
SCHEMA_VERSION = 1
_SEPARATOR = "/"
_RANDPERM_LIMIT = 1 << 24  # above this many considered entries, random draws avoid a full permutation


class ParameterSet:
    """Language -> parameter name -> sorted flat indices, with the metadata of how they were found.

    Attributes:
        languages: language codes in order.
        shapes: ``{parameter name: shape}`` of every considered parameter, in pooling order.
        method, parameters: the selection method and its keyword parameters.
        source: provenance (base model, fine-tuned models per language, ...).
    """

    def __init__(self, indices: dict[str, dict[str, torch.Tensor]], shapes: dict[str, tuple[int, ...]],
                 method: str = "manual", parameters: dict[str, Any] | None = None,
                 source: dict[str, Any] | None = None) -> None:
        self.shapes = {name: tuple(int(d) for d in shape) for name, shape in shapes.items()}
        self.languages = list(indices)
        self.method, self.parameters, self.source = method, dict(parameters or {}), dict(source or {})
        self._indices: dict[str, dict[str, torch.Tensor]] = {}
        for lang, per_name in indices.items():
            if not lang or _SEPARATOR in lang:
                raise LangNeuronsError(f"invalid language code {lang!r}")
            clean = {}
            for name, ids in per_name.items():
                if name not in self.shapes:
                    raise LangNeuronsError(f"language {lang!r}: parameter {name!r} is not among the considered ones")
                ids = torch.as_tensor(ids, dtype=torch.long).flatten().unique(sorted=True)
                numel = _numel(self.shapes[name])
                if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= numel):
                    raise LangNeuronsError(f"language {lang!r} parameter {name!r}: index out of range [0, {numel})")
                if ids.numel():
                    clean[name] = ids
            self._indices[lang] = clean

    # -- access ----------------------------------------------------------------------------------
    @property
    def parameter_names(self) -> list[str]:
        return list(self.shapes)

    @property
    def total(self) -> int:
        """How many weight entries were considered (the pool ``top_rate`` is a share of)."""
        return sum(_numel(shape) for shape in self.shapes.values())

    def indices(self, language: str) -> dict[str, torch.Tensor]:
        """``{parameter name: sorted long[n] flat indices}`` of ``language`` (parameters with none left out)."""
        if language not in self._indices:
            raise LangNeuronsError(f"parameter set has no language {language!r} (has {', '.join(self.languages)})")
        return self._indices[language]

    def size(self, language: str) -> int:
        return sum(int(ids.numel()) for ids in self.indices(language).values())

    def sizes(self) -> dict[str, int]:
        return {lang: self.size(lang) for lang in self.languages}

    def counts(self, language: str) -> dict[str, int]:
        """``{parameter name: entries of language}`` over every considered parameter (zeros included)."""
        chosen = self.indices(language)
        return {name: int(chosen[name].numel()) if name in chosen else 0 for name in self.shapes}

    def grouped_counts(self, language: str) -> tuple[dict[int, int], dict[str, int]]:
        """``language``'s entries per layer index and per matrix kind.

        The layer is the first ``.N.`` component of a parameter name (``model.layers.3.mlp.up_proj.weight``
        -> 3), the kind the module name before ``weight`` (``up_proj``); names without a number are left out
        of the per-layer counts.
        """
        per_layer: dict[int, int] = {}
        per_kind: dict[str, int] = {}
        for name, count in self.counts(language).items():
            match = re.search(r"\.(\d+)\.", f".{name}.")
            if match:
                per_layer[int(match.group(1))] = per_layer.get(int(match.group(1)), 0) + count
            parts = name.split(".")
            kind = parts[-2] if len(parts) >= 2 and parts[-1] in ("weight", "bias") else parts[-1]
            per_kind[kind] = per_kind.get(kind, 0) + count
        return dict(sorted(per_layer.items())), per_kind

    def mask(self, language: str, name: str) -> torch.Tensor:
        """``bool`` tensor of parameter ``name``'s shape, True at ``language``'s entries."""
        if name not in self.shapes:
            raise LangNeuronsError(f"parameter {name!r} is not among the considered ones")
        mask = torch.zeros(_numel(self.shapes[name]), dtype=torch.bool)
        ids = self.indices(language).get(name)
        if ids is not None:
            mask[ids] = True
        return mask.view(self.shapes[name])

    def flat_indices(self, language: str) -> torch.Tensor:
        """``long[n]`` indices of ``language`` into the pooled vector of all considered entries (in order)."""
        offsets = self.offsets()
        chosen = self.indices(language)
        parts = [chosen[name] + offsets[name] for name in self.shapes if name in chosen]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

    def offsets(self) -> dict[str, int]:
        """Start of each parameter in the pooled vector of all considered entries."""
        offsets, start = {}, 0
        for name, shape in self.shapes.items():
            offsets[name] = start
            start += _numel(shape)
        return offsets

    def check_model(self, model: torch.nn.Module, what: str = "the model") -> None:
        """Raise a clear error unless ``model`` has every parameter of the set with the recorded shape."""
        params = dict(model.named_parameters(remove_duplicate=False))
        for name, shape in self.shapes.items():
            if name not in params:
                base = self.source.get("base")
                found_on = base.get("path") if isinstance(base, dict) else base
                raise LangNeuronsError(f"{what} has no parameter {name!r} (the set was found on {found_on!r}?)")
            if tuple(params[name].shape) != shape:
                raise LangNeuronsError(f"parameter {name!r} has shape {tuple(params[name].shape)} in {what}, "
                                       f"{shape} in the parameter set")

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        tensors = {f"{lang}{_SEPARATOR}{name}": ids for lang in self.languages
                   for name, ids in self._indices[lang].items()}
        meta = {
            "languages": self.languages, "shapes": {name: list(shape) for name, shape in self.shapes.items()},
            "total": self.total, "method": self.method, "parameters": self.parameters, "sizes": self.sizes(),
            "source": self.source,
        }
        return write_artefact(directory, KIND, SCHEMA_VERSION, tensors, meta)

    def __repr__(self) -> str:
        return f"ParameterSet(method={self.method!r}, parameters={len(self.shapes)}, sizes={self.sizes()})"


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= int(dim)
    return count


def load_parameters(directory: str | Path) -> ParameterSet:
    """Load a parameter set written by :meth:`ParameterSet.save` (checksum verified)."""
    tensors, meta = read_artefact(directory, KIND, SCHEMA_VERSION)
    try:
        indices: dict[str, dict[str, torch.Tensor]] = {lang: {} for lang in meta["languages"]}
        for key, ids in tensors.items():
            lang, _, name = key.partition(_SEPARATOR)
            indices[lang][name] = ids
        shapes = {name: tuple(shape) for name, shape in meta["shapes"].items()}
        return ParameterSet(indices, shapes, method=meta["method"], parameters=meta.get("parameters"),
                            source=meta.get("source"))
    except KeyError as exc:
        raise LangNeuronsError(f"{str(directory)!r} is not a valid parameter set: missing {exc}") from None


def from_flat_indices(flat: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], **kwargs: Any
                      ) -> ParameterSet:
    """Build a set from per-language indices into the pooled vector of all considered entries."""
    names = list(shapes)
    ends = torch.tensor([_numel(shapes[name]) for name in names], dtype=torch.long).cumsum(0)
    starts = ends - torch.tensor([_numel(shapes[name]) for name in names], dtype=torch.long)
    total = int(ends[-1]) if names else 0
    indices: dict[str, dict[str, torch.Tensor]] = {}
    for lang, ids in flat.items():
        ids = torch.as_tensor(ids, dtype=torch.long).flatten()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= total):
            raise LangNeuronsError(f"language {lang!r}: pooled index out of range [0, {total})")
        which = torch.searchsorted(ends, ids, right=True)
        indices[lang] = {names[p]: ids[which == p] - starts[p] for p in which.unique().tolist()}
    return ParameterSet(indices, shapes, **kwargs)


def draw_without_replacement(total: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` distinct indices in ``[0, total)``, uniformly at random (seeded by ``generator``).

    Small pools use a permutation; large ones draw with replacement and keep first occurrences, which
    is the same distribution without materialising ``total`` indices.
    """
    if not 0 <= count <= total:
        raise LangNeuronsError(f"cannot draw {count} random parameters out of {total}")
    if total <= _RANDPERM_LIMIT:
        return torch.randperm(total, generator=generator)[:count]
    draws = torch.zeros(0, dtype=torch.long)
    while True:
        extra = torch.randint(total, (max(count - draws.numel(), 0) + count // 8 + 16,), generator=generator)
        draws = torch.cat([draws, extra])
        unique, inverse = torch.unique(draws, return_inverse=True)
        if unique.numel() >= count:
            positions = torch.arange(draws.numel())
            first = torch.full((unique.numel(),), draws.numel(), dtype=torch.long).scatter_reduce(
                0, inverse, positions, reduce="amin")
            return unique[torch.sort(first).indices[:count]]


def random_parameters_like(parameter_set: ParameterSet, seed: int = 0) -> ParameterSet:
    """For every language, as many entries as ``parameter_set`` has, drawn uniformly from all considered ones.

    The paper's random row for parameters: same count per language, seeded, independent per language.
    """
    generator = torch.Generator().manual_seed(int(seed))
    flat = {lang: draw_without_replacement(parameter_set.total, parameter_set.size(lang), generator)
            for lang in parameter_set.languages}
    return from_flat_indices(flat, parameter_set.shapes, method="random",
                             parameters={"seed": int(seed), "sizes": parameter_set.sizes(),
                                         "matched": parameter_set.method},
                             source=dict(parameter_set.source))
