"""Recording per-sample vectors over a parallel corpus: items of all languages run together, in one pass."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.data.batching import Side
from langneurons.data.parallel import ParallelCorpus, as_parallel_corpus, parallel_batches, tokenize_parallel
from langneurons.errors import LangNeuronsError
from langneurons.model.loading import LoadedModel, as_loaded
from langneurons.model.sites import locate_site
from langneurons.recording.recorder import Batch, run_batches
from langneurons.stats.base import BatchInfo
from langneurons.progress import work_line
from langneurons.sets.compatibility import model_provenance
from langneurons.stats.pooled import LARGE_ELEMENTS, PooledVectors


def record_pooled(
    model: nn.Module | LoadedModel | str,
    corpus: str | Path | dict[str, list[str]] | ParallelCorpus,
    site: str = "ffn.act",
    mode: str = "mean",
    langs: list[str] | None = None,
    max_samples: int | None = None,
    max_length: int | None = 512,
    batch_size: int = 16,
    tokenizer: Any = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    progress: bool = True,
    padding_side: Side = "right",
    add_bos: bool = False,
    keep: str | None = None,
    storage: str = "auto",
    storage_dir: str | Path | None = None,
    large_threshold: int = LARGE_ELEMENTS,
    vector_dtype: torch.dtype | None = None,
    sites: list[str] | tuple[str, ...] | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | Path | None = None,
) -> PooledVectors | dict[str, PooledVectors]:
    """Per-sample pooled vectors ``[language, sample, layer, width]`` at ``site`` over a parallel corpus.

    ``corpus`` is a directory of line-aligned ``{lang}.txt`` files, one ``.jsonl`` with a field per language,
    ``{lang: lines}`` or a :class:`ParallelCorpus`; ``mode`` is ``mean``, ``sum`` or ``last`` (last token). Use
    ``site="layer.out"`` for hidden states (sentence embeddings). Lines are tokenized as written (no special
    tokens; ``add_bos`` puts a BOS first and leaves it out of the pooling). Batches hold whole items (the
    translations of an item together; ``batch_size`` counts rows), padded on ``padding_side``. Inputs longer than
    ``max_length`` keep their end for ``last`` and their start otherwise (``keep="end"`` / ``"start"`` to choose);
    how many were cut is in ``meta["inputs"]["cut"]`` and a warning. ``storage`` / ``storage_dir`` /
    ``large_threshold`` / ``vector_dtype`` choose the storage (see :func:`langneurons.stats.pooled.choose_storage`;
    one ``{site}`` subdirectory of ``storage_dir`` per site). With ``sites=[...]`` every site is pooled in the
    same pass and the result is ``{site: PooledVectors}``.
    """
    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype, revision=revision, device_map=device_map,
                       offload_folder=offload_folder)
    parallel = as_parallel_corpus(corpus, langs)
    if max_samples is not None:
        parallel = parallel.select(items=max_samples)
    names = [site] if sites is None else list(dict.fromkeys(sites))
    if not names:
        raise LangNeuronsError("sites must name at least one site")
    keep = keep or ("end" if mode == "last" else "start")
    tokenized = tokenize_parallel(parallel, loaded.tokenizer, max_length, keep, add_bos)
    site_maps = [locate_site(loaded.model, name) for name in names]
    parameters = {"max_length": max_length, "batch_size": batch_size, "padding_side": padding_side,
                  "add_bos": add_bos, "keep": keep}
    source = None if isinstance(corpus, dict) else parallel.provenance()
    results: dict[str, PooledVectors] = {}
    for site_map in site_maps:
        directory = None if storage_dir is None else Path(storage_dir) / (
            site_map.site if len(site_maps) > 1 else "")
        meta = {**model_provenance(loaded), "site": site_map.site, "site_info": site_map.describe(), "corpus": source,
                "parameters": parameters, "inputs": tokenized.describe()}
        results[site_map.site] = PooledVectors.empty(
            parallel.languages, parallel.num_items, site_map.num_layers, site_map.width, mode=mode,
            dtype=vector_dtype, meta=meta, storage=storage, directory=directory, threshold=large_threshold,
            site=site_map.site)

    def batches():
        for batch in parallel_batches(tokenized, batch_size, padding_side):
            info = BatchInfo(languages=batch.languages, sample_ids=batch.item_ids)
            yield Batch(info, batch.input_ids, batch.attention_mask, token_mask=batch.token_mask)

    total = sum(max(1, len(row) - int(tokenized.bos)) for rows in tokenized.rows.values() for row in rows)
    if progress:  # the bar's total: the pooled tokens of every sentence after the cut
        print(work_line("pool", [(len(parallel.languages), "languages"), (parallel.num_items, "sentences")], total,
                        "tokens"), file=sys.stderr, flush=True)
    run_batches(loaded.model, site_maps, batches(), list(results.values()), total_tokens=total, progress=progress,
                desc="pool")
    for vectors in results.values():
        vectors.flush()
    return results[site] if sites is None else results
