"""Recording per-sample vectors over a parallel corpus: items of all languages run together, in one pass, data
parallel under torchrun (:mod:`langneurons.recording.parallel_run`)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from langneurons.data.batching import Side
from langneurons.data.parallel import ParallelCorpus, as_parallel_corpus, parallel_batches, tokenize_parallel
from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.model.loading import LoadedModel, as_loaded
from langneurons.model.sites import locate_site
from langneurons.recording.recorder import Batch, run_batches
from langneurons.stats.base import BatchInfo
from langneurons.progress import work_line
from langneurons.recording.parallel_run import active_run
from langneurons.sets.compatibility import model_provenance
from langneurons.stats.pooled import LARGE_ELEMENTS, MEMMAP_FILE, PooledVectors, choose_storage


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

    Under torchrun each rank tokenizes and runs only its batches (batch ``k`` on rank ``k % world_size``; the
    single-process batches, so the same vectors) and the vectors are summed over the ranks (exact: each row
    is written by one rank); every rank returns all of them. A memory map is shared: its directory must be on
    a filesystem every rank sees. ``meta`` records ``world_size`` and the rows each rank ran (``rank_items``).
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
    with active_run() as run:
        # batch k holds items [k * per, (k + 1) * per); each rank tokenizes and runs only its batches
        per = max(1, batch_size // len(parallel.languages)) if batch_size >= 1 else 1
        if batch_size < 1:
            raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
        count = -(-parallel.num_items // per)
        owned = [i for k in range(count) if run.owns(k) for i in range(k * per, min((k + 1) * per, parallel.num_items))]
        mine = parallel if run.world_size == 1 else parallel.select(items=owned) if owned else None
        tokenized = tokenize_parallel(mine, loaded.tokenizer, max_length, keep, add_bos, warn=False) if mine else None
        inputs = _describe_inputs(run, tokenized, parallel, max_length, keep, add_bos)
        site_maps = [locate_site(loaded.model, name) for name in names]
        parameters = {"max_length": max_length, "batch_size": batch_size, "padding_side": padding_side,
                      "add_bos": add_bos, "keep": keep}
        source = None if isinstance(corpus, dict) else parallel.provenance()
        results: dict[str, PooledVectors] = {}
        for site_map in site_maps:
            directory = None if storage_dir is None else Path(storage_dir) / (
                site_map.site if len(site_maps) > 1 else "")
            meta = {**model_provenance(loaded), "site": site_map.site, "site_info": site_map.describe(),
                    "corpus": source, "parameters": parameters, "inputs": inputs}
            results[site_map.site] = _empty(run, parallel, site_map, mode, vector_dtype, meta, storage, directory,
                                            large_threshold)

        def batches():
            ids = torch.tensor(owned, dtype=torch.long)
            for batch in parallel_batches(tokenized, batch_size, padding_side):
                item_ids = batch.item_ids if run.world_size == 1 else ids[batch.item_ids]
                info = BatchInfo(languages=batch.languages, sample_ids=item_ids)
                run.items += int(batch.input_ids.shape[0])
                run.add_tokens(int(batch.attention_mask.sum()))
                yield Batch(info, batch.input_ids, batch.attention_mask, token_mask=batch.token_mask)

        if tokenized is not None:
            # the bar's total: the pooled tokens of this rank's sentences after the cut
            total = sum(max(1, len(row) - int(tokenized.bos)) for rows in tokenized.rows.values() for row in rows)
            if progress and run.is_main:
                print(work_line("pool", [(len(parallel.languages), "languages"), (parallel.num_items, "sentences")],
                                total, "tokens"), file=sys.stderr, flush=True)
            run_batches(loaded.model, site_maps, batches(), list(results.values()), total_tokens=total,
                        progress=progress and run.is_main, desc="pool")
        for vectors in results.values():
            _gather(run, vectors)
        report = run.report()
        for vectors in results.values():
            vectors.meta.update(report)
    return results[site] if sites is None else results


def _describe_inputs(run: Any, tokenized: Any, parallel: ParallelCorpus, max_length: int | None, keep: str,
                     add_bos: bool) -> dict[str, Any]:
    """What :meth:`TokenizedParallel.describe` says of the whole corpus (cut and token counts summed over ranks),
    with the warning about cut inputs said once."""
    local = torch.tensor([tokenized.cut, tokenized.describe()["tokens"]] if tokenized is not None else [0, 0])
    cut, tokens = (int(v) for v in run.all_sum(local))
    if cut and run.is_main:
        side = "start (the end is kept)" if keep == "end" else "end (the start is kept)"
        warnings.warn(f"{cut} of {parallel.num_items * len(parallel.languages)} inputs are longer than {max_length} "
                      f"tokens and were cut from the {side}", LangNeuronsWarning, stacklevel=3)
    return {"max_length": max_length, "keep": keep, "bos": bool(add_bos), "cut": cut, "tokens": tokens}


def _empty(run: Any, parallel: ParallelCorpus, site_map: Any, mode: str, dtype: Any, meta: dict[str, Any],
           storage: str, directory: Path | None, threshold: int) -> PooledVectors:
    """Zero vectors of the whole corpus on every rank; a memory map is created by rank 0 and shared."""
    shape = (parallel.languages, parallel.num_items, site_map.num_layers, site_map.width)
    if run.world_size == 1 or run.is_main:
        vectors = PooledVectors.empty(*shape, mode=mode, dtype=dtype, meta=meta, storage=storage,
                                      directory=directory, threshold=threshold, site=site_map.site)
        vectors.flush()
    run.barrier()
    if run.world_size == 1 or run.is_main:
        return vectors
    elements = len(parallel.languages) * parallel.num_items * site_map.num_layers * site_map.width
    kind, chosen = choose_storage(elements, storage, dtype, directory, threshold)
    if kind != "memmap":
        return PooledVectors.empty(*shape, mode=mode, dtype=dtype, meta=meta, storage=storage, directory=directory,
                                   threshold=threshold, site=site_map.site)
    path = Path(directory) / MEMMAP_FILE
    if not path.is_file():
        raise LangNeuronsError(f"memory-mapped vectors under torchrun need the storage directory on a filesystem "
                               f"every rank sees; rank {run.rank} cannot see {str(path)!r}")
    array = np.load(path, mmap_mode="r+")
    info = {"kind": "memmap", "dtype": str(chosen).replace("torch.", ""), "elements": elements,
            "threshold": threshold, "path": str(path)}
    vectors = PooledVectors(parallel.languages, torch.from_numpy(array), mode, {**meta, "storage": info},
                            site=site_map.site)
    vectors._memmap = array
    return vectors


def _gather(run: Any, vectors: PooledVectors) -> None:
    """Every rank wrote only its items' rows: sum the rest in (exact: each row is non-zero on one rank only), or,
    for a shared memory map, wait until every rank has written its rows."""
    vectors.flush()
    if run.world_size == 1:
        return
    if vectors.storage.get("kind") == "memmap":
        run.barrier()
        return
    vectors.vectors.copy_(run.all_sum(vectors.vectors))
