"""Read a model's weight matrices one at a time (for comparing a base model with fine-tuned copies).

A *weight source* gives ``get(name) -> tensor`` for parameter names as in ``model.named_parameters()``.
:func:`as_weight_source` accepts:

* a directory with ``*.safetensors`` files (as ``save_pretrained`` writes, sharded or not): tensors are
  read lazily, one at a time, so comparing several large models needs about one matrix per model in
  memory;
* any other local path or hub id: the model is loaded on the CPU with transformers (all in memory);
* an ``nn.Module`` / :class:`~langneurons.model.loading.LoadedModel` (its parameters) or a plain
  ``{name: tensor}`` dict (hand-made state dicts in tests).

:func:`considered_parameters` names the weight matrices of the MHA and FFN modules (eqs. 1-3 of the
LAPE paper: ``W_q, W_k, W_v, W_o`` and ``W_1, W_3, W_2``) from the architecture registry.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.model.architectures import get_submodule, resolve_architecture
from langneurons.errors import LangNeuronsError

#: Names of the FFN's input matrices (W_1 / W_3, fused or not), looked up next to the down projection.
FFN_IN_ALIASES = ["gate_proj", "up_proj", "gate_up_proj", "w1", "w3", "c_fc", "fc1", "dense_h_to_4h", "fc_in"]


class TensorDictSource:
    """Weights held in memory: ``{name: tensor}``."""

    def __init__(self, tensors: dict[str, torch.Tensor], description: dict[str, Any] | None = None,
                 structure: nn.Module | None = None) -> None:
        self.tensors, self.description, self.structure = tensors, dict(description or {}), structure

    def has(self, name: str) -> bool:
        return name in self.tensors

    def get(self, name: str) -> torch.Tensor:
        if name not in self.tensors:
            raise LangNeuronsError(f"{self.description.get('path', 'weights')!r} have no parameter {name!r}")
        return self.tensors[name].detach()

    def provenance(self) -> dict[str, Any]:
        return dict(self.description)


class SafetensorsSource:
    """Weights read lazily from the ``*.safetensors`` files of a model directory."""

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        self.directory = directory
        self._open = safe_open
        self.key_file: dict[str, Path] = {}
        for path in sorted(directory.glob("*.safetensors")):
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - a safe_open handle is not a dict
                    self.key_file[key] = path
        self._structure: nn.Module | None = None

    def has(self, name: str) -> bool:
        return name in self.key_file

    def get(self, name: str) -> torch.Tensor:
        if name not in self.key_file:
            raise LangNeuronsError(f"{str(self.directory)!r} has no tensor {name!r}")
        with self._open(str(self.key_file[name]), framework="pt") as handle:
            return handle.get_tensor(name)

    @property
    def structure(self) -> nn.Module:
        """The model built on the ``meta`` device from ``config.json`` (module names and shapes, no weights)."""
        if self._structure is None:
            self._structure = meta_model(str(self.directory))
        return self._structure

    def provenance(self) -> dict[str, Any]:
        info: dict[str, Any] = {"path": str(self.directory), "files": sorted(p.name for p in set(self.key_file.values()))}
        config = self.directory / "config.json"
        if config.is_file():
            info["model_type"] = json.loads(config.read_text()).get("model_type")
        train_args = self.directory / "toy_train_args.json"  # written by `langneurons toy train`
        if train_args.is_file():
            info["toy_train_args"] = json.loads(train_args.read_text())
        return info


def meta_model(path: str) -> nn.Module:
    """``AutoModelForCausalLM`` of ``path``'s config on the ``meta`` device (no memory for weights)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as exc:
        raise LangNeuronsError(f"cannot read the model config of {path!r}: {str(exc).splitlines()[0]}") from None


def as_weight_source(model: Any) -> TensorDictSource | SafetensorsSource:
    """A weight source for a path / hub id, a module, a :class:`LoadedModel` or a ``{name: tensor}`` dict."""
    if isinstance(model, (TensorDictSource, SafetensorsSource)):
        return model
    if isinstance(model, dict):
        return TensorDictSource(model, {"path": None, "kind": "state_dict"})
    module = getattr(model, "model", None) if not isinstance(model, (nn.Module, str, os.PathLike)) else model
    if isinstance(module, nn.Module):
        config = getattr(module, "config", None)
        return TensorDictSource(dict(module.named_parameters(remove_duplicate=False)),
                                {"path": getattr(config, "_name_or_path", None) or type(module).__name__,
                                 "model_type": getattr(config, "model_type", None)}, structure=module)
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if path.is_dir() and any(path.glob("*.safetensors")):
            return SafetensorsSource(path)
        from langneurons.model.loading import load_model

        loaded = load_model(str(model), device="cpu", dtype="float32")
        return TensorDictSource(dict(loaded.model.named_parameters(remove_duplicate=False)),
                                {"path": str(model), **loaded.provenance()}, structure=loaded.model)
    raise LangNeuronsError(f"cannot read weights from a {type(model).__name__}")


def considered_parameters(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of the MHA and FFN weight matrices of every decoder layer, in layer order.

    Per layer: query, key, value (or the fused qkv), output projection, then the FFN's input
    matrices (gate / up, fc1, ...: :data:`FFN_IN_ALIASES` next to the registry's down projection) and
    the down projection. Biases, norms and embeddings are not considered.
    """
    spec = resolve_architecture(model)
    layers = get_submodule(model, spec.layers)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise LangNeuronsError(f"model has no decoder layers at {spec.layers!r}")
    ffn_parent = spec.ffn_down.rpartition(".")[0]
    ffn_in = [f"{ffn_parent}.{alias}" if ffn_parent else alias for alias in FFN_IN_ALIASES]
    paths = [spec.attn_q, spec.attn_k, spec.attn_v, spec.attn_qkv, spec.attn_o, *ffn_in, spec.ffn_down]
    shapes: dict[str, tuple[int, ...]] = {}
    for index, layer in enumerate(layers):
        found_ffn_in = False
        for path in dict.fromkeys(p for p in paths if p):
            module = get_submodule(layer, path)
            weight = getattr(module, "_parameters", {}).get("weight") if module is not None else None
            if weight is None or weight.ndim != 2:
                continue
            shapes[f"{spec.layers}.{index}.{path}.weight"] = tuple(weight.shape)
            found_ffn_in |= path in ffn_in
        if not found_ffn_in:
            raise LangNeuronsError(f"layer {index}: no FFN input matrix found next to {spec.ffn_down!r} "
                                   f"(looked for {', '.join(FFN_IN_ALIASES)})")
    return shapes
