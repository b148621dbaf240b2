"""Streaming corpora: token windows made while the files are read, so memory does not grow with the corpus.

This is the one packer: :func:`langneurons.data.corpus.load_corpus` is a view over it (every window
stacked). A :class:`StreamingCorpus` makes the windows (tokenization in chunks of documents, EOS joining,
the ``max_tokens`` cap, the dropped remainder) one at a time, holding only one chunk of documents. A first
pass (:func:`scan_file`) checks and hashes every file line by line before any model time is spent, so a
broken file is reported at once and nothing is half-written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from langneurons.data.files import decode, find_corpus_files, raw_lines, text_suffix
from langneurons.errors import LangNeuronsError

#: Documents tokenized per call (the tokenization of a document does not depend on its chunk).
TOKENIZE_CHUNK = 512


def _lines(path: Path, hasher: Any = None) -> Iterator[str]:
    """Lines of a UTF-8 file as ``str.splitlines`` of the whole text gives them, read line by line."""
    for raw, offset in raw_lines(path, hasher=hasher):  # plain, .gz, .xz or .bz2 (langneurons.data.files)
        yield from decode(raw, offset, path).splitlines()


def iter_documents(path: str | Path, hasher: Any = None) -> Iterator[str]:
    """Documents of one file, streamed: non-blank lines of a ``.txt``, the ``text`` field of a ``.jsonl``.

    Same documents and errors as :func:`langneurons.data.corpus.read_documents`, except that an empty file is
    only noticed by the caller (see :func:`scan_file`).
    """
    path = Path(path)
    if text_suffix(path) != ".jsonl":
        yield from (line for line in _lines(path, hasher) if line.strip())
        return
    for number, line in enumerate(_lines(path, hasher), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LangNeuronsError(f"{str(path)!r} line {number}: not a JSON object with a 'text' field") from None
        if isinstance(text, str) and text.strip():
            yield text


@dataclass
class CorpusFile:
    """One language's file: its checksum and document count (from :func:`scan_file`)."""

    language: str
    path: Path
    sha256: str
    documents: int
    windows: int | None = None  # known once the file has been streamed to the end
    tokens: int | None = None

    def provenance(self) -> dict[str, Any]:
        return {"file": self.path.name, "sha256": self.sha256, "documents": self.documents,
                "windows": self.windows, "tokens": self.tokens}


def scan_file(language: str, path: str | Path) -> CorpusFile:
    """Read ``path`` once, line by line: check it (UTF-8, JSON lines, not empty), hash it, count documents."""
    hasher = hashlib.sha256()
    documents = sum(1 for _ in iter_documents(path, hasher))
    if documents == 0:
        raise LangNeuronsError(f"corpus file {str(path)!r} is empty")
    return CorpusFile(language, Path(path), hasher.hexdigest(), documents)


def iter_windows(tokenizer: Any, documents: Iterable[str], seq_len: int, max_tokens: int | None = None,
                 name: str = "corpus") -> Iterator[torch.Tensor]:
    """Windows ``long[seq_len]`` of ``documents`` joined with EOS, one by one (as :func:`pack_windows`).

    Documents are tokenized in chunks without special tokens; at most ``max_tokens // seq_len`` windows
    are made and the remainder is dropped. Raises when not even one window can be made.
    """
    if seq_len < 2:
        raise LangNeuronsError(f"--seq-len must be at least 2, got {seq_len}")
    if max_tokens is not None and max_tokens < seq_len:
        raise LangNeuronsError(f"--max-tokens {max_tokens} is smaller than one window (--seq-len {seq_len})")
    eos = getattr(tokenizer, "eos_token_id", None)
    limit = None if max_tokens is None else max_tokens // seq_len
    pending: list[int] = []  # tokens not yet in a window
    seen = made = 0
    for chunk in _chunks(documents, TOKENIZE_CHUNK):
        for ids in tokenizer(chunk, add_special_tokens=False)["input_ids"]:
            if seen and eos is not None:
                pending.append(eos)
                seen += 1
            pending.extend(ids)
            seen += len(ids)
        full = len(pending) // seq_len
        if limit is not None:
            full = min(full, limit - made)
        if full:
            block = torch.tensor(pending[: full * seq_len], dtype=torch.long).view(full, seq_len)
            del pending[: full * seq_len]
            made += full
            yield from block
        if limit is not None and made >= limit:
            return
    if made == 0:
        raise LangNeuronsError(f"{name} has {seen} tokens, fewer than one window of --seq-len {seq_len}")


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class StreamingCorpus:
    """The languages of a corpus directory, each a stream of windows ``long[seq_len]``."""

    directory: Path
    tokenizer: Any
    seq_len: int
    max_tokens: int | None
    files: dict[str, CorpusFile] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.files)

    def windows(self, language: str) -> Iterator[torch.Tensor]:
        """The windows of ``language`` in corpus order; counts them into the file's provenance."""
        entry = self.files[language]
        count = 0
        for window in iter_windows(self.tokenizer, iter_documents(entry.path), self.seq_len, self.max_tokens,
                                   name=f"language {language!r} ({entry.path.name})"):
            count += 1
            yield window
        entry.windows, entry.tokens = count, count * self.seq_len

    def provenance(self) -> dict[str, Any]:
        """As :meth:`PackedCorpus.provenance` (window and token counts once a language was streamed)."""
        return {"seq_len": self.seq_len, "max_tokens": self.max_tokens,
                "files": {lang: entry.provenance() for lang, entry in self.files.items()}}


def open_corpus(directory: str | Path, tokenizer: Any, seq_len: int, langs: list[str] | None = None,
                max_tokens: int | None = None) -> StreamingCorpus:
    """Find, check and hash the files of a corpus directory; windows are made later, on demand."""
    if seq_len < 2:
        raise LangNeuronsError(f"--seq-len must be at least 2, got {seq_len}")
    if max_tokens is not None and max_tokens < seq_len:
        raise LangNeuronsError(f"--max-tokens {max_tokens} is smaller than one window (--seq-len {seq_len})")
    files = {lang: scan_file(lang, path) for lang, path in find_corpus_files(directory, langs).items()}
    return StreamingCorpus(Path(directory), tokenizer, seq_len, max_tokens, files)
