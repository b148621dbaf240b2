"""Loading a causal LM and its tokenizer from a hub id or a local path, with clear errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from langneurons.errors import LangNeuronsError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch device; ``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise LangNeuronsError(f"invalid device {device!r}: {exc}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LangNeuronsError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a torch dtype; ``None`` means float32 on CPU and bfloat16 on an accelerator."""
    if dtype is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise LangNeuronsError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


@dataclass
class LoadedModel:
    """A model, its tokenizer and where they came from."""

    model: nn.Module
    tokenizer: Any
    name: str
    revision: str | None = None
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def provenance(self) -> dict[str, Any]:
        config = getattr(self.model, "config", None)
        return {
            "model": self.name,
            "revision": self.revision or getattr(config, "_commit_hash", None),
            "model_type": getattr(config, "model_type", None),
            "model_class": type(self.model).__name__,
            "num_parameters": sum(p.numel() for p in self.model.parameters()),
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
        }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def load_model(
    name_or_path: str,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` in eval mode.

    ``device_map`` (e.g. ``"auto"``) places a model larger than one device with accelerate; with
    ``offload_folder``, layers that fit on no device are kept on disk there and loaded per forward.
    ``trust_remote_code`` runs a hub model's own modelling code (only for models you trust);
    ``attn_implementation`` picks ``sdpa`` (default), ``eager``, ``flash_attention_2``, ...
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    looks_local = os.path.sep in name_or_path or name_or_path.startswith(".") or os.path.exists(name_or_path)
    if looks_local and not os.path.isdir(name_or_path):
        raise LangNeuronsError(f"model path {name_or_path!r} does not exist")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if revision:
        kwargs["revision"] = revision
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    if offload_folder is not None:
        if device_map is None:
            raise LangNeuronsError("an offload folder needs a device map (e.g. device_map='auto')")
        kwargs["offload_folder"] = str(offload_folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision,
                                                  **({"trust_remote_code": True} if trust_remote_code else {}))
        model = AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as exc:
        raise LangNeuronsError(f"cannot load model {name_or_path!r}: {_first_line(exc)}") from None
    if device_map is None:
        model.to(torch_device)
    model.eval()
    check_geometry(model, name_or_path)
    return LoadedModel(model, tokenizer, name_or_path, revision, torch_dtype, torch_device)


def check_geometry(model: nn.Module, name: str) -> None:
    """Validate the model's geometry (heads, fused-qkv layout, final norm, output head) once, on load.

    A family whose geometry cannot be validated still loads (FFN sites need none of it) with a one-line
    warning; commands that need the geometry (attention sites, contribution scores, logit lens) raise then.
    """
    import warnings

    from langneurons.errors import LangNeuronsWarning
    from langneurons.model.geometry import model_geometry

    try:
        model_geometry(model)
    except LangNeuronsError as exc:
        warnings.warn(f"model {name!r}: geometry not validated ({exc}); attention-site and contribution commands "
                      "will not work on it", LangNeuronsWarning, stacklevel=3)


def as_loaded(
    model: nn.Module | LoadedModel | str,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | os.PathLike | None = None,
) -> LoadedModel:
    """Accept a path / hub id, an already loaded model (with ``tokenizer``) or a :class:`LoadedModel`."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(str(model), device=device, dtype=dtype, revision=revision, device_map=device_map,
                          offload_folder=offload_folder)
    if tokenizer is None:
        name = getattr(getattr(model, "config", None), "_name_or_path", None)
        if not name:
            raise LangNeuronsError("a model object needs its tokenizer: pass tokenizer=...")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name)
    param = next(model.parameters())
    name = getattr(getattr(model, "config", None), "_name_or_path", None) or type(model).__name__
    model.eval()
    return LoadedModel(model, tokenizer, name, revision, param.dtype, param.device)
