"""Data-parallel recording with ``torch.distributed``: one process per device, statistics summed across ranks.

Launch any recording under ``torchrun`` (``torchrun --nproc-per-node 4 -m langneurons record ...``; several
nodes with torchrun's usual ``--nnodes``/``--rdzv-*`` flags). :func:`setup` reads the rank from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), opens the process group (gloo on
the CPU, nccl on CUDA) unless one is open already, and picks this rank's device (``cuda:LOCAL_RANK``).
Every rank runs its own batches (see :func:`owns_batch`); :func:`all_reduce_sum` adds the statistics of
all ranks, after which every rank holds the total and rank 0 writes it. :func:`all_gather_objects` and
:func:`broadcast_object` move small Python values (per-batch results, a resumed run's progress) between ranks;
:mod:`langneurons.recording.parallel_run` builds the data-parallel runs of the other commands on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from langneurons.errors import LangNeuronsError


@dataclass
class DistributedContext:
    """Where this process stands in a data-parallel run (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    owns_group: bool = False  # this module opened the process group (and may close it)

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise LangNeuronsError(f"environment variable {name}={value!r} is not an integer") from None


def environment_context() -> DistributedContext:
    """The rank and world size torchrun put in the environment (or of an open process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0),
                                  dist.get_backend(), owns_group=False)
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise LangNeuronsError(f"invalid torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistributedContext(rank, world, _env_int("LOCAL_RANK", 0))


def rank_device(context: DistributedContext, device: str | torch.device | None) -> str | torch.device | None:
    """This rank's device: ``cuda:LOCAL_RANK`` when ``device`` is unset or plain ``cuda`` and CUDA exists."""
    if not context.is_distributed:
        return device
    if (device is None and torch.cuda.is_available()) or str(device) == "cuda":
        return torch.device("cuda", context.local_rank)
    return device


def setup(device: str | torch.device | None = None, distributed: bool | None = None
          ) -> tuple[DistributedContext, str | torch.device | None]:
    """Join the data-parallel run, if any: ``(context, this rank's device)``.

    ``distributed=None`` follows the environment (torchrun); ``False`` ignores it (a single process).
    """
    if distributed is False:
        return DistributedContext(), device
    context = environment_context()
    if not context.is_distributed:
        if distributed:
            raise LangNeuronsError("distributed recording needs torchrun (RANK and WORLD_SIZE are not set)")
        return context, device
    device = rank_device(context, device)
    if context.backend is None:
        import torch.distributed as dist

        cuda = torch.device(device).type == "cuda" if device is not None else False
        if cuda:
            torch.cuda.set_device(torch.device(device))
        context.backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend=context.backend, device_id=torch.device(device) if cuda else None)
        context.owns_group = True
    return context, device


def owns_batch(context: DistributedContext, batch_index: int) -> bool:
    """Batch ``batch_index`` of the run's schedule belongs to this rank (round robin)."""
    return batch_index % context.world_size == context.rank


def all_reduce_sum(context: DistributedContext, tensors: Iterable[torch.Tensor]) -> None:
    """Sum ``tensors`` in place over all ranks (no-op in a single process)."""
    if not context.is_distributed:
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def all_sum(context: DistributedContext, tensor: torch.Tensor, device: torch.device | str | None = None
            ) -> torch.Tensor:
    """A copy of ``tensor`` summed over all ranks (reduced on ``device``: a CUDA device under nccl), on the CPU."""
    moved = tensor.to(device if device is not None else tensor.device, copy=True)
    all_reduce_sum(context, [moved])
    return moved.cpu()


def all_gather_objects(context: DistributedContext, value: Any) -> list[Any]:
    """``[value of rank 0, value of rank 1, ...]`` on every rank (``[value]`` in a single process); picklable values."""
    if not context.is_distributed:
        return [value]
    import torch.distributed as dist

    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def broadcast_object(context: DistributedContext, value: Any, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every rank (the value itself in a single process)."""
    if not context.is_distributed:
        return value
    import torch.distributed as dist

    holder = [value if context.rank == source else None]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def barrier(context: DistributedContext) -> None:
    if context.is_distributed:
        import torch.distributed as dist

        dist.barrier()


def teardown(context: DistributedContext) -> None:
    """Close the process group if :func:`setup` opened it."""
    if context.owns_group:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        context.owns_group = False
