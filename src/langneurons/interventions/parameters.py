"""Reversibly zero weight entries of a :class:`~langneurons.sets.parameterset.ParameterSet` during forward passes.

The LAPE paper's parameter-variation baseline "directly zeroes the parameters" (section 3.2). Here
nothing is edited in place: for every affected module a forward pre-hook puts a zeroed *copy* of the
weight in the module's parameter slot for the duration of that module's forward, and a forward hook
(``always_call``, so it also runs when the forward raises) puts the original ``nn.Parameter`` object
back. Outside the module's forward, and after the context closes, ``module.weight`` is the original
tensor, so outputs are bit-identical to the untouched model. The extra memory is one matrix at a time.

    with zero_parameters(model, parameter_set, "zh"):
        model(...)            # zh's weight entries read as 0 in every forward
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.sets.parameterset import ParameterSet


def _module_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, attribute = name.rpartition(".")
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        raise LangNeuronsError(f"model has no module {path!r} (parameter {name!r})") from None
    if not isinstance(module._parameters.get(attribute), nn.Parameter):
        raise LangNeuronsError(f"module {path!r} has no parameter {attribute!r}")
    return module, attribute


def planned_indices(parameter_set: ParameterSet, languages: str | Sequence[str]) -> dict[str, torch.Tensor]:
    """``{parameter name: sorted long[n] flat indices}``: the union of ``languages``' entries."""
    langs = [languages] if isinstance(languages, str) else list(languages)
    merged: dict[str, list[torch.Tensor]] = {}
    for lang in langs:
        for name, ids in parameter_set.indices(lang).items():
            merged.setdefault(name, []).append(ids)
    return {name: torch.cat(parts).unique(sorted=True) for name, parts in merged.items()}


@contextmanager
def zero_parameters(model: Any, parameter_set: ParameterSet, languages: str | Sequence[str]) -> Iterator[nn.Module]:
    """Within the context, ``languages``' weight entries (one code or several) are 0 in every forward.

    ``model`` is an ``nn.Module`` or a :class:`~langneurons.model.loading.LoadedModel`. Raises
    :class:`LangNeuronsError` when the model lacks a parameter of the set or its shape differs, or when
    a weight is offloaded (on the ``meta`` device). Yields the model.
    """
    module_root: nn.Module = getattr(model, "model", model) if not isinstance(model, nn.Module) else model
    parameter_set.check_model(module_root)
    plan = planned_indices(parameter_set, languages)
    handles: list[Any] = []
    restore: list[tuple[nn.Module, str, nn.Parameter]] = []
    try:
        for name, ids in plan.items():
            module, attribute = _module_of(module_root, name)
            original = module._parameters[attribute]
            if original.device.type == "meta":
                raise LangNeuronsError(f"parameter {name!r} is offloaded (meta device); zeroing it is not supported")
            restore.append((module, attribute, original))
            handles.extend(_swap_hooks(module, attribute, original, ids.to(original.device)))
        yield module_root
    finally:
        for handle in handles:
            handle.remove()
        for module, attribute, original in restore:
            module._parameters[attribute] = original


def _swap_hooks(module: nn.Module, attribute: str, original: nn.Parameter, ids: torch.Tensor) -> list[Any]:
    """Hooks that show ``module`` a copy of ``original`` with ``ids`` (flat) zeroed during its forward."""

    def before(mod: nn.Module, args: Any) -> None:
        # Out of place: a new tensor (differentiable in ``original``); the Parameter itself is untouched.
        masked = original.flatten().index_fill(0, ids, 0).view_as(original)
        mod._parameters[attribute] = masked  # type: ignore[assignment] - same mechanism as torch's old stateless

    def after(mod: nn.Module, args: Any, output: Any) -> None:
        mod._parameters[attribute] = original

    return [module.register_forward_pre_hook(before),
            module.register_forward_hook(after, always_call=True)]
