"""Data-parallel, resumable runs of any command: split the units of work by rank, gather the results in order.

A command's work is a sequence of *units* (batches of windows, of prompts, of task rows; one index each).
:meth:`ParallelRun.map` runs unit ``i`` on rank ``(start + i) % world_size``, gathers every unit's result on
every rank and returns them in index order, so whatever is computed from them (a sum in index order, a list
of outputs) is the same for any number of ranks: exactly, when each unit computes what a single process
computes for it (the same batch). With a :class:`~langneurons.recording.progress.ProgressStore` the results
are flushed to disk every ``every`` units per rank and at the end of each ``map``; a resumed run (any number
of ranks) takes the finished units from there. :meth:`ParallelRun.cached` serves a whole computation (the
``normal`` condition) from a :class:`~langneurons.recording.progress.ResultCache` keyed by its fingerprint.

    run = ParallelRun.from_environment()              # torchrun: this rank; else a single process
    with use_run(run), run.scope(f"ppl/{condition}/{lang}"):
        parts = run.map(len(batches), lambda i: score(batches[i]), start=first_batch)   # [(nll, tokens), ...]
    meta.update(run.report())                         # world_size, rank_items / rank_tokens (collective)

Library functions call :func:`current_run` (the run opened by :func:`use_run`, else one from the
environment), so a command opens one run and every evaluation inside it is data parallel and resumable.
Every rank must make the same calls in the same order (``map``, ``cached``, ``report`` are collective).
"""

from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.recording import distributed
from langneurons.recording.distributed import DistributedContext
from langneurons.recording.progress import ProgressStore, ResultCache, Results

T = TypeVar("T")
_ACTIVE: ContextVar["ParallelRun | None"] = ContextVar("langneurons_parallel_run", default=None)


class ParallelRun:
    """One command's share of a data-parallel run (a single process when ``context`` is not distributed)."""

    def __init__(self, context: DistributedContext | None = None, cache: ResultCache | None = None) -> None:
        self.context = context or DistributedContext()
        self.cache = cache
        self.store: ProgressStore | None = None
        self.every: int | None = None
        self.done: Results = {}
        self.items = self.tokens = 0  # what this rank ran
        self.resumed = self.cache_hits = 0
        self._scopes: list[str] = []
        self._counters: dict[str, int] = {}

    @classmethod
    def from_environment(cls, device: str | torch.device | None = None, cache: ResultCache | None = None
                         ) -> "ParallelRun":
        """The run torchrun's environment describes (joining its process group), else a single process."""
        context, _ = distributed.setup(device, None)
        return cls(context, cache)

    # -- where this rank stands ---------------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.context.rank

    @property
    def world_size(self) -> int:
        return self.context.world_size

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    def owner(self, index: int, start: int = 0) -> int:
        """The rank that runs unit ``index`` of a :meth:`map` starting at global index ``start``."""
        return (start + index) % self.world_size

    def owns(self, index: int, start: int = 0) -> bool:
        return self.owner(index, start) == self.rank

    # -- collective helpers -------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.context.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all ranks (a new tensor on the input's device; itself in a single process)."""
        if not self.context.is_distributed:
            return tensor
        moved = tensor.to(self._device(), copy=True)
        distributed.all_reduce_sum(self.context, [moved])
        return moved.to(tensor.device)

    def on_main(self, fn: Callable[[], T]) -> T:
        """``fn()`` run on rank 0 and its value (or its :class:`LangNeuronsError`) given to every rank."""
        outcome: tuple[str, Any] | None = None
        if self.is_main:
            try:
                outcome = ("ok", fn())
            except LangNeuronsError as exc:
                outcome = ("error", str(exc))
        outcome = distributed.broadcast_object(self.context, outcome)
        if outcome[0] == "error":
            raise LangNeuronsError(outcome[1])
        return outcome[1]

    def barrier(self) -> None:
        distributed.barrier(self.context)

    # -- progress on disk ---------------------------------------------------------------------------
    def checkpoint(self, directory: str | Path, fingerprint: dict[str, Any], every: int | None = None,
                   resume: bool = False) -> Results:
        """Keep the finished units in a :class:`ProgressStore` (rank 0 writes it); with ``resume`` take the
        earlier run's. ``every``: flush after this many units per rank (and at the end of every map)."""
        if every is not None and every < 1:
            raise LangNeuronsError(f"--checkpoint-every must be at least 1, got {every}")
        self.store = ProgressStore(directory, fingerprint)
        self.every = every
        self.done = self.on_main(lambda: self.store.open(resume))
        if resume and self.is_main and not self.done:
            import sys

            print(f"no checkpoint in {str(directory)!r}; starting from the beginning", file=sys.stderr)
        return self.done

    def finish(self) -> None:
        """The result is written: remove the checkpoints (collective)."""
        self.barrier()
        if self.store is not None and self.is_main:
            self.store.clear()

    # -- the work -----------------------------------------------------------------------------------
    @contextmanager
    def scope(self, name: str) -> Iterator["ParallelRun"]:
        """Name the maps inside (``scope/#k``), so that their checkpointed results find them on resume."""
        self._scopes.append(str(name))
        try:
            yield self
        finally:
            self._scopes.pop()

    def _name(self, name: str | None) -> str:
        path = "/".join(self._scopes)
        if name is not None:
            return f"{path}/{name}" if path else name
        number = self._counters.get(path, 0)
        self._counters[path] = number + 1
        return f"{path}/#{number}" if path else f"#{number}"

    def map(self, count: int, fn: Callable[[int], T], start: int = 0, sizes: Sequence[int] | None = None,
            name: str | None = None) -> list[T]:
        """``[fn(0), ..., fn(count - 1)]``, unit ``i`` computed on rank ``(start + i) % world_size`` (collective).

        Units finished by an earlier run (checkpoints) are not run again. ``sizes[i]`` is what unit ``i``
        counts in :meth:`report`'s ``rank_items`` (default 1). Results must be picklable (and, with
        checkpoints, plain values: numbers, strings, lists, tuples, dicts, tensors).
        """
        key = self._name(name)
        results: dict[int, T] = dict(self.done.get(key, {}))
        self.resumed += sum(1 for i in results if 0 <= i < count)
        block = count if self.store is None or not self.every else self.every * self.world_size
        for low in range(0, max(count, 1), max(block, 1)):
            mine: dict[int, T] = {}
            for index in range(low, min(count, low + block)):
                if index not in results and self.owns(index, start):
                    mine[index] = fn(index)
                    self.items += 1 if sizes is None else int(sizes[index])
            fresh: dict[int, T] = {}
            for part in distributed.all_gather_objects(self.context, mine):
                fresh.update(part)
            results.update(fresh)
            if self.store is not None and self.is_main and fresh:
                self.store.append({key: fresh})
                self.done.setdefault(key, {}).update(fresh)
        missing = [i for i in range(count) if i not in results]
        if missing:
            raise LangNeuronsError(f"units {missing[:5]} of {key!r} were run by no rank")
        return [results[i] for i in range(count)]

    def add_tokens(self, count: int) -> None:
        """Count ``count`` tokens run by this rank (reported as ``rank_tokens``)."""
        self.tokens += int(count)

    def cached(self, key: dict[str, Any] | None, compute: Callable[[], T]) -> T:
        """``compute()``, or its value from the cache when ``key`` (a fingerprint) is there (collective)."""
        if key is None or self.cache is None:
            return compute()
        found, value = self.on_main(lambda: self.cache.get(key))
        if found:
            self.cache_hits += 1
            return value
        value = compute()
        if self.is_main:
            try:
                self.cache.put(key, value)
            except OSError as exc:
                warnings.warn(f"cannot cache the normal condition in {str(self.cache.directory)!r}: "
                              f"{exc.strerror or exc}", LangNeuronsWarning, stacklevel=2)
        return value

    def report(self) -> dict[str, Any]:
        """What each rank ran, for the output's ``meta.json`` (collective): ``world_size``, ``rank_items``,
        ``rank_tokens`` (when tokens were counted), ``resumed_units`` / ``cached_results`` (when non-zero)."""
        counts = torch.zeros(self.world_size, 2, dtype=torch.int64)
        counts[self.rank] = torch.tensor([self.items, self.tokens])
        counts = self.all_sum(counts)
        report: dict[str, Any] = {"world_size": self.world_size, "rank_items": counts[:, 0].tolist()}
        if int(counts[:, 1].sum()):
            report["rank_tokens"] = counts[:, 1].tolist()
        if self.resumed:
            report["resumed_units"] = self.resumed
        if self.cache_hits:
            report["cached_results"] = self.cache_hits
        return report


def current_run() -> ParallelRun:
    """The run opened by :func:`use_run`, else the run of torchrun's environment (a single process outside it)."""
    run = _ACTIVE.get()
    return run if run is not None else ParallelRun.from_environment()


@contextmanager
def use_run(run: ParallelRun) -> Iterator[ParallelRun]:
    """Make ``run`` the one :func:`current_run` returns inside the block."""
    token = _ACTIVE.set(run)
    try:
        yield run
    finally:
        _ACTIVE.reset(token)


@contextmanager
def active_run() -> Iterator[ParallelRun]:
    """The current run, made active for the block when it was not (so that nested calls share it)."""
    run = _ACTIVE.get()
    if run is not None:
        yield run
        return
    with use_run(ParallelRun.from_environment()) as run:
        yield run


def model_key(model: torch.nn.Module) -> dict[str, Any]:
    """A cheap fingerprint of a model's computation for cache keys: class, attention implementation, dtype,
    device type and a hash of every parameter's name, shape and 64 evenly spaced values."""
    hasher = hashlib.sha256()
    dtype = None
    for name, parameter in model.named_parameters():
        dtype = dtype or str(parameter.dtype).replace("torch.", "")
        hasher.update(f"{name}:{tuple(parameter.shape)}:{parameter.dtype};".encode())
        if parameter.device.type == "meta" or parameter.numel() == 0:
            continue
        flat = parameter.detach().reshape(-1)
        positions = torch.linspace(0, flat.numel() - 1, min(64, flat.numel())).round().long().to(flat.device)
        hasher.update(flat[positions].float().cpu().numpy().tobytes())
    config = getattr(model, "config", None)
    device = next((p.device.type for p in model.parameters()), "cpu")
    return {"class": type(model).__name__, "model_type": getattr(config, "model_type", None),
            "attention": getattr(config, "_attn_implementation", None), "dtype": dtype, "device": device,
            "weights": hasher.hexdigest()}
