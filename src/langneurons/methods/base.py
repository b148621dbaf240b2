"""The contract every identification method follows (scikit-learn style).

A method is a class that declares

- ``name``: how :func:`get_method` / ``langneurons identify --method`` find it;
- ``consumes``: what ``fit`` takes, one of :data:`CONSUMES` (``"activation_stats"``: an
  :class:`~langneurons.stats.ActivationStats`; ``"pooled_vectors"``: per-sample pooled vectors;
  ``"importance"``: importance scores; ``"models"``: a base and fine-tuned models, e.g.
  :class:`~langneurons.methods.parameter_variation.ParameterChanges`);
- ``returns``: what ``select`` gives, one of :data:`RETURNS` (``"neuron_set"``: a
  :class:`~langneurons.sets.neuronset.NeuronSet`; ``"parameter_set"``: a
  :class:`~langneurons.sets.parameterset.ParameterSet`);

with explicit keyword parameters, every one with a default (``get_params``), ``fit(data)`` that computes
``scores_`` (lower or higher = more language-specific as ``lower_is_specific`` says) and whatever else it needs
and returns ``self``, and a pure ``select()`` (no change to the method, equal results on every call) whose
result carries the method's name, its parameters and the provenance of the data. ``select()`` before ``fit()``
raises. Methods register themselves by name with :func:`register_method`, which checks the declaration;
:func:`identify` is the one-call entry point. One contract test (``tests/test_methods.py``) runs every
registered method.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch

from langneurons.errors import LangNeuronsError
from langneurons.sets.neuronset import NeuronSet

#: what a method's ``fit`` may consume
CONSUMES = ("activation_stats", "pooled_vectors", "importance", "models")
#: what a method's ``select`` may return
RETURNS = ("neuron_set", "parameter_set")

_METHODS: dict[str, type["NeuronMethod"]] = {}


class NeuronMethod:
    """Base class of identification methods (neuron sets from activation statistics unless declared otherwise)."""

    name: ClassVar[str] = ""
    consumes: ClassVar[str] = "activation_stats"
    returns: ClassVar[str] = "neuron_set"
    lower_is_specific: ClassVar[bool] = True

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword parameters and their current values."""
        signature = inspect.signature(type(self).__init__)
        return {name: getattr(self, name) for name in signature.parameters if name != "self"}

    def fit(self, data: Any) -> "NeuronMethod":  # pragma: no cover - abstract
        raise NotImplementedError

    def select(self) -> Any:  # pragma: no cover - abstract
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
                                                   "token_count", "model_fingerprint") if key in meta}
        parameters = {**self.get_params(), **(extra or {})}
        return NeuronSet(layers, stats.num_layers, stats.width, site=meta.get("site", "ffn.act"), method=self.name,
                         parameters=parameters, source=source)


Method = NeuronMethod  # the contract's name; neuron and parameter methods share it


def _check_declaration(cls: type) -> None:
    """The parts of the contract a class shows before it is used (a programming error otherwise)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.consumes not in CONSUMES:
        raise ValueError(f"{cls.__name__}.consumes must be one of {CONSUMES}, not {cls.consumes!r}")
    if cls.returns not in RETURNS:
        raise ValueError(f"{cls.__name__}.returns must be one of {RETURNS}, not {cls.returns!r}")
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ValueError(f"{cls.__name__}.__init__ takes *{parameter.name}; list every parameter explicitly")
        if parameter.default is parameter.empty:
            raise ValueError(f"{cls.__name__} parameter {parameter.name!r} has no default")


def register_method(cls: type[NeuronMethod]) -> type[NeuronMethod]:
    """Class decorator: make ``cls`` available to :func:`identify` under ``cls.name`` (declaration checked)."""
    _check_declaration(cls)
    _METHODS[cls.name] = cls
    return cls


def available_methods(consumes: str | None = None, returns: str | None = None) -> list[str]:
    """Names of the registered methods (those that consume / return the given kinds, when given)."""
    return sorted(name for name, cls in _METHODS.items()
                  if (consumes is None or cls.consumes == consumes) and (returns is None or cls.returns == returns))


def method_class(name: str) -> type[NeuronMethod]:
    """The registered class of ``name``; a one-line error naming every method otherwise."""
    if name not in _METHODS:
        described = ", ".join(f"{n} ({_METHODS[n].consumes} -> {_METHODS[n].returns})" for n in available_methods())
        raise LangNeuronsError(f"unknown method {name!r}; available: {described}")
    return _METHODS[name]


def get_method(name: str, **params: Any) -> NeuronMethod:
    """An unfitted method by name with ``params``; a clear error for unknown names or parameters."""
    cls = method_class(name)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - accepted
    if unknown:
        raise LangNeuronsError(f"method {name!r} has no parameter(s) {', '.join(sorted(unknown))} "
                               f"(it takes {', '.join(sorted(accepted))})")
    return cls(**params)


def identify(stats: Any, method: str = "lape", **params: Any) -> Any:
    """Fit ``method`` on ``stats`` (or whatever it consumes) and return its selection, e.g.
    ``identify(stats, "lape", top_rate=0.01)`` -> :class:`~langneurons.sets.neuronset.NeuronSet`."""
    return get_method(method, **params).fit(stats).select()


def check_rate(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise LangNeuronsError(f"{name} must be in [0, 1], got {value}")
    return float(value)


# -- degenerate selections ---------------------------------------------------------------------------------
#: a language with fewer selected neurons (or parameters) than this is reported as tiny
TINY_SET = 5


def _ceil_rate(rate: float) -> float:
    """``rate`` rounded up to two significant digits (so that the rate given still selects the neuron)."""
    if rate <= 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(rate)) - 1)
    return min(1.0, math.ceil(rate / scale - 1e-9) * scale)


def smallest_rates(method: NeuronMethod, data: Any, languages: list[str]) -> dict[str, float | None]:
    """Per language, the smallest ``top_rate`` at which ``method`` gives it at least one neuron (``None``: no
    rate up to 1 does; other parameters keep it empty). ``{}`` for methods without a ``top_rate``.

    Methods that can read it off their scores define ``smallest_rates(languages)`` (LAPE, LAVE: exact);
    otherwise the method is refitted at doubling rates and the first rate that gives the language a neuron
    is reported (at most a factor 2 above the smallest).
    """
    if not languages:
        return {}
    exact = getattr(method, "smallest_rates", None)
    if callable(exact):
        return exact(languages)
    params = method.get_params()
    if "top_rate" not in params or method.consumes == "models":  # refitting would read every model again
        return {}
    found: dict[str, float | None] = {lang: None for lang in languages}
    rate = max(float(params["top_rate"]), 1e-6)
    while rate < 1.0 and any(value is None for value in found.values()):
        rate = min(1.0, rate * 2)
        sizes = type(method)(**{**params, "top_rate": rate}).fit(data).select().sizes()
        for lang in languages:
            if found[lang] is None and sizes.get(lang, 0) > 0:
                found[lang] = _ceil_rate(rate)
    return found


def degenerate_message(result: Any, method: NeuronMethod, data: Any = None, unit: str = "neurons") -> str | None:
    """A one-line warning when some languages got no (or fewer than :data:`TINY_SET`) neurons, with the rate
    that would give them some; ``None`` when every language has enough."""
    sizes = result.sizes()
    empty = [lang for lang, n in sizes.items() if n == 0]
    tiny = [lang for lang, n in sizes.items() if 0 < n < TINY_SET]
    if not empty and not tiny:
        return None
    params = method.get_params()
    where = f"{method.name} at top_rate {params['top_rate']:g}" if "top_rate" in params else method.name
    parts = []
    if empty:
        parts.append(f"no {unit} for {', '.join(empty)}")
    if tiny:
        parts.append(f"only {', '.join(f'{sizes[lang]} for {lang}' for lang in tiny)}")
    text = f"{where} selected " + " and ".join(parts)
    rates = smallest_rates(method, data, empty) if empty else {}
    known = {lang: rate for lang, rate in rates.items() if rate is not None}
    if known:
        text += "; the smallest --top-rate that gives each one: " + ", ".join(
            f"{lang} {rate:g}" for lang, rate in known.items())
        if len(known) > 1:
            text += f" (--top-rate {max(known.values()):g} gives all of them some)"
    never = [lang for lang, rate in rates.items() if rate is None]
    if never:
        text += f"; no --top-rate gives {', '.join(never)} any (its values never pass the method's filter)"
    return text
