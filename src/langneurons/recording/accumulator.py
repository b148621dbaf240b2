"""The recorder's statistic: per-language activation sums kept on one device, reduced where the activations are.

:class:`StatsAccumulator` is a :class:`~langneurons.stats.base.SiteStatistic` that holds the sums of
:class:`~langneurons.stats.ActivationStats` (positive counts, sums, sums of squares, token counts) as
device tensors and turns them into an ``ActivationStats`` on the CPU at the end. Each layer's
activations ``[batch, seq, width]`` are reduced on their own device (the layer's device under a device
map) to three ``[width]`` vectors; only those travel to the accumulator's device. Activations are
never copied to the host and never kept.

Two reductions, the same result up to float rounding:

* ``blocks`` (CPU default): blocks of 256 rows summed by a matrix-vector product with a ones vector
  in ``reduce_dtype`` (float32: fast, error ~1e-7 of the sum of magnitudes; float64: exact to double
  precision), block sums added in float64 (see :func:`langneurons.stats.activation.column_sums`).
* ``direct`` (CUDA default): one column reduction per quantity with float64 accumulation and an
  integer count, on chunks of rows to bound temporaries; on a GPU this is memory-bound and cheap.
"""

from __future__ import annotations

from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.stats.activation import ActivationStats, reduce_blocks
from langneurons.stats.base import PerLanguageBatches

STRATEGIES = ("blocks", "direct")
#: Rows reduced at once by the ``direct`` strategy (bounds the float32 temporaries).
DIRECT_CHUNK_ROWS = 4096
_STATE = ("positive_count", "activation_sum", "activation_sq_sum", "token_count")


def default_strategy(device: torch.device) -> str:
    """``direct`` on accelerators, ``blocks`` on the CPU."""
    return "blocks" if torch.device(device).type == "cpu" else "direct"


class StatsAccumulator(PerLanguageBatches):
    """Running sums ``[language, layer, neuron]`` on ``device``; feeds from the recorder's hooks.

    Attributes:
        positive_count: ``int64[K, L, I]``; activation_sum, activation_sq_sum: ``float64[K, L, I]``;
        token_count: ``int64[K]`` (all on ``device``).
    """

    def __init__(self, languages: list[str], num_layers: int, width: int, device: str | torch.device = "cpu",
                 reduce_dtype: torch.dtype = torch.float32, strategy: str | None = None) -> None:
        self.languages = list(languages)
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

    # -- SiteStatistic -------------------------------------------------------------------------
    def update(self, layer: int, activations: torch.Tensor) -> None:
        """Reduce ``activations[..., width]`` of ``layer`` on their device into the current language's sums."""
        flat = activations.reshape(-1, activations.shape[-1])
        if self._mask is not None:
            flat = flat[self._mask.to(flat.device)]
        if self.strategy == "blocks":
            positive, total, squares = reduce_blocks(flat, self.reduce_dtype, self._scratch_for(flat))
        else:
            positive, total, squares = _reduce_direct(flat, self.reduce_dtype)
        k = self._current
        self.positive_count[k, layer] += positive.to(self.device, non_blocking=True)
        self.activation_sum[k, layer] += total.to(self.device, non_blocking=True)
        self.activation_sq_sum[k, layer] += squares.to(self.device, non_blocking=True)

    def end_batch(self) -> None:
        self._mask = None

    def _scratch_for(self, flat: torch.Tensor) -> torch.Tensor:
        """A reusable ``[n, width]`` buffer in ``reduce_dtype`` (fresh memory would cost page faults per layer)."""
        shape = (flat.shape[0], flat.shape[1])
        scratch = self._scratch
        if scratch is None or scratch.shape != shape or scratch.device != flat.device:
            scratch = self._scratch = torch.empty(shape, dtype=self.reduce_dtype, device=flat.device)
        return scratch

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


def _reduce_direct(flat: torch.Tensor, reduce_dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """The same with column reductions (int64 counts, float64 accumulation), chunk by chunk of rows."""
    width, device = flat.shape[-1], flat.device
    positive = torch.zeros(width, dtype=torch.int64, device=device)
    total = torch.zeros(width, dtype=torch.float64, device=device)
    squares = torch.zeros(width, dtype=torch.float64, device=device)
    square_dtype = torch.float64 if reduce_dtype == torch.float64 else torch.float32
    for chunk in flat.split(DIRECT_CHUNK_ROWS):
        positive += (chunk > 0).sum(0)
        total += chunk.sum(0, dtype=torch.float64)
        values = chunk.to(square_dtype)  # bf16/fp16 squares are exact in float32
        squares += (values * values).sum(0, dtype=torch.float64)
    return positive, total, squares
