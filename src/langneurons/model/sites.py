"""Neuron sites: which tensor of each decoder layer is "the neurons", and hooks that read or edit it.

A site is a name such as ``ffn.act`` (output of the FFN activation module, the LAPE paper's
``act_fn(h W_1)``) or ``ffn.down_in`` (input of the down projection, the vector that multiplies
``W_down``; for gated MLPs this is ``act_fn(gate) * up``). :func:`locate_site` maps a site to one
module per layer by the architecture registry, :func:`validate_site` checks on the loaded model that
the hook fires once per layer with the same width, and :func:`site_hooks` attaches a function to
every layer without modifying the model.

On families with a fused query-key-value projection (BLOOM, GPT-2, GPT-NeoX, Phi-3, Falcon) the sites
``attn.q``, ``attn.k`` and ``attn.v`` are views of the fused output: the hook hands the function the
canonical head-major slice (``[..., H * D]`` or ``[..., H_kv * D]``, split by
:class:`~langneurons.model.geometry.ModelGeometry`) and scatters a returned replacement back into the
fused output. Edits must be returned (an in-place change of the slice is lost for interleaved layouts).
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from langneurons.model.architectures import ArchitectureSpec, get_submodule, resolve_architecture
from langneurons.errors import LangNeuronsError

#: site name -> (spec attribute naming the module, which side of the module holds the neurons)
SITES: dict[str, tuple[str, Literal["output", "input"]]] = {
    "ffn.act": ("ffn_act", "output"),
    "ffn.down_in": ("ffn_down", "input"),
    "attn.q": ("attn_q", "output"),
    "attn.k": ("attn_k", "output"),
    "attn.v": ("attn_v", "output"),
    "attn.qkv": ("attn_qkv", "output"),
    "attn.o_in": ("attn_o", "input"),
    "layer.out": ("", "output"),  # the decoder layer's output hidden state (residual stream)
}

#: the sites that are a view of a fused query-key-value projection where the family has one
FUSED_VIEWS = {"attn.q": "q", "attn.k": "k", "attn.v": "v"}

#: ``fn(layer, tensor[..., width]) -> replacement tensor or None``
SiteFunction = Callable[[int, torch.Tensor], "torch.Tensor | None"]


@dataclass
class SiteMap:
    """One module per decoder layer for a site, and the width of the neuron vector there."""

    site: str
    side: Literal["output", "input"]
    modules: list[nn.Module]
    spec: ArchitectureSpec
    model_type: str
    width: int | None = None
    #: for a view of a fused projection (``attn.q`` / ``attn.k`` / ``attn.v``): its columns in the output
    columns: torch.Tensor | None = None

    @property
    def num_layers(self) -> int:
        return len(self.modules)

    def hooks(self, fn: "SiteFunction", layers: set[int] | None = None):
        """Context manager attaching ``fn(layer, tensor)`` at this site (see :func:`site_hooks`)."""
        return site_hooks(self, fn, layers)

    def describe(self) -> dict:
        attribute = "attn_qkv" if self.columns is not None else SITES[self.site][0]
        module_path = getattr(self.spec, attribute) if attribute else ""
        out = {
            "site": self.site,
            "side": self.side,
            "module": f"{self.spec.layers}.{{layer}}" + (f".{module_path}" if module_path else ""),
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "width": self.width,
        }
        if self.columns is not None:
            out["view"] = f"{self.site.split('.')[-1]} columns of the fused projection ({self.spec.qkv_layout})"
        return out


def model_type_of(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def locate_site(model: nn.Module, site: str = "ffn.act", validate: bool = True) -> SiteMap:
    """Map ``site`` to one module per decoder layer of ``model`` (validated unless ``validate=False``)."""
    if site not in SITES:
        raise LangNeuronsError(f"unknown neuron site {site!r}; known sites: {', '.join(SITES)}")
    spec = resolve_architecture(model)
    attribute, side = SITES[site]
    path = getattr(spec, attribute) if attribute else ""
    model_type = model_type_of(model)
    columns = None
    if path is None and site in FUSED_VIEWS and spec.attn_qkv is not None:
        from langneurons.model.geometry import model_geometry

        path, columns = spec.attn_qkv, model_geometry(model).qkv_columns()[FUSED_VIEWS[site]]
    if path is None:
        raise LangNeuronsError(f"site {site!r} does not exist in model type {model_type!r}")
    layers = get_submodule(model, spec.layers)
    modules = [get_submodule(layer, path) if path else layer for layer in layers]
    if any(module is None for module in modules):
        raise LangNeuronsError(f"model type {model_type!r}: no module {path!r} in every layer of {spec.layers!r}")
    if len({id(module) for module in modules}) != len(modules):
        raise LangNeuronsError(
            f"model type {model_type!r}: the module {path!r} is shared between layers; "
            "use the site ffn.down_in instead"
        )
    site_map = SiteMap(site=site, side=side, modules=modules, spec=spec, model_type=model_type, columns=columns)
    if validate:
        validate_site(model, site_map)
    return site_map


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the input embedding's device, or its execution device under accelerate offload."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if embeddings is not None:
        hook = getattr(embeddings, "_hf_hook", None)
        for candidate in getattr(hook, "hooks", [hook]):
            device = getattr(candidate, "execution_device", None)
            if device is not None:
                return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
        if embeddings.weight.device.type != "meta":
            return embeddings.weight.device
    for parameter in model.parameters():
        if parameter.device.type != "meta":
            return parameter.device
    return torch.device("cpu")


@torch.inference_mode()
def validate_site(model: nn.Module, site_map: SiteMap) -> int:
    """Run four tokens through ``model`` and check the site fires once per layer with one width.

    For ``ffn.act`` the width must also equal the width entering the down projection (d_ff).
    Sets and returns ``site_map.width``.
    """
    calls: list[list[int]] = [[] for _ in site_map.modules]
    down_widths: set[int] = set()

    def record_width(layer: int, tensor: torch.Tensor) -> None:
        calls[layer].append(tensor.shape[-1])

    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 4
    ids = (torch.arange(4) % max(int(vocab), 1)).unsqueeze(0).to(input_device(model))
    with ExitStack() as stack:
        stack.enter_context(site_hooks(site_map, record_width))
        if site_map.site == "ffn.act":
            down = locate_site(model, "ffn.down_in", validate=False)
            stack.enter_context(site_hooks(down, lambda layer, t: down_widths.add(t.shape[-1])))
        model(input_ids=ids, use_cache=False)
    counts = [len(c) for c in calls]
    widths = {w for c in calls for w in c}
    if any(count != 1 for count in counts) or len(widths) != 1:
        raise LangNeuronsError(
            f"model type {site_map.model_type!r}: the site {site_map.site!r} did not fire exactly once per layer "
            f"with one width (calls per layer {counts}, widths {sorted(widths)}); "
            "register the right module names with langneurons.register_architecture"
        )
    if down_widths and down_widths != widths:
        raise LangNeuronsError(
            f"model type {site_map.model_type!r}: the activation module gives width {sorted(widths)} but the down "
            f"projection takes {sorted(down_widths)}; register the right module names with "
            "langneurons.register_architecture"
        )
    site_map.width = widths.pop()
    return site_map.width


def _column_view(fn: SiteFunction, columns: torch.Tensor) -> SiteFunction:
    """``fn`` on the ``columns`` of a fused output; a returned replacement is scattered back."""
    start, count = int(columns[0]), columns.numel()
    contiguous = bool((columns == torch.arange(start, start + count)).all())
    on_device: dict[torch.device, torch.Tensor] = {}

    def viewed(layer: int, fused: torch.Tensor) -> torch.Tensor | None:
        if contiguous:
            replaced = fn(layer, fused.narrow(-1, start, count))
            if replaced is None:
                return None
            out = fused.clone()
            out.narrow(-1, start, count).copy_(replaced)
            return out
        index = on_device.get(fused.device)
        if index is None:
            index = on_device[fused.device] = columns.to(fused.device)
        replaced = fn(layer, fused.index_select(-1, index))
        return None if replaced is None else fused.index_copy(-1, index, replaced.to(fused.dtype))

    return viewed


def _make_output_hook(fn: SiteFunction, layer: int):
    def hook(module, args, output):
        if isinstance(output, tuple):
            replaced = fn(layer, output[0])
            return None if replaced is None else (replaced, *output[1:])
        return fn(layer, output)

    return hook


def _make_input_hook(fn: SiteFunction, layer: int):
    def hook(module, args):
        replaced = fn(layer, args[0])
        return None if replaced is None else (replaced, *args[1:])

    return hook


@contextmanager
def site_hooks(site_map: SiteMap, fn: SiteFunction, layers: set[int] | None = None) -> Iterator[None]:
    """Attach ``fn`` at the site of every layer (or of ``layers``) while the context is open."""
    handles = []
    if site_map.columns is not None:
        fn = _column_view(fn, site_map.columns)
    try:
        for layer, module in enumerate(site_map.modules):
            if layers is not None and layer not in layers:
                continue
            if site_map.side == "output":
                handles.append(module.register_forward_hook(_make_output_hook(fn, layer)))
            else:
                handles.append(module.register_forward_pre_hook(_make_input_hook(fn, layer)))
        yield
    finally:
        for handle in handles:
            handle.remove()
