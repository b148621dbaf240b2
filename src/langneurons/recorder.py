"""One streaming pass over a corpus that feeds neuron activations into statistics.

The recorder never keeps raw activations: a hook at the neuron site of every layer hands the
activations ``[batch, seq, width]`` to each statistic, which reduces them on the model's device.
It runs the model's base (no LM head: logits are not needed) under ``torch.inference_mode``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from langneurons.corpus import PackedCorpus, default_seq_len, load_corpus
from langneurons.errors import LangNeuronsError
from langneurons.loading import LoadedModel, as_loaded
from langneurons.sites import SiteMap, input_device, locate_site, site_hooks
from langneurons.stats.activation import ActivationStats
from langneurons.stats.base import BatchInfo, SiteStatistic


_REDUCE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_body(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (``model.model``, ``model.transformer``, ...)."""
    prefix = getattr(model, "base_model_prefix", None)
    body = getattr(model, prefix, None) if prefix else None
    return body if isinstance(body, nn.Module) else model


def shard_windows(windows: torch.Tensor, shard_index: int, num_shards: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of one shard (every ``num_shards``-th, starting at ``shard_index``) and their indices."""
    if not 0 <= shard_index < num_shards:
        raise LangNeuronsError(f"shard index {shard_index} is not in [0, {num_shards})")
    ids = torch.arange(shard_index, windows.shape[0], num_shards)
    return windows[ids], ids


@dataclass
class Batch:
    """One forward pass worth of input: ``input_ids[batch, seq]``, optional ``attention_mask`` (1 = token)."""

    info: BatchInfo
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None


def window_batches(windows: dict[str, torch.Tensor], batch_size: int,
                   sample_ids: dict[str, torch.Tensor] | None = None) -> Iterator[Batch]:
    """Batches of full windows ``long[n, seq]``, language after language."""
    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    for lang, lang_windows in windows.items():
        ids_all = sample_ids[lang] if sample_ids else torch.arange(lang_windows.shape[0])
        for start in range(0, lang_windows.shape[0], batch_size):
            yield Batch(BatchInfo(lang, sample_ids=ids_all[start : start + batch_size]),
                        lang_windows[start : start + batch_size])


@torch.inference_mode()
def run_batches(
    model: nn.Module,
    site_map: SiteMap,
    batches: Iterable[Batch],
    statistics: Iterable[SiteStatistic],
    total_tokens: int | None = None,
    progress: bool = True,
    desc: str = "record",
) -> None:
    """Run ``batches`` through the model's decoder stack and feed every statistic at the site.

    A batch with an ``attention_mask`` (right padding) passes it to the model and to the statistics as
    ``BatchInfo.token_mask``, so padding never counts.
    """
    statistics = list(statistics)
    body, device = model_body(model), input_device(model)

    def feed(layer: int, activations: torch.Tensor) -> None:
        for statistic in statistics:
            statistic.update(layer, activations)

    bar = tqdm(total=total_tokens, unit="tok", unit_scale=True, disable=not progress, desc=desc, dynamic_ncols=True)
    with site_hooks(site_map, feed), bar:
        for batch in batches:
            bar.set_description(f"{desc} {batch.info.language}", refresh=False)
            input_ids = batch.input_ids.to(device, non_blocking=True)
            kwargs = {}
            if batch.attention_mask is not None:
                kwargs["attention_mask"] = batch.attention_mask.to(device)
                batch.info.token_mask = kwargs["attention_mask"].bool()
            for statistic in statistics:
                statistic.begin_batch(batch.info, input_ids.shape[0], input_ids.shape[1])
            body(input_ids=input_ids, use_cache=False, **kwargs)
            for statistic in statistics:
                statistic.end_batch()
            bar.update(batch.info.num_tokens(*input_ids.shape))


def run_statistics(
    model: nn.Module,
    site_map: SiteMap,
    windows: dict[str, torch.Tensor],
    statistics: Iterable[SiteStatistic],
    batch_size: int = 8,
    progress: bool = True,
    sample_ids: dict[str, torch.Tensor] | None = None,
) -> None:
    """Run every language's windows ``long[n, seq]`` through ``model`` and feed ``statistics``."""
    batches = window_batches(windows, batch_size, sample_ids)
    total = sum(int(w.numel()) for w in windows.values())
    run_batches(model, site_map, batches, statistics, total_tokens=total, progress=progress)


def record(
    model: nn.Module | LoadedModel | str,
    corpus: str | Path | PackedCorpus,
    langs: list[str] | None = None,
    max_tokens: int | None = None,
    seq_len: int | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    site: str = "ffn.act",
    tokenizer: Any = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    reduce_dtype: str | torch.dtype = "float32",
    progress: bool = True,
) -> ActivationStats:
    """Record per-language activation statistics of every neuron at ``site``.

    ``corpus`` is a directory of ``{lang}.txt`` / ``{lang}.jsonl`` files (or a packed corpus).
    Returns :class:`ActivationStats` with tensors ``[language, layer, neuron]`` on the CPU.
    With ``num_shards > 1`` only every ``num_shards``-th window is run; shards merge by addition.
    ``reduce_dtype="float64"`` makes the per-batch sums exact to double precision (slower); the default
    float32 blocks keep the error near 1e-7 of the sum of magnitudes.
    """
    reduce_dtype = _REDUCE_DTYPES.get(reduce_dtype, reduce_dtype)
    if reduce_dtype not in (torch.float32, torch.float64):
        raise LangNeuronsError(f"reduce_dtype must be float32 or float64, got {reduce_dtype!r}")
    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype, revision=revision, device_map=device_map)
    site_map = locate_site(loaded.model, site)
    if isinstance(corpus, PackedCorpus):
        packed = corpus
    else:
        length = seq_len or default_seq_len(loaded.model)
        packed = load_corpus(corpus, loaded.tokenizer, length, langs=langs, max_tokens=max_tokens)
    windows, sample_ids = {}, {}
    for lang, lang_windows in packed.windows.items():
        windows[lang], sample_ids[lang] = shard_windows(lang_windows, shard_index, num_shards)
    meta = {
        **loaded.provenance(),
        "site": site,
        "site_info": site_map.describe(),
        "architecture": site_map.spec.to_dict(),
        "corpus": {"path": str(corpus) if not isinstance(corpus, PackedCorpus) else None, **packed.provenance()},
        "parameters": {"batch_size": batch_size, "shard_index": shard_index, "num_shards": num_shards,
                       "reduce_dtype": str(reduce_dtype).replace("torch.", "")},
    }
    stats = ActivationStats.empty(packed.languages, site_map.num_layers, site_map.width, input_device(loaded.model),
                                  meta=meta, reduce_dtype=reduce_dtype)
    run_statistics(loaded.model, site_map, windows, [stats], batch_size=batch_size, progress=progress,
                   sample_ids=sample_ids)
    return stats.to("cpu")
