"""The contract every identification method follows (scikit-learn style).

A method is a class with explicit keyword parameters, ``fit(stats)`` that computes
``scores_`` (``float64[layer, neuron]``, lower or higher = more language-specific as
``lower_is_specific`` says) and whatever else it needs, and a pure ``select()`` that returns a
:class:`~langneurons.sets.neuronset.NeuronSet`. Methods register themselves by name with
:func:`register_method`; :func:`identify` is the one-call entry point.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch

from langneurons.errors import LangNeuronsError
from langneurons.sets.neuronset import NeuronSet

_METHODS: dict[str, type["NeuronMethod"]] = {}


class NeuronMethod:
    """Base class of identification methods."""

    name: ClassVar[str] = ""
    lower_is_specific: ClassVar[bool] = True

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword parameters and their current values."""
        signature = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in signature.parameters if name != "self"}

    def fit(self, stats: Any) -> "NeuronMethod":  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self) -> NeuronSet:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "scores_"):
            raise LangNeuronsError(f"{type(self).__name__}.select() called before fit()")

    def _neuron_set(self, membership: dict[str, torch.Tensor], stats: Any, extra: dict[str, Any] | None = None
                    ) -> NeuronSet:
        """Build the result from per-language ``bool[layer, neuron]`` membership masks."""
        layers = {lang: [row.nonzero().flatten() for row in mask] for lang, mask in membership.items()}
        meta = stats.meta if hasattr(stats, "meta") else {}
        source = {key: meta.get(key) for key in ("model", "revision", "model_type", "dtype", "site", "corpus",
                                                   "token_count") if key in meta}
        parameters = {**self.get_params(), **(extra or {})}
        return NeuronSet(layers, stats.num_layers, stats.width, site=meta.get("site", "ffn.act"), method=self.name,
                         parameters=parameters, source=source)


def register_method(cls: type[NeuronMethod]) -> type[NeuronMethod]:
    """Class decorator: make ``cls`` available to :func:`identify` under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str, **params: Any) -> NeuronMethod:
    """An unfitted method by name with ``params``; a clear error for unknown names or parameters."""
    if name not in _METHODS:
        raise LangNeuronsError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    cls = _METHODS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - accepted
    if unknown:
        raise LangNeuronsError(f"method {name!r} has no parameter(s) {', '.join(sorted(unknown))} "
                               f"(it takes {', '.join(sorted(accepted))})")
    return cls(**params)


def identify(stats: Any, method: str = "lape", **params: Any) -> NeuronSet:
    """Fit ``method`` on ``stats`` and return its neuron set, e.g. ``identify(stats, "lape", top_rate=0.01)``."""
    return get_method(method, **params).fit(stats).select()


def check_rate(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise LangNeuronsError(f"{name} must be in [0, 1], got {value}")
    return float(value)
