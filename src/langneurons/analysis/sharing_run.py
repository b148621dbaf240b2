"""Running Sharing Matters on a model: one recording pass, then the per-item analysis chunk by chunk.

:func:`record_sharing` runs every item in every language once (the K translations of an item in one batch,
left or right padding) through the one recorder and keeps, per item and language, the last-token vectors at
``ffn.act`` (types) and, for gated MLPs, at ``ffn.down_in`` (the coefficient of the written vector), as
:class:`~langneurons.stats.pooled.PooledVectors` (float32 in memory when small; float16, memory-mapped in a
scratch folder, when large: 32 layers x 11008 neurons x 10 languages x 1000 items are 7 GB of float16 on disk,
never 14 GB of float32 in memory), the counts of neurons dead at every token (:class:`~langneurons.stats.sharing.
DeadTokens`) and, for effective scores through the final norm, the last layer's output (:class:`~langneurons.
stats.sharing.LastHidden`). :func:`analyse_recording` feeds :class:`~langneurons.analysis.sharing.
SharingAccumulator` item chunk by item chunk.

Effective-score directions (Appendix A.1) ``e_r``: row ``r`` of the output embedding (``embedding="output"``,
the default) or of the input embedding (``"input"``, as the authors' code does for BLOOM, whose embeddings are
tied), mapped back through any linear module between the final norm and the head (OPT's ``project_out``).
``final_norm=False`` (the default, the paper's ``E_r . A_i v_i``): nothing else. ``final_norm=True``: the final
norm linearised at the row's own final hidden state ``h`` with its scale frozen (the usual direct-logit
attribution): a component ``c`` reaches the logits as ``gamma * P c / sigma(h)`` (``P`` the mean-centring of a
LayerNorm, the identity for an RMSNorm), so ``e_r = P(gamma * E_r) / sigma(h)`` times the model's logit
multiplier. ``gamma``, ``P`` and ``sigma(h)`` are read off the norm module by probing it (any family, no
per-family code): ``norm(k u) - norm(0) = gamma * u / rms(u)`` for a zero-mean probe ``u``; a norm that ignores
a constant shift centres; ``sigma(h) = ||gamma * P h|| / ||norm(h) - norm(0)||``.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.analysis.sharing import SharingAccumulator, SharingSettings
from langneurons.analysis.sharing_items import SharingItems
from langneurons.data.batching import Side
from langneurons.data.parallel import parallel_batches
from langneurons.errors import LangNeuronsError
from langneurons.model.architectures import get_submodule, resolve_architecture
from langneurons.model.geometry import model_geometry, write_vectors
from langneurons.model.sites import locate_site
from langneurons.recording.recorder import Batch, run_batches
from langneurons.stats.base import BatchInfo
from langneurons.stats.pooled import LARGE_ELEMENTS, PooledVectors
from langneurons.stats.sharing import DeadTokens, LastHidden

TYPE_SITE = "ffn.act"
WRITE_SITE = "ffn.down_in"
EMBEDDINGS = ("output", "input")


@dataclass
class SharingRecording:
    """What the pass kept (see the module docstring); ``writes`` is ``acts`` for non-gated MLPs."""

    acts: PooledVectors
    writes: PooledVectors
    dead: DeadTokens | None
    hidden: LastHidden | None
    gated: bool
    scratch: Path | None = None

    def close(self) -> None:
        """Remove the scratch folder of memory-mapped vectors (if any)."""
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def is_gated(model: nn.Module) -> bool:
    return bool(resolve_architecture(model).gated)


def record_sharing(model: nn.Module, items: SharingItems, threshold: float = 0.0, batch_size: int = 16,
                   padding_side: Side = "right", dead: bool = True, final_hidden: bool = False,
                   storage: str = "auto", scratch_dir: str | Path | None = None,
                   large_threshold: int = LARGE_ELEMENTS, progress: bool = True) -> SharingRecording:
    """One pass over every item and language (see the module docstring)."""
    gated = is_gated(model)
    sites = [locate_site(model, TYPE_SITE)] + ([locate_site(model, WRITE_SITE)] if gated else [])
    num_layers, width = sites[0].num_layers, sites[0].width
    k, n = len(items.languages), items.num_items
    large = k * n * num_layers * width > large_threshold or storage == "memmap"
    scratch = Path(tempfile.mkdtemp(prefix=".sharing-", dir=scratch_dir)) if large and storage != "memory" else None
    pooled = {}
    for site_map in sites:
        directory = None if scratch is None else scratch / site_map.site
        pooled[site_map.site] = PooledVectors.empty(
            items.languages, n, num_layers, width, mode="last", storage=storage, directory=directory,
            threshold=large_threshold, site=site_map.site, meta={"site": site_map.site})
    statistics: list[Any] = list(pooled.values())
    providers: list[Any] = list(sites)
    dead_stat = DeadTokens(items.languages, n, num_layers, threshold, TYPE_SITE) if dead else None
    if dead_stat is not None:
        statistics.append(dead_stat)
    hidden_stat = None
    if final_hidden:
        geometry = model_geometry(model)
        hidden_stat = LastHidden(items.languages, n, geometry.num_layers, geometry.hidden_size)
        providers.append(locate_site(model, "layer.out"))
        statistics.append(hidden_stat)

    def batches():
        for batch in parallel_batches(items.tokenized, batch_size, padding_side):
            info = BatchInfo(languages=batch.languages, sample_ids=batch.item_ids)
            yield Batch(info, batch.input_ids, batch.attention_mask, token_mask=batch.token_mask)

    try:
        run_batches(model, providers, batches(), statistics, progress=progress, desc="sharing")
    except BaseException:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    acts = pooled[TYPE_SITE]
    return SharingRecording(acts, pooled.get(WRITE_SITE, acts), dead_stat, hidden_stat, gated, scratch)


# -- effective-score directions ------------------------------------------------------------------------------
def _module_device(module: nn.Module) -> torch.device:
    for parameter in module.parameters():
        return parameter.device
    return torch.device("cpu")


def final_norm_map(model: nn.Module, hidden: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``(gain float32[R, H], centred)``: the final norm at the rows ``hidden[R, H]`` with frozen scale maps a
    component ``c`` to ``gain * P c`` (``P`` the mean-centring when ``centred``); see the module docstring."""
    geometry = model_geometry(model)
    hidden = hidden.float()
    if geometry.final_norm is None:
        return torch.ones_like(hidden), False
    norm = copy.deepcopy(get_submodule(model, geometry.final_norm)).float().cpu()
    size = hidden.shape[-1]
    with torch.no_grad():
        zero = norm(torch.zeros(1, size))[0]
        gamma = torch.zeros(size)
        for first in (0, 1):  # zero-mean probes of alternating signs; two of them cover an odd width
            u = torch.zeros(size)
            span = torch.arange(first, size)[: (size - first) // 2 * 2]
            if not len(span):
                continue
            u[span] = torch.tensor([1.0, -1.0]).repeat(len(span) // 2)
            scale = 1e3
            image = norm((scale * u).unsqueeze(0))[0] - zero
            rms = u.pow(2).mean().sqrt()
            gamma[span] = (image * rms / u)[span]
        probe = torch.linspace(-1.0, 1.0, size)
        centred = bool(torch.allclose(norm((probe + 5.0).unsqueeze(0)), norm(probe.unsqueeze(0)), atol=1e-4,
                                      rtol=1e-4))
        rows = hidden.cpu()
        out = norm(rows) - zero
        centred_rows = rows - rows.mean(-1, keepdim=True) if centred else rows
        sigma = (gamma * centred_rows).norm(dim=-1) / out.norm(dim=-1).clamp_min(1e-30)
    gain = gamma.unsqueeze(0) / sigma.clamp_min(1e-30).unsqueeze(-1)
    return gain.to(hidden.device), centred


def effective_directions(model: nn.Module, tokens: torch.Tensor, hidden: torch.Tensor | None = None,
                         embedding: str = "output", final_norm: bool = False) -> torch.Tensor:
    """``float32[R, H]``: the direction ``e_r`` of each row's gold token ``tokens[R]`` in the residual stream (see
    the module docstring); with ``final_norm`` the rows' final hidden states ``hidden[R, H]`` are needed."""
    if embedding not in EMBEDDINGS:
        raise LangNeuronsError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}")
    geometry = model_geometry(model)
    module = model.get_output_embeddings() if embedding == "output" else model.get_input_embeddings()
    if module is None or getattr(module, "weight", None) is None:
        raise LangNeuronsError(f"the model has no {embedding} embedding matrix")
    weight = module.weight.detach()
    directions = weight[tokens.to(weight.device)].float()
    if embedding == "output":
        for path in reversed(list(geometry.head_pre)):  # back through OPT's project_out
            pre = get_submodule(model, path)
            if not isinstance(pre, nn.Linear):
                raise LangNeuronsError(f"cannot map the output embedding back through {type(pre).__name__}")
            directions = directions.to(pre.weight.device) @ pre.weight.detach().float()
    if directions.shape[-1] != geometry.hidden_size:
        raise LangNeuronsError(f"the {embedding} embedding has width {directions.shape[-1]}, the residual stream "
                               f"{geometry.hidden_size}")
    if final_norm:
        if hidden is None:
            raise LangNeuronsError("effective scores through the final norm need the final hidden states")
        gain, centred = final_norm_map(model, hidden)
        directions = directions * gain.to(directions.device)
        if centred:
            directions = directions - directions.mean(-1, keepdim=True)
        directions = directions * geometry.logit_multiplier
    return directions


def write_norms(model: nn.Module, num_layers: int) -> torch.Tensor:
    """``float32[L, W]``: ``||v_i||`` of every neuron's write vector (column of ``W_down``)."""
    return torch.stack([write_vectors(model, WRITE_SITE, layer).float().norm(dim=-1).cpu()
                        for layer in range(num_layers)])


def chunk_directions(model: nn.Module, directions: torch.Tensor, num_layers: int) -> torch.Tensor:
    """``float32[R, L, W]``: ``v_i . e`` for every row direction ``directions[R, H]``, layer and neuron."""
    out = []
    for layer in range(num_layers):
        vectors = write_vectors(model, WRITE_SITE, layer)
        out.append((directions.to(vectors.device, torch.float32) @ vectors.float().t()).cpu())
    return torch.stack(out, dim=1)


@torch.inference_mode()
def analyse_recording(model: nn.Module, recording: SharingRecording, items: SharingItems,
                      settings: SharingSettings | None = None, effective: bool = True, embedding: str = "output",
                      final_norm: bool = False, chunk_elements: int = 1 << 24, progress: bool = True
                      ) -> SharingAccumulator:
    """Feed every item to a :class:`SharingAccumulator`; effective scores when ``effective`` and gold tokens."""
    from langneurons.progress import progress_bar

    settings = settings or SharingSettings()
    k, n, layers, width = recording.acts.vectors.shape
    accumulator = SharingAccumulator(items.languages, layers, width, settings)
    norms = write_norms(model, layers)
    effective = effective and items.gold is not None
    if effective and final_norm and recording.hidden is None:
        raise LangNeuronsError("effective scores through the final norm need a recording with final_hidden=True")
    step = max(1, chunk_elements // (k * layers * width))
    with progress_bar("sharing analysis", n, "item", [(n, "items"), (k, "languages")], progress) as bar:
        for start in range(0, n, step):
            _analyse_chunk(model, recording, items, accumulator, norms, effective, embedding, final_norm, start,
                           min(n, start + step))
            bar.update(min(n, start + step) - start)
    return accumulator


def _analyse_chunk(model: nn.Module, recording: SharingRecording, items: SharingItems,
                   accumulator: SharingAccumulator, norms: torch.Tensor, effective: bool, embedding: str,
                   final_norm: bool, start: int, stop: int) -> None:
    """Items ``[start, stop)`` of the recording into ``accumulator``."""
    acts, writes = recording.acts, recording.writes
    k, _, layers, width = acts.vectors.shape
    chunk_acts = acts.vectors[:, start:stop].float().transpose(0, 1)  # [c, K, L, W]
    chunk_writes = writes.vectors[:, start:stop].float().transpose(0, 1)
    directions = None
    if effective:
        tokens = items.gold[:, start:stop].t().reshape(-1)  # rows item-major: [c * K]
        hidden = None
        if final_norm:
            final = recording.hidden.hidden
            hidden = final[:, start:stop].transpose(0, 1).reshape(-1, final.shape[-1])
        e = effective_directions(model, tokens, hidden, embedding, final_norm)
        directions = chunk_directions(model, e, layers).view(stop - start, k, layers, width)
    accumulator.add(chunk_acts, chunk_writes, norms, directions)


def fit_length(model: nn.Module, max_length: int | None, scored: bool) -> int | None:
    """``max_length`` capped at the model's context (minus the answer's first token when a task scores it: the
    scorer cuts prompt + continuation to the context; a choice option longer than one token can make it cut a
    prompt within that many tokens of the context a little more)."""
    from langneurons.evaluation.generation import context_length

    limit = context_length(model)
    if limit is None:
        return max_length
    limit -= 1 if scored else 0
    return limit if max_length is None or max_length > limit else max_length


def sharing_matters(model: Any, parallel: Any = None, task: Any = None, template: Any = None,
                    langs: list[str] | None = None, limit: int | None = None, threshold: float = 0.0,
                    thresholds: Any = None, language_counts: Any = None, top: float = 0.05, normalize: bool = True,
                    embedding: str = "output", final_norm: bool = False, interventions: bool = True,
                    random: bool = True, scope: str = "active", epsilon: float = 1e-3, seed: int = 0,
                    batch_size: int = 16, task_batch_size: int = 8, padding_side: Side = "right",
                    max_length: int | None = 512, add_bos: bool = False, data: Any = None,
                    task_settings: dict[str, Any] | None = None, dead: bool = True, chunk_size: int | None = None,
                    scratch_dir: str | Path | None = None, tokenizer: Any = None, progress: bool = True,
                    plan: Any = None, **load: Any):
    """The whole Sharing Matters analysis: types, contribution and effective scores, interventions by type.

    ``model``: a path / hub id (``load`` goes to :func:`~langneurons.model.loading.as_loaded`) or a loaded model;
    ``parallel``: a parallel corpus (path, ``{lang: lines}`` or :class:`~langneurons.data.parallel.ParallelCorpus`);
    ``task``: ``cloze`` / ``choice`` / ``first_token`` / ``greedy`` built from ``parallel``, a named task
    (``mpararel``, ``cloze`` from ``data``) or a task file, or a :class:`~langneurons.evaluation.tasks.Task`;
    ``plan``: an :class:`~langneurons.analysis.sharing_items.ItemsPlan` made beforehand instead (the CLI checks
    its inputs before loading the model). Returns a :class:`~langneurons.analysis.sharing_result.SharingResult`.
    """
    from langneurons.analysis.sharing import DEFAULT_THRESHOLDS
    from langneurons.analysis.sharing_interventions import TypeEdits, run_interventions
    from langneurons.analysis.sharing_items import plan_items
    from langneurons.analysis.sharing_result import SharingResult
    from langneurons.data.parallel import as_parallel_corpus
    from langneurons.methods.neuron_types import check_threshold
    from langneurons.model.loading import as_loaded

    threshold = check_threshold(threshold)
    settings = SharingSettings(threshold, DEFAULT_THRESHOLDS if thresholds is None else thresholds, language_counts,
                               top, normalize)
    if embedding not in EMBEDDINGS:
        raise LangNeuronsError(f"unknown embedding {embedding!r}; choose one of {', '.join(EMBEDDINGS)}")
    if plan is None:
        corpus = None if parallel is None else as_parallel_corpus(parallel, langs)
        plan = plan_items(corpus, task, template, langs, limit, data, task_settings)
    settings.counts_for(len(plan.languages))  # a bad language count fails before the model loads
    loaded = as_loaded(model, tokenizer, **load)
    max_length = fit_length(loaded.model, max_length, plan.task is not None)
    items = plan.tokenize(loaded.tokenizer, max_length, add_bos)
    scored = items.task is not None
    recording = record_sharing(loaded.model, items, threshold, batch_size, padding_side, dead=dead,
                               final_hidden=scored and final_norm, scratch_dir=scratch_dir, progress=progress)
    try:
        accumulator = analyse_recording(loaded.model, recording, items, settings, scored, embedding, final_norm,
                                        progress=progress)
        skipped: dict[str, str] = {}
        results: dict[str, Any] = {}
        if not scored:
            reason = "needs a gold answer: give a task (--task)"
            skipped.update(effective=reason, deactivation=reason, conversion=reason)
        elif not interventions:
            skipped.update(deactivation="turned off", conversion="turned off")
        else:
            edits = TypeEdits(loaded.model, recording.acts, items, threshold, scope, epsilon, seed)
            results = run_interventions(loaded, edits, random=random, batch_size=task_batch_size,
                                        chunk_size=chunk_size, progress=progress)
    finally:
        recording.close()
    effective_what = (f"E_r = row r of the {embedding} embedding" +
                      (", through the final norm linearised at the row's final hidden state (frozen scale)"
                       if final_norm else ", without the final norm") + "; r = first token of the gold answer")
    from langneurons.sets.compatibility import model_provenance

    meta = {**model_provenance(loaded), "site": TYPE_SITE,
            "write_site": WRITE_SITE if recording.gated else TYPE_SITE,
            "gated": recording.gated, "inputs": items.describe(),
            "parameters": {"threshold": threshold, "thresholds": list(settings.thresholds),
                           "language_counts": accumulator.counts_, "top": top, "normalize": normalize,
                           "embedding": embedding, "final_norm": final_norm, "scope": scope, "epsilon": epsilon,
                           "conversion_value": threshold + epsilon, "positions": "all", "seed": seed,
                           "batch_size": batch_size, "task_batch_size": task_batch_size,
                           "padding_side": padding_side, "max_length": max_length, "add_bos": add_bos},
            "effective_score": effective_what if scored else None}
    if results:
        meta["task"] = next(iter(results.values())).meta.get("task_settings")
    return SharingResult(accumulator, meta, recording.dead, results, skipped)
