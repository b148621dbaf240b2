"""Per-language corpora: finding ``{lang}.txt`` / ``{lang}.jsonl`` files and packing them into windows.

Packing follows the LAPE reference code: every document is tokenized without special tokens, the
documents are joined with the EOS token (when the tokenizer has one), the token stream is cut into
non-overlapping windows of ``seq_len`` and the remainder is dropped; ``max_tokens`` caps a language.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from langneurons.data.files import check_compression, read_text, split_name, text_sha256, text_suffix
from langneurons.errors import LangNeuronsError, LangNeuronsWarning

CORPUS_SUFFIXES = (".txt", ".jsonl")
MAX_DEFAULT_SEQ_LEN = 4096
_TOKENIZE_CHUNK = 512


#: What a language name usually looks like: an ISO 639 code with optional script / region / variant subtags
#: (en, yue, zh-Hans, pt_BR, eng_Latn, zh_hant). Other file names are still read, with a warning.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def find_corpus_files(directory: str | Path, langs: list[str] | None = None,
                      suffixes: tuple[str, ...] = CORPUS_SUFFIXES, kind: str = "corpus") -> dict[str, Path]:
    """``{lang: file}`` for a directory of ``{lang}{suffix}`` files; languages from file names unless ``langs``.

    ``kind`` names the directory in errors (``corpus``, ``prompt``). Discovered names that do not look like
    language codes (:data:`LANGUAGE_TAG`, e.g. a ``refs.txt`` next to the languages) give a warning. Files may be
    compressed (``zh.txt.gz``, ``.xz``, ``.bz2``: :mod:`langneurons.data.files`); a compression that cannot be
    read is an error naming the file, never skipped.
    """
    root = Path(directory)
    if root.is_file():
        raise LangNeuronsError(f"{kind} {str(root)!r} is a file, expected a directory of "
                               + " or ".join(f"{{lang}}{suffix}" for suffix in suffixes) + " files")
    if not root.is_dir():
        raise LangNeuronsError(f"{kind} directory {str(root)!r} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        stem, suffix, _ = split_name(path)
        if path.is_file() and suffix in suffixes and not path.name.startswith("."):
            if stem in found:
                raise LangNeuronsError(f"{kind} directory {str(root)!r} has both {found[stem].name} and "
                                       f"{path.name}")
            found[stem] = path
    if not found:
        names = " or ".join(f"{{lang}}{suffix}" for suffix in suffixes)
        raise LangNeuronsError(f"{kind} directory {str(root)!r} has no {names} files")
    if langs is None:
        odd = [name for name in found if not LANGUAGE_TAG.fullmatch(name)]
        if odd:
            plural = len(odd) > 1
            warnings.warn(f"{kind} directory {str(root)!r}: {', '.join(found[name].name for name in odd)} "
                          f"{'are' if plural else 'is'} read as language{'s' if plural else ''} {', '.join(odd)}, "
                          f"which {'do' if plural else 'does'} not look like a language code; "
                          "choose the languages with --langs", LangNeuronsWarning, stacklevel=2)
        for path in found.values():
            check_compression(path, f"{kind} file")
        return found
    missing = [lang for lang in langs if lang not in found]
    if missing:
        raise LangNeuronsError(
            f"no {kind} file for language(s) {', '.join(missing)} in {str(root)!r} (found: {', '.join(found)})"
        )
    for lang in langs:
        check_compression(found[lang], f"{kind} file")
    return {lang: found[lang] for lang in langs}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of the file's (decompressed) bytes."""
    return text_sha256(path)


def read_documents(path: str | Path) -> list[str]:
    """Documents of one file: non-blank lines of a ``.txt``, the ``text`` field of a ``.jsonl``."""
    path = Path(path)
    lines = read_text(path).splitlines()
    if text_suffix(path) == ".jsonl":
        documents = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise LangNeuronsError(f"{str(path)!r} line {number}: not a JSON object with a 'text' field") from None
            if isinstance(text, str) and text.strip():
                documents.append(text)
    else:
        documents = [line for line in lines if line.strip()]
    if not documents:
        raise LangNeuronsError(f"corpus file {str(path)!r} is empty")
    return documents


def pack_windows(
    tokenizer: Any, documents: list[str], seq_len: int, max_tokens: int | None = None, name: str = "corpus"
) -> torch.Tensor:
    """Token windows ``LongTensor[num_windows, seq_len]`` of ``documents`` joined with EOS.

    Tokenization stops as soon as ``max_tokens`` tokens are available.
    """
    if seq_len < 2:
        raise LangNeuronsError(f"--seq-len must be at least 2, got {seq_len}")
    if max_tokens is not None and max_tokens < seq_len:
        raise LangNeuronsError(f"--max-tokens {max_tokens} is smaller than one window (--seq-len {seq_len})")
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    for start in range(0, len(documents), _TOKENIZE_CHUNK):
        encoded = tokenizer(documents[start : start + _TOKENIZE_CHUNK], add_special_tokens=False)["input_ids"]
        for ids in encoded:
            if stream and eos is not None:
                stream.append(eos)
            stream.extend(ids)
        if max_tokens is not None and len(stream) >= max_tokens:
            break
    usable = len(stream) if max_tokens is None else min(len(stream), max_tokens)
    usable = usable // seq_len * seq_len
    if usable == 0:
        raise LangNeuronsError(f"{name} has {len(stream)} tokens, fewer than one window of --seq-len {seq_len}")
    return torch.tensor(stream[:usable], dtype=torch.long).view(-1, seq_len)


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
    """Read and pack every language of a corpus directory (deterministic)."""
    if max_tokens is not None and max_tokens < seq_len:
        raise LangNeuronsError(f"--max-tokens {max_tokens} is smaller than one window (--seq-len {seq_len})")
    files = find_corpus_files(directory, langs)
    windows: dict[str, torch.Tensor] = {}
    provenance: dict[str, dict[str, Any]] = {}
    for lang, path in files.items():
        documents = read_documents(path)
        windows[lang] = pack_windows(tokenizer, documents, seq_len, max_tokens, name=f"language {lang!r} ({path.name})")
        provenance[lang] = {
            "file": path.name,
            "sha256": file_sha256(path),
            "documents": len(documents),
            "windows": int(windows[lang].shape[0]),
            "tokens": int(windows[lang].numel()),
        }
    return PackedCorpus(windows, provenance, seq_len, max_tokens)


def load_parallel(directory: str | Path, langs: list[str] | None = None) -> dict[str, list[str]]:
    """Line-aligned ``{lang}.txt`` files: ``{lang: lines}``; line ``i`` is the same text in every language.

    Every line counts (blank lines too, since they keep the alignment); unequal line counts are an error.
    """
    files = find_corpus_files(directory, langs)
    texts: dict[str, list[str]] = {}
    for lang, path in files.items():
        if text_suffix(path) != ".txt":
            raise LangNeuronsError(f"parallel corpus files must be .txt, got {path.name}")
        texts[lang] = read_text(path).splitlines()
        if not any(line.strip() for line in texts[lang]):
            raise LangNeuronsError(f"corpus file {str(path)!r} is empty")
    counts = {lang: len(lines) for lang, lines in texts.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{files[lang].name} {n}" for lang, n in counts.items())
        raise LangNeuronsError(f"parallel corpus {str(directory)!r} is not aligned: line counts differ ({listing})")
    return texts


def padded_batches(tokenizer: Any, texts: list[str], batch_size: int, max_length: int | None = None,
                   add_bos: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Right-padded batches of single texts: ``(input_ids[b, t], attention_mask[b, t], sample_ids[b])``.

    Texts are tokenized without special tokens (a BOS is prepended with ``add_bos`` when the tokenizer has
    one) and cut at ``max_length``; an empty text becomes one EOS/BOS token so that every sample exists.
    """
    bos = getattr(tokenizer, "bos_token_id", None) if add_bos else None
    fallback = getattr(tokenizer, "eos_token_id", None) or getattr(tokenizer, "bos_token_id", None) or 0
    pad = getattr(tokenizer, "pad_token_id", None)
    pad = fallback if pad is None else pad
    from langneurons.data.batching import pad_rows

    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        encoded = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        rows = []
        for ids in encoded:
            ids = ([bos] if bos is not None else []) + list(ids)
            ids = ids[:max_length] if max_length else ids
            rows.append(ids or [fallback])
        input_ids, mask = pad_rows(rows, pad, side="right")
        yield input_ids, mask, torch.arange(start, start + len(rows))
