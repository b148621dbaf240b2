"""Inputs checked against each other before any model time is spent: the model by a fingerprint of its weights,
the neuron site, the context length.

**The model fingerprint** (``"model_fingerprint"`` in every artefact's provenance, :func:`model_provenance`) is
cheap and deterministic: a hash of the model type and of every parameter's name and shape (``structure``), and a
few values of fixed positions (evenly spaced over the flattened tensor) of 12 weight matrices evenly spaced
over the model's matrices (``samples``: ``{name: {"shape", "values"}}``). It costs a dozen small gathers, whatever
the model's size. Two fingerprints (or a fingerprint and a loaded model) are compared by
:func:`compare_fingerprints`: another ``structure`` is another architecture or shape (an error where the
artefact is used on the model); other sampled values with the same structure are other weights of the same
shape (a fine-tune, another checkpoint: a warning naming both files). Values are compared within the rounding
of the coarser dtype of the two, so statistics recorded in bfloat16 on a GPU match the same model in float32 on
a CPU. Artefacts written before the fingerprint existed give a warning (it cannot be checked), never an error.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from langneurons.errors import LangNeuronsError, LangNeuronsWarning

FINGERPRINT_VERSION = 1
SAMPLED_MATRICES = 12
VALUES_PER_MATRIX = 8
#: relative rounding of each dtype (one unit in the last place); the coarser of two dtypes sets the tolerance
_ROUNDING = {"float32": 2.0 ** -22, "float64": 2.0 ** -22, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}

__all__ = ["Input", "check_context", "check_inputs", "check_model", "compare_fingerprints", "context_length",
           "fingerprint_for", "fingerprint_of", "model_fingerprint", "model_provenance", "neurons_input",
           "sample_positions", "stats_input", "weights_fingerprint"]


# -- the fingerprint ---------------------------------------------------------------------------------
def sample_positions(shape: Iterable[int], count: int = VALUES_PER_MATRIX) -> list[int]:
    """``count`` flat positions evenly spaced over a tensor of ``shape`` (first and last included)."""
    numel = math.prod(int(n) for n in shape)
    if numel <= 0:
        return []
    if numel <= count:
        return list(range(numel))
    return [round(i * (numel - 1) / (count - 1)) for i in range(count)]


def _values(tensor: torch.Tensor, positions: list[int]) -> list[float] | None:
    """The values at flat ``positions`` as floats with 8 significant digits (``None`` on the meta device)."""
    if tensor.device.type == "meta" or not positions:
        return None
    index = torch.unravel_index(torch.tensor(positions), tuple(tensor.shape))
    picked = tensor.detach()[tuple(i.to(tensor.device) for i in index)].float().cpu().tolist()
    return [float(f"{value:.8g}") for value in picked]


def _structure(model_type: Any, shapes: Iterable[tuple[str, tuple[int, ...]]]) -> str:
    digest = hashlib.sha256(str(model_type).encode())
    for name, shape in shapes:
        digest.update(f"\n{name}:{'x'.join(str(n) for n in shape)}".encode())
    return digest.hexdigest()[:16]


def model_fingerprint(model: nn.Module) -> dict[str, Any]:
    """The fingerprint of a loaded model (see the module doc): ``{"version", "structure", "num_parameters",
    "dtype", "samples"}``."""
    named = list(model.named_parameters())
    config = getattr(model, "config", None)
    matrices = [(name, p) for name, p in named if p.ndim >= 2]
    if len(matrices) > SAMPLED_MATRICES:
        picks = sorted({round(i * (len(matrices) - 1) / (SAMPLED_MATRICES - 1)) for i in range(SAMPLED_MATRICES)})
        matrices = [matrices[i] for i in picks]
    samples = {}
    for name, parameter in matrices:
        values = _values(parameter, sample_positions(parameter.shape))
        if values is not None:
            samples[name] = {"shape": list(parameter.shape), "values": values}
    dtype = str(named[0][1].dtype).replace("torch.", "") if named else None
    return {"version": FINGERPRINT_VERSION,
            "structure": _structure(getattr(config, "model_type", None), ((n, tuple(p.shape)) for n, p in named)),
            "num_parameters": sum(p.numel() for _, p in named), "dtype": dtype, "samples": samples}


def weights_fingerprint(shapes: Mapping[str, Iterable[int]], get: Any, dtype: str | None = None,
                        model_type: Any = None) -> dict[str, Any]:
    """A fingerprint over named matrices read one at a time (``get(name) -> tensor``), e.g. a parameter set's
    base model read from its safetensors files; ``structure`` covers only these matrices."""
    names = list(shapes)
    if len(names) > SAMPLED_MATRICES:
        names = [names[i] for i in sorted({round(i * (len(names) - 1) / (SAMPLED_MATRICES - 1))
                                           for i in range(SAMPLED_MATRICES)})]
    samples = {}
    for name in names:
        tensor = get(name)
        values = _values(tensor, sample_positions(tensor.shape))
        if values is not None:
            samples[name] = {"shape": list(tensor.shape), "values": values}
            dtype = dtype or str(tensor.dtype).replace("torch.", "")
    return {"version": FINGERPRINT_VERSION, "structure": None, "dtype": dtype, "samples": samples,
            "matrices": _structure(model_type, ((n, tuple(s)) for n, s in shapes.items()))}


def model_provenance(loaded: Any) -> dict[str, Any]:
    """``loaded.provenance()`` (model, revision, type, dtype, device) with the ``model_fingerprint``."""
    return {**loaded.provenance(), "model_fingerprint": model_fingerprint(loaded.model)}


def fingerprint_of(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The model fingerprint an artefact's ``meta.json`` carries (its own, or its source's: a neuron set's
    statistics, a parameter set's base model); ``None`` for artefacts written before fingerprints existed."""
    if not isinstance(meta, Mapping):
        return None
    for holder in (meta, meta.get("source"), (meta.get("source") or {}).get("base")
                   if isinstance(meta.get("source"), Mapping) else None):
        if isinstance(holder, Mapping) and isinstance(holder.get("model_fingerprint"), Mapping):
            return dict(holder["model_fingerprint"])
    return None


def _tolerance(first: Any, second: Any) -> tuple[float, float]:
    rtol = max(_ROUNDING.get(str(first), 2.0 ** -7), _ROUNDING.get(str(second), 2.0 ** -7)) * 1.01
    atol = 1e-7 if "float16" in (str(first), str(second)) else 0.0  # float16 rounds tiny values absolutely
    return rtol, atol  # the 8 significant digits kept are far below every dtype's rounding


def compare_fingerprints(first: Mapping[str, Any] | None, second: Mapping[str, Any] | None) -> str | None:
    """``"same"``, ``"weights"`` (same structure, other values), ``"structure"`` (another architecture or shape),
    or ``None`` when either is missing or they share nothing to compare."""
    if not first or not second:
        return None
    if first.get("mismatch") or second.get("mismatch"):  # a sampled matrix missing, or of another shape
        return "structure"
    if first.get("structure") and second.get("structure") and first["structure"] != second["structure"]:
        return "structure"
    mine, theirs = first.get("samples") or {}, second.get("samples") or {}
    common = [name for name in mine if name in theirs]
    if not common:
        return "same" if first.get("structure") and first.get("structure") == second.get("structure") else None
    rtol, atol = _tolerance(first.get("dtype"), second.get("dtype"))
    for name in common:
        a, b = mine[name], theirs[name]
        if list(a.get("shape") or []) != list(b.get("shape") or []):
            return "structure"
        for x, y in zip(a.get("values") or [], b.get("values") or []):
            if abs(x - y) > atol + rtol * max(abs(x), abs(y)):
                return "weights"
    return "same"


def fingerprint_for(record: Mapping[str, Any] | None, model: nn.Module) -> dict[str, Any]:
    """The model's fingerprint sampled where ``record`` was (the same matrices, e.g. a parameter set's)."""
    if record and record.get("structure") is None and record.get("samples"):
        parameters = dict(model.named_parameters())
        samples = {}
        for name, entry in record["samples"].items():
            tensor = parameters.get(name)
            if tensor is None or list(tensor.shape) != list(entry.get("shape") or []):
                return {"version": FINGERPRINT_VERSION, "structure": None, "samples": {}, "mismatch": name}
            values = _values(tensor, sample_positions(tensor.shape))
            if values is not None:
                samples[name] = {"shape": list(tensor.shape), "values": values}
        dtype = str(next(iter(parameters.values())).dtype).replace("torch.", "") if parameters else None
        return {"version": FINGERPRINT_VERSION, "structure": None, "dtype": dtype, "samples": samples}
    return model_fingerprint(model)


# -- the checks of a command ----------------------------------------------------------------------------
@dataclass
class Input:
    """An artefact a command combines with others: its flag, path and ``meta.json`` (or the loaded object's)."""

    flag: str
    path: Any
    meta: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f"{self.flag} {str(self.path)!r}"

    @property
    def made_on(self) -> str:
        meta = self.meta
        source = meta.get("source") if isinstance(meta.get("source"), Mapping) else {}
        base = source.get("base") if isinstance(source.get("base"), Mapping) else {}
        model = meta.get("model") or source.get("model") or base.get("path")
        return f"model {model!r}" if model else "another model"

    @property
    def sites(self) -> list[str]:
        meta = self.meta
        value = meta.get("sites") or meta.get("site") or (meta.get("source") or {}).get("site")
        return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]


def stats_input(flag: str, path: Any, stats: Any) -> Input:
    return Input(flag, path, getattr(stats, "meta", {}) or {})


def neurons_input(flag: str, path: Any, neurons: Any) -> Input:
    """A neuron set as an input: its sites and the provenance of the statistics it came from."""
    return Input(flag, path, {"sites": list(neurons.sites), "source": dict(neurons.source or {}),
                              "model": (neurons.source or {}).get("model")})


def check_inputs(inputs: Iterable[Input], same_site: Iterable[tuple[str, str]] = ()) -> None:
    """Check a command's artefact inputs against each other (before the model loads).

    ``same_site``: pairs of flags whose sites must agree (``("--neurons", "--stats")`` when the statistics give
    the values the set's neurons are set to). Another architecture or shape: :class:`LangNeuronsError` naming
    both files; other weights of the same shape: a warning naming both.
    """
    inputs = [item for item in inputs if item.path is not None]
    by_flag = {item.flag: item for item in inputs}
    for first_flag, second_flag in same_site:
        first, second = by_flag.get(first_flag), by_flag.get(second_flag)
        if first and second and first.sites and second.sites and not set(first.sites) & set(second.sites):
            raise LangNeuronsError(f"{first.label} is at site {', '.join(first.sites)} but {second.label} was "
                                   f"recorded at {', '.join(second.sites)}; use artefacts of one site")
    for index, first in enumerate(inputs):
        for second in inputs[index + 1:]:
            verdict = compare_fingerprints(fingerprint_of(first.meta), fingerprint_of(second.meta))
            if verdict == "structure":
                raise LangNeuronsError(f"{first.label} and {second.label} were made on models of different "
                                       f"architectures or shapes ({first.made_on}, {second.made_on})")
            if verdict == "weights":
                warnings.warn(f"{first.label} and {second.label} were made on different models of the same shape "
                              f"({first.made_on}, {second.made_on})", LangNeuronsWarning, stacklevel=2)


def check_model(inputs: Iterable[Input], model: nn.Module, model_label: str = "--model") -> None:
    """Check each artefact input against the loaded ``model`` (right after loading, before any evaluation).

    Another architecture or shape: :class:`LangNeuronsError` naming the file and the model; other weights of the
    same shape, and an input without a fingerprint (an older langneurons): one warning each, naming both.
    """
    for item in (item for item in inputs if item.path is not None):
        record = fingerprint_of(item.meta)
        if record is None:
            warnings.warn(f"{item.label} has no model fingerprint (written by an older langneurons); cannot check "
                          f"that it was made on {model_label}", LangNeuronsWarning, stacklevel=2)
            continue
        verdict = compare_fingerprints(record, fingerprint_for(record, model))
        if verdict == "structure":
            raise LangNeuronsError(f"{item.label} was made on {item.made_on}, of another architecture or shape than "
                                   f"{model_label}; give the model it was made on")
        if verdict == "weights":
            warnings.warn(f"{item.label} was made on {item.made_on}, whose weights differ from {model_label} "
                          "(same shape): its neurons may not be this model's", LangNeuronsWarning, stacklevel=2)


# -- the context length ----------------------------------------------------------------------------------
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length", "n_ctx")


def context_length(model_or_config: Any) -> tuple[int, str] | None:
    """``(positions, config key)`` of a model's (or config's) context length, or ``None`` when it declares none."""
    config = getattr(model_or_config, "config", model_or_config)
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value, key
    return None


def check_context(model_or_config: Any, seq_len: int | None, name: str = "the model", flag: str = "--seq-len"
                  ) -> None:
    """A one-line error when ``seq_len`` is longer than the model's context (before any window is made)."""
    found = context_length(model_or_config)
    if seq_len is None or found is None:
        return
    positions, key = found
    if seq_len > positions:
        raise LangNeuronsError(f"{flag} {seq_len} is longer than the context of {name} ({positions} positions, "
                               f"{key} in its config); use {flag} {positions} or less")
