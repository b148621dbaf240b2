"""The one reducer of per-language activation sums (used by ActivationStats and the recorder's StatsAccumulator).

:class:`LanguageSums` reduces one layer's activations into ``positive_count`` (tokens with activation > 0,
int64), ``activation_sum`` and ``activation_sq_sum`` (float64), ``[language, layer, neuron]``, per language
group of the batch's rows (a batch may mix languages). Two reductions, the same result up to float rounding:

* ``blocks`` (CPU default): blocks of 256 rows summed by a matrix-vector product with a ones vector in
  ``reduce_dtype`` (float32: fast, error ~1e-7 of the sum of magnitudes; float64: exact to double
  precision), block sums added in float64 (see :func:`column_sums`).
* ``direct`` (CUDA default): one column reduction per quantity with float64 accumulation and an integer
  count, on chunks of rows to bound temporaries; on a GPU this is memory-bound and cheap.
"""

from __future__ import annotations

import torch

from langneurons.errors import LangNeuronsError
from langneurons.stats.base import PerLanguageBatches

STRATEGIES = ("blocks", "direct")
#: Rows summed per block in float32 before the float64 accumulation (see :func:`column_sums`).
REDUCE_CHUNK = 256
#: Rows reduced at once by the ``direct`` strategy (bounds the float32 temporaries).
DIRECT_CHUNK_ROWS = 4096


def default_strategy(device: torch.device | str) -> str:
    """``direct`` on accelerators, ``blocks`` on the CPU."""
    return "blocks" if torch.device(device).type == "cpu" else "direct"


def column_sums(values: torch.Tensor, chunk: int = REDUCE_CHUNK) -> torch.Tensor:
    """``float64[width]`` sums over the rows of ``values[n, width]``.

    Each block of ``chunk`` rows is summed by a matrix-vector product with a ones vector (on CPU far
    faster than a reduction over the leading dimension) in ``values.dtype``; block sums are added in
    float64. For float32 the relative error stays near 1e-7 of the sum of magnitudes; counts of 0/1
    values are exact.
    """
    width = values.shape[-1]
    ones = torch.ones(1, min(chunk, values.shape[0]), dtype=values.dtype, device=values.device)
    blocks = [ones[:, : block.shape[0]] @ block for block in values.split(chunk)]
    if not blocks:
        return torch.zeros(width, dtype=torch.float64, device=values.device)
    return torch.cat(blocks).to(torch.float64).sum(0)


def reduce_blocks(flat: torch.Tensor, reduce_dtype: torch.dtype, scratch: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Counts of values > 0 (``int64[width]``), sums and sums of squares (``float64[width]``) over the rows of
    ``flat[n, width]``, by block GEMVs in ``reduce_dtype`` (see :func:`column_sums`)."""
    values = flat.to(reduce_dtype)
    if scratch is None:
        scratch = torch.empty_like(values)
    torch.gt(values, 0, out=scratch)  # 1.0 where the neuron is active
    positive = column_sums(scratch).round().long()
    total = column_sums(values)
    torch.mul(values, values, out=scratch)
    return positive, total, column_sums(scratch)


def reduce_direct(flat: torch.Tensor, reduce_dtype: torch.dtype, chunk_rows: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The same with column reductions (int64 counts, float64 accumulation), chunk by chunk of rows."""
    width, device = flat.shape[-1], flat.device
    positive = torch.zeros(width, dtype=torch.int64, device=device)
    total = torch.zeros(width, dtype=torch.float64, device=device)
    squares = torch.zeros(width, dtype=torch.float64, device=device)
    square_dtype = torch.float64 if reduce_dtype == torch.float64 else torch.float32
    for chunk in flat.split(chunk_rows or DIRECT_CHUNK_ROWS):
        positive += (chunk > 0).sum(0)
        total += chunk.sum(0, dtype=torch.float64)
        values = chunk.to(square_dtype)  # bf16/fp16 squares are exact in float32
        squares += (values * values).sum(0, dtype=torch.float64)
    return positive, total, squares


class LanguageSums(PerLanguageBatches):
    """``update`` of per-language sums (the one reducer); the class provides the tensors.

    Needs ``positive_count``, ``activation_sum``, ``activation_sq_sum`` (``[K, L, I]`` on one device),
    ``reduce_dtype`` and ``strategy``; ``direct_chunk_rows`` (``None``: :data:`DIRECT_CHUNK_ROWS`) bounds the
    direct reduction's temporaries.
    """

    positive_count: torch.Tensor
    activation_sum: torch.Tensor
    activation_sq_sum: torch.Tensor
    reduce_dtype: torch.dtype
    strategy: str
    direct_chunk_rows: int | None = None
    _scratch: torch.Tensor | None = None

    def update(self, layer: int, activations: torch.Tensor, site: str | None = None) -> None:
        """Reduce ``activations[batch, seq, width]`` of ``layer`` on their device into each row's language."""
        device = self.positive_count.device
        for k, flat in self.group_rows(activations):
            if self.strategy == "blocks":
                positive, total, squares = reduce_blocks(flat, self.reduce_dtype, self._scratch_for(flat))
            elif self.strategy == "direct":
                positive, total, squares = reduce_direct(flat, self.reduce_dtype, self.direct_chunk_rows)
            else:
                raise LangNeuronsError(f"unknown reduction strategy {self.strategy!r}; choose one of {STRATEGIES}")
            self.positive_count[k, layer] += positive.to(device, non_blocking=True)
            self.activation_sum[k, layer] += total.to(device, non_blocking=True)
            self.activation_sq_sum[k, layer] += squares.to(device, non_blocking=True)

    def _scratch_for(self, flat: torch.Tensor) -> torch.Tensor:
        """A reusable ``[n, width]`` buffer in ``reduce_dtype`` (fresh memory would cost page faults per layer)."""
        shape = (flat.shape[0], flat.shape[1])
        scratch = self._scratch
        if scratch is None or scratch.shape != shape or scratch.device != flat.device:
            scratch = self._scratch = torch.empty(shape, dtype=self.reduce_dtype, device=flat.device)
        return scratch
