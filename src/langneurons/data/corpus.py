"""Per-language corpora held in memory: a view over the one packer, :mod:`langneurons.data.streaming`.

Packing follows the LAPE reference code: every document is tokenized without special tokens, the
documents are joined with the EOS token (when the tokenizer has one), the token stream is cut into
non-overlapping windows of ``seq_len`` and the remainder is dropped; ``max_tokens`` caps a language.
:func:`load_corpus` is :func:`langneurons.data.streaming.open_corpus` with every window stacked, so the
in-memory and the streamed windows are the same, bit for bit (there is only one packer).

Parallel corpora (aligned lines across languages) live in :mod:`langneurons.data.parallel`;
``load_parallel`` and ``padded_batches`` are still importable from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from langneurons.data.files import CORPUS_SUFFIXES, LANGUAGE_TAG, file_sha256, find_corpus_files
from langneurons.data.streaming import iter_documents, iter_windows, open_corpus
from langneurons.errors import LangNeuronsError

__all__ = ["CORPUS_SUFFIXES", "LANGUAGE_TAG", "MAX_DEFAULT_SEQ_LEN", "PackedCorpus", "default_seq_len",
           "file_sha256", "find_corpus_files", "load_corpus", "load_parallel", "pack_windows", "padded_batches",
           "read_documents"]

MAX_DEFAULT_SEQ_LEN = 4096


def read_documents(path: str | Path) -> list[str]:
    """Documents of one file: non-blank lines of a ``.txt``, the ``text`` field of a ``.jsonl``."""
    documents = list(iter_documents(path))
    if not documents:
        raise LangNeuronsError(f"corpus file {str(path)!r} is empty")
    return documents


def pack_windows(
    tokenizer: Any, documents: list[str], seq_len: int, max_tokens: int | None = None, name: str = "corpus"
) -> torch.Tensor:
    """Token windows ``LongTensor[num_windows, seq_len]`` of ``documents`` joined with EOS.

    The windows of :func:`langneurons.data.streaming.iter_windows`, stacked; tokenization stops as soon as
    ``max_tokens`` tokens are available.
    """
    return torch.stack(list(iter_windows(tokenizer, documents, seq_len, max_tokens, name=name)))


def default_seq_len(model: Any) -> int:
    """The model's context length, capped at 4096."""
    config = getattr(model, "config", None)
    for attribute in ("max_position_embeddings", "n_positions", "seq_length", "max_sequence_length"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return min(value, MAX_DEFAULT_SEQ_LEN)
    return 2048


@dataclass
class PackedCorpus:
    """Token windows per language and the provenance of each file."""

    windows: dict[str, torch.Tensor]
    files: dict[str, dict[str, Any]]
    seq_len: int
    max_tokens: int | None

    @property
    def languages(self) -> list[str]:
        return list(self.windows)

    def provenance(self) -> dict[str, Any]:
        return {"seq_len": self.seq_len, "max_tokens": self.max_tokens, "files": self.files}


def load_corpus(
    directory: str | Path,
    tokenizer: Any,
    seq_len: int,
    langs: list[str] | None = None,
    max_tokens: int | None = None,
) -> PackedCorpus:
    """Read and pack every language of a corpus directory (deterministic): the streamed windows, stacked."""
    corpus = open_corpus(directory, tokenizer, seq_len, langs, max_tokens)
    windows = {lang: torch.stack(list(corpus.windows(lang))) for lang in corpus.languages}
    return PackedCorpus(windows, corpus.provenance()["files"], seq_len, max_tokens)


def __getattr__(name: str) -> Any:
    """``load_parallel`` / ``padded_batches`` moved to :mod:`langneurons.data.parallel` (resolved lazily)."""
    if name in ("load_parallel", "padded_batches"):
        from langneurons.data import parallel

        return getattr(parallel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
