"""One streaming pass over a corpus that feeds neuron activations into statistics.

The recorder never keeps raw activations: a hook at every attached site (one or several, e.g. ``ffn.down_in``,
``attn.q``, ``attn.k`` and ``attn.o_in`` together; see :mod:`langneurons.recording.hooks`) and layer hands the
activations ``[batch, seq, width]`` to each statistic that declares that site, which reduces them where they
are (on the layer's device). It runs the model's base (no LM head: logits are not needed) under
``torch.inference_mode`` with the model's own attention implementation (SDPA stays SDPA), passes the
attention mask and position ids of padded batches, and stops the forward pass once every site has fired at
every layer. :func:`record` streams the corpus (memory does not grow with it), runs under ``torchrun`` as one
data-parallel rank (:mod:`langneurons.recording.distributed`), and can write checkpoints and resume from them
(:mod:`langneurons.recording.checkpoint`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from langneurons.progress import progress_bar, work_line
from langneurons.sets.compatibility import check_context, model_provenance
from langneurons.recording import distributed
from langneurons.recording.accumulator import AccumulatorGroup, StatsAccumulator
from langneurons.recording.checkpoint import Checkpointer, CheckpointStore, RecordPosition, resume_position
from langneurons.data.corpus import PackedCorpus, default_seq_len, find_corpus_files
from langneurons.errors import LangNeuronsError
from langneurons.model.loading import LoadedModel, as_loaded, load_model
from langneurons.recording.schedule import (
    PlannedBatch,
    ScheduleCursor,
    batch_schedule,
    estimated_tokens,
    expected_tokens,
    indexed_schedule,
    select_batches,
)
from langneurons.data.rank_windows import index_corpus
from langneurons.model.sites import SiteMap, input_device, locate_site
from langneurons.data.batching import forward_kwargs, last_index
from langneurons.recording.hooks import as_providers, attach_all, expected_calls, route
from langneurons.stats.activation import ActivationStats
from langneurons.stats.base import BatchInfo, SiteStatistic
from langneurons.data.streaming import StreamingCorpus, scan_file

_REDUCE_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_body(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (``model.model``, ``model.transformer``, ...)."""
    prefix = getattr(model, "base_model_prefix", None)
    body = getattr(model, prefix, None) if prefix else None
    return body if isinstance(body, nn.Module) else model


def execution_device(model: nn.Module) -> torch.device:
    """Where input ids go (see :func:`langneurons.model.sites.input_device`)."""
    return input_device(model)


def offloads_weights(model: nn.Module) -> bool:
    """Some weights live off the execution device and accelerate loads them per forward (cpu/disk offload)."""
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        if hook is not None and any(getattr(h, "offload", False) for h in getattr(hook, "hooks", [hook])):
            return True
    return False


def shard_windows(windows: torch.Tensor, shard_index: int, num_shards: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of one shard (every ``num_shards``-th, starting at ``shard_index``) and their indices."""
    if not 0 <= shard_index < num_shards:
        raise LangNeuronsError(f"shard index {shard_index} is not in [0, {num_shards})")
    ids = torch.arange(shard_index, windows.shape[0], num_shards)
    return windows[ids], ids


@dataclass
class Batch:
    """One forward pass worth of input: ``input_ids[batch, seq]``, optional ``attention_mask`` (1 = token).

    ``index`` is the batch's position in a recording's schedule (for checkpoints), when it has one;
    ``token_mask`` (``bool[batch, seq]``) the positions the statistics count, when not all real tokens.
    """

    info: BatchInfo
    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None
    index: int | None = None
    token_mask: torch.Tensor | None = None  # positions that count, when not every real token does (a BOS)


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


class _LastLayerDone(Exception):
    """Raised by the hook of the last layer to end a forward pass whose remaining output is not needed."""


@torch.inference_mode()
def run_batches(
    model: nn.Module,
    sites: Any,
    batches: Iterable[Batch],
    statistics: Iterable[SiteStatistic],
    total_tokens: int | None = None,
    progress: bool = True,
    desc: str = "record",
    stop_early: bool = True,
    after_batch: Callable[[Batch], None] | None = None,
) -> None:
    """Run ``batches`` through the model's decoder stack and feed every statistic at the sites it declares.

    ``sites`` is one SiteMap (or site provider, or site name), several, or ``None`` (the sites the statistics
    declare); all are attached in one pass (see :mod:`langneurons.recording.hooks`). A batch with an
    ``attention_mask`` (left or right padding) passes it and ``position_ids`` from it (when the forward takes
    them) to the model, and gives the statistics ``BatchInfo.token_mask`` (``Batch.token_mask`` when set, else
    the attention mask) and ``BatchInfo.last_index``, so padding never counts. With ``stop_early`` the forward
    pass ends as soon as every site has fired at every hooked layer (the rest of the last layer and the final
    norm are skipped); not when accelerate offloads weights, whose hooks must run to the end. ``after_batch``
    runs after each batch.
    """
    statistics = list(statistics)
    providers = as_providers(model, sites, statistics)
    table = route(providers, statistics)
    expected = {provider.site: expected_calls(provider) for provider in providers}
    everything = sum(expected.values())
    body, device = model_body(model), execution_device(model)
    stop_early = stop_early and not offloads_weights(model)
    fired = {site: 0 for site in expected}
    total = [0]

    def make_feed(provider: Any) -> Callable[[int, Any], None]:
        site, consumers = provider.site, table[provider.site]

        def feed(layer: int, activations: Any) -> None:
            for update in consumers:
                update(layer, activations)
            fired[site] += 1
            total[0] += 1
            if stop_early and total[0] == everything:
                raise _LastLayerDone

        return feed

    with attach_all(providers, make_feed), progress_bar(desc, total_tokens, "tok", (), progress) as bar:
        for batch in batches:
            bar.describe(batch.info.language or "mixed")
            input_ids = batch.input_ids.to(device, non_blocking=True)
            kwargs = _prepare(batch, body, device, *input_ids.shape)
            for statistic in statistics:
                statistic.begin_batch(batch.info, input_ids.shape[0], input_ids.shape[1])
            for site in fired:
                fired[site] = 0
            total[0] = 0
            try:
                body(input_ids=input_ids, use_cache=False, **kwargs)
            except _LastLayerDone:
                pass
            for site, count in fired.items():
                if count != expected[site]:
                    raise LangNeuronsError(f"the site {site!r} fired {count} times in a forward pass of "
                                           f"{expected[site]} layers")
            for statistic in statistics:
                statistic.end_batch()
            if after_batch is not None:
                after_batch(batch)
            bar.update(batch.info.num_tokens(*input_ids.shape))
        bar.finish()  # the total was an upper bound or an estimate (a streamed corpus)


def _prepare(batch: Batch, body: nn.Module, device: torch.device, batch_size: int, seq_len: int) -> dict[str, Any]:
    """Fill ``batch.info`` (token mask, last index) and return the forward's padding arguments."""
    info, kwargs = batch.info, {}
    counted = batch.token_mask if batch.token_mask is not None else info.token_mask
    if batch.attention_mask is not None:
        mask = batch.attention_mask.to(device)
        kwargs = forward_kwargs(body, mask)
        counted = mask if batch.token_mask is None else counted
        info.last_index = last_index(mask)
    else:
        info.last_index = last_index(None, seq_len, batch_size).to(device)
    info.token_mask = None if counted is None else counted.to(device).bool()
    return kwargs


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
    offload_folder: str | Path | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    reduce_dtype: str | torch.dtype = "float32",
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    distributed_run: bool | None = None,
    reduction: str | None = None,
    sites: list[str] | tuple[str, ...] | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> ActivationStats | dict[str, ActivationStats]:
    """Record per-language activation statistics of every neuron at ``site``.

    With ``sites=[...]`` every site is recorded in the same pass and the result is ``{site: ActivationStats}``.

    ``corpus`` is a directory of ``{lang}.txt`` / ``{lang}.jsonl`` files, streamed (windows are made
    while the files are read), or a packed corpus. Returns :class:`ActivationStats` with tensors
    ``[language, layer, neuron]`` on the CPU. With ``num_shards > 1`` only every ``num_shards``-th window
    is run; shards merge by addition. ``reduce_dtype="float64"`` makes the CPU per-block sums exact to
    double precision (slower); ``reduction`` picks ``blocks`` / ``direct`` (default: blocks on the CPU,
    direct on accelerators, see :mod:`langneurons.recording.accumulator`). ``device_map`` / ``offload_folder`` place
    a big model with accelerate; ``revision``, ``trust_remote_code`` and ``attn_implementation`` load a hub model
    (see :func:`langneurons.model.loading.load_model`).

    Under ``torchrun`` (``distributed_run=None`` follows the environment) this process runs its rank's
    batches and the statistics are summed over all ranks; every rank returns the total.
    With ``checkpoint_dir`` and ``checkpoint_every=N`` the partial sums are written atomically every ``N``
    windows (per rank) and once more at the end; ``resume=True`` continues from the newest checkpoint
    (it is verified first) and the result equals an uninterrupted run. The checkpoints are left in place:
    remove them with ``CheckpointStore(checkpoint_dir, rank).clear()`` once the result is saved.
    """
    reduce_dtype = _REDUCE_DTYPES.get(reduce_dtype, reduce_dtype)
    if reduce_dtype not in (torch.float32, torch.float64):
        raise LangNeuronsError(f"reduce_dtype must be float32 or float64, got {reduce_dtype!r}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise LangNeuronsError(f"--checkpoint-every must be at least 1 window, got {checkpoint_every}")
    if (checkpoint_every is not None or resume) and checkpoint_dir is None:
        raise LangNeuronsError("checkpoints need a checkpoint directory")
    files = None
    if not isinstance(corpus, PackedCorpus):  # check and hash the files before any model time is spent
        files = {lang: scan_file(lang, path) for lang, path in find_corpus_files(corpus, langs).items()}
    context, device = distributed.setup(device, distributed_run)
    if context.is_distributed and device_map is not None:
        raise LangNeuronsError("--device-map cannot be combined with data-parallel ranks (torchrun); "
                               "run one process per model copy")
    if isinstance(model, (str, Path)):
        loaded = load_model(str(model), device=device, dtype=dtype, revision=revision, device_map=device_map,
                            offload_folder=offload_folder, trust_remote_code=trust_remote_code,
                            attn_implementation=attn_implementation)
    else:
        loaded = as_loaded(model, tokenizer, device=device, dtype=dtype, revision=revision, device_map=device_map,
                           offload_folder=offload_folder)
    names = [site] if sites is None else list(dict.fromkeys(sites))
    if not names:
        raise LangNeuronsError("sites must name at least one site")
    site_maps = {name: locate_site(loaded.model, name) for name in names}
    check_context(loaded.model, seq_len, f"model {loaded.name!r}")
    if files is None:
        source: PackedCorpus | StreamingCorpus = corpus
    else:
        source = StreamingCorpus(Path(corpus), loaded.tokenizer, seq_len or default_seq_len(loaded.model),
                                 max_tokens, files)
        if source.seq_len < 2:
            raise LangNeuronsError(f"--seq-len must be at least 2, got {source.seq_len}")
        if max_tokens is not None and max_tokens < source.seq_len:
            raise LangNeuronsError(f"--max-tokens {max_tokens} is smaller than one window (--seq-len {source.seq_len})")
    stats_device = execution_device(loaded.model)
    accumulators = {name: StatsAccumulator(source.languages, site_map.num_layers, site_map.width, stats_device,
                                           reduce_dtype=reduce_dtype, strategy=reduction, site=name)
                    for name, site_map in site_maps.items()}
    accumulator = AccumulatorGroup(accumulators)
    first = next(iter(accumulators.values()))
    parameters = {"batch_size": batch_size, "shard_index": shard_index, "num_shards": num_shards,
                  "reduce_dtype": str(reduce_dtype).replace("torch.", ""), "reduction": first.strategy,
                  "world_size": context.world_size}
    provenance = model_provenance(loaded)  # with the model fingerprint (langneurons.sets.compatibility)
    fingerprint = {
        **{key: provenance[key] for key in ("model", "revision", "model_type", "dtype")},
        **_site_fingerprint(site_maps), "languages": source.languages,
        "corpus": {"path": None if files is None else str(corpus), "seq_len": source.seq_len,
                   "max_tokens": source.max_tokens,
                   "sha256": {lang: entry["sha256"] for lang, entry in source.provenance()["files"].items()}},
        **parameters, "rank": context.rank,
    }

    store = None if checkpoint_dir is None else CheckpointStore(checkpoint_dir, context.rank)
    position, every, done = RecordPosition(), checkpoint_every, set()
    if store is not None and resume:
        position, every, done = resume_position(store, context, fingerprint, accumulator, every)
    elif store is not None and store.exists():
        raise LangNeuronsError(f"{str(checkpoint_dir)!r} holds checkpoints of an earlier run; resume it "
                               "(--resume) or delete it")
    distributed.barrier(context)  # every rank has looked at the checkpoints before any rank writes one
    resumed_from = next((g for g in range(len(done) + 1) if g not in done), 0)
    checkpointer = Checkpointer(store, every, fingerprint, accumulator, position)

    def runs(index: int) -> bool:
        return distributed.owns_batch(context, index) and index not in done

    cursor = ScheduleCursor()
    if context.is_distributed and files is not None:  # each rank tokenizes only its share of the corpus
        indexes = index_corpus(source, context.rank, context.world_size,
                               lambda t: distributed.all_sum(context, t, stats_device))
        planned = indexed_schedule(source, indexes, batch_size, shard_index, num_shards, runs, cursor)
    else:
        planned = select_batches(batch_schedule(source, batch_size, shard_index, num_shards), runs, resumed_from,
                                 cursor)
    total = estimated_tokens(source, num_shards * context.world_size)
    if progress and context.is_main:
        exact = expected_tokens(source, num_shards * context.world_size) is not None
        each = "tokens each" if exact else "tokens each (estimated)"
        factors = [(len(source.languages), "languages"), (total // max(len(source.languages), 1), each)]
        print(work_line("record", factors, total, "tokens"), file=sys.stderr, flush=True)
    total = max(total - position.tokens_done, 0)
    run_batches(loaded.model, list(site_maps.values()), (_as_batch(p) for p in planned),
                list(accumulators.values()), total_tokens=total,
                progress=progress and context.is_main, after_batch=checkpointer.after_batch)
    if cursor.length is not None:
        position.next_batch = max(position.next_batch, cursor.length)
    checkpointer.save()  # the complete state: nothing is lost between here and the caller's save
    rank_tokens = torch.zeros(context.world_size, dtype=torch.int64, device=stats_device)
    rank_tokens[context.rank] = position.tokens_done
    distributed.all_reduce_sum(context, [*accumulator.tensors(), rank_tokens])

    results = {}
    for name, site_map in site_maps.items():
        meta = {
            **provenance,
            "site": name,
            "site_info": site_map.describe(),
            "architecture": site_map.spec.to_dict(),
            "corpus": {"path": None if files is None else str(corpus), **source.provenance()},
            "parameters": parameters,
        }
        if len(site_maps) > 1:
            meta["recorded_with"] = names  # the sites of the same pass
        if context.is_distributed:
            meta["rank_tokens"] = rank_tokens.tolist()
        if resumed_from:
            meta["resumed_from_batch"] = resumed_from
        results[name] = accumulators[name].to_stats(meta)
    return results[site] if sites is None else results


def _site_fingerprint(site_maps: dict[str, SiteMap]) -> dict[str, Any]:
    """What a checkpoint must match about the sites (one site: the 0.1 keys, so old checkpoints resume)."""
    if len(site_maps) == 1:
        site_map = next(iter(site_maps.values()))
        return {"site": site_map.site, "num_layers": site_map.num_layers, "width": site_map.width}
    return {"site": list(site_maps), "num_layers": [m.num_layers for m in site_maps.values()],
            "width": [m.width for m in site_maps.values()]}


def _as_batch(planned: PlannedBatch) -> Batch:
    return Batch(BatchInfo(planned.language, sample_ids=torch.tensor(planned.window_ids)), planned.input_ids(),
                 index=planned.index)
