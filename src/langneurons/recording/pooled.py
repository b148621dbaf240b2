"""Recording per-sample vectors over a line-aligned parallel corpus."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.data.corpus import load_parallel, padded_batches
from langneurons.model.loading import LoadedModel, as_loaded
from langneurons.recording.recorder import Batch, run_batches
from langneurons.model.sites import locate_site
from langneurons.stats.base import BatchInfo
from langneurons.stats.pooled import PooledVectors
from langneurons.progress import work_line
from langneurons.sets.compatibility import model_provenance


def record_pooled(
    model: nn.Module | LoadedModel | str,
    corpus: str | Path | dict[str, list[str]],
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
) -> PooledVectors:
    """Per-sample pooled vectors ``[language, sample, layer, width]`` at ``site`` over a parallel corpus.

    ``corpus`` is a directory of line-aligned ``{lang}.txt`` files (or ``{lang: lines}``); ``mode`` is
    ``mean``, ``sum`` or ``last`` (last token). Use ``site="layer.out"`` for hidden states (sentence embeddings).
    """
    loaded = as_loaded(model, tokenizer, device=device, dtype=dtype)
    site_map = locate_site(loaded.model, site)
    texts = corpus if isinstance(corpus, dict) else load_parallel(corpus, langs)
    if langs:
        texts = {lang: texts[lang] for lang in langs}
    if max_samples is not None:
        texts = {lang: lines[:max_samples] for lang, lines in texts.items()}
    num_samples = len(next(iter(texts.values())))
    vectors = PooledVectors.empty(list(texts), num_samples, site_map.num_layers, site_map.width, mode=mode,
                                  meta={**model_provenance(loaded), "site": site, "site_info": site_map.describe(),
                                        "corpus": str(corpus) if not isinstance(corpus, dict) else None,
                                        "parameters": {"max_length": max_length, "batch_size": batch_size}})

    def batches():
        for lang, lines in texts.items():
            for input_ids, mask, ids in padded_batches(loaded.tokenizer, lines, batch_size, max_length):
                yield Batch(BatchInfo(lang, sample_ids=ids), input_ids, mask)

    total = 0  # the bar's total: every sentence's tokens after the cut (an empty one counts as one token)
    for lines in texts.values():
        ids = loaded.tokenizer(list(lines), add_special_tokens=False)["input_ids"] if lines else []
        total += sum(max(1, min(len(row), max_length) if max_length else len(row)) for row in ids)
    if progress:
        print(work_line("pool", [(len(texts), "languages"), (num_samples, "sentences")], total, "tokens"),
              file=sys.stderr, flush=True)
    run_batches(loaded.model, site_map, batches(), [vectors], total_tokens=total, progress=progress, desc="pool")
    return vectors
