"""The record stage: one streaming pass over a corpus that feeds statistics (schedule, accumulator,
checkpoints, data-parallel ranks, per-sample pooled vectors)."""
