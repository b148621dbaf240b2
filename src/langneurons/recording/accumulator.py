"""The recorder's statistic: per-language activation sums kept on one device, reduced where the activations are.

:class:`StatsAccumulator` is a :class:`~langneurons.stats.base.SiteStatistic` that holds the sums of
:class:`~langneurons.stats.ActivationStats` (positive counts, sums, sums of squares, token counts) as
device tensors and turns them into an ``ActivationStats`` on the CPU at the end. Each layer's
activations ``[batch, seq, width]`` are reduced on their own device (the layer's device under a device
map) to three ``[width]`` vectors; only those travel to the accumulator's device. Activations are
never copied to the host and never kept.

The reduction is the one of :class:`~langneurons.stats.ActivationStats` (:mod:`langneurons.stats.reduce`):
``blocks`` on the CPU, ``direct`` on accelerators; a batch may mix languages (rows are grouped by language).
"""

from __future__ import annotations

from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.stats.activation import ActivationStats
from langneurons.stats.reduce import STRATEGIES, LanguageSums, default_strategy, reduce_direct

__all__ = ["DIRECT_CHUNK_ROWS", "STRATEGIES", "StatsAccumulator", "default_strategy"]

#: Rows reduced at once by the ``direct`` strategy (bounds the float32 temporaries).
DIRECT_CHUNK_ROWS = 4096
_STATE = ("positive_count", "activation_sum", "activation_sq_sum", "token_count")
_reduce_direct = reduce_direct  # the 0.1 name


class StatsAccumulator(LanguageSums):
    """Running sums ``[language, layer, neuron]`` on ``device``; feeds from the recorder's hooks.

    Attributes:
        positive_count: ``int64[K, L, I]``; activation_sum, activation_sq_sum: ``float64[K, L, I]``;
        token_count: ``int64[K]`` (all on ``device``); sites: ``(site,)`` when it was given.
    """

    def __init__(self, languages: list[str], num_layers: int, width: int, device: str | torch.device = "cpu",
                 reduce_dtype: torch.dtype = torch.float32, strategy: str | None = None,
                 site: str | None = None) -> None:
        self.languages = list(languages)
        self.sites: tuple[str, ...] = (site,) if site else ()
        self.device = torch.device(device)
        self.reduce_dtype = reduce_dtype
        self.strategy = strategy or default_strategy(self.device)
        if self.strategy not in STRATEGIES:
            raise LangNeuronsError(f"unknown reduction strategy {self.strategy!r}; choose one of {STRATEGIES}")
        shape = (len(self.languages), num_layers, width)
        self.positive_count = torch.zeros(shape, dtype=torch.int64, device=self.device)
        self.activation_sum = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.activation_sq_sum = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self.token_count = torch.zeros(len(self.languages), dtype=torch.int64, device=self.device)
        self._current = 0
        self._mask: torch.Tensor | None = None
        self._scratch: torch.Tensor | None = None

    @property
    def direct_chunk_rows(self) -> int:  # read at every update, so that tests can shrink it
        return DIRECT_CHUNK_ROWS

    # -- state ---------------------------------------------------------------------------------
    def tensors(self) -> list[torch.Tensor]:
        """The four state tensors, in a fixed order (for all-reduce)."""
        return [getattr(self, name) for name in _STATE]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The state on the CPU (exact copies: resuming from it continues bit for bit)."""
        return {name: getattr(self, name).detach().cpu().clone() for name in _STATE}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in _STATE:
            mine = getattr(self, name)
            theirs = state.get(name)
            if theirs is None or theirs.shape != mine.shape or theirs.dtype != mine.dtype:
                got = None if theirs is None else (tuple(theirs.shape), str(theirs.dtype))
                raise LangNeuronsError(f"checkpoint tensor {name} does not fit: expected "
                                       f"{tuple(mine.shape)} {mine.dtype}, got {got}")
            mine.copy_(theirs)

    def to_stats(self, meta: dict[str, Any] | None = None) -> ActivationStats:
        """The sums as :class:`ActivationStats` on the CPU."""
        state = self.state_dict()
        return ActivationStats(self.languages, *(state[name] for name in _STATE), meta=meta)



class AccumulatorGroup:
    """One :class:`StatsAccumulator` per site of a recording, checkpointed and all-reduced together.

    With one site the state is that accumulator's (so checkpoints of one-site recordings are unchanged);
    with several, every tensor name is prefixed by ``{site}/``.
    """

    def __init__(self, accumulators: dict[str, StatsAccumulator]) -> None:
        self.accumulators = dict(accumulators)

    def tensors(self) -> list[torch.Tensor]:
        return [tensor for accumulator in self.accumulators.values() for tensor in accumulator.tensors()]

    def state_dict(self) -> dict[str, torch.Tensor]:
        if len(self.accumulators) == 1:
            return next(iter(self.accumulators.values())).state_dict()
        return {f"{site}/{name}": tensor for site, accumulator in self.accumulators.items()
                for name, tensor in accumulator.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len(self.accumulators) == 1:
            next(iter(self.accumulators.values())).load_state_dict(state)
            return
        for site, accumulator in self.accumulators.items():
            prefix = f"{site}/"
            accumulator.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
