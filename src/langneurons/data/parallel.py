"""Parallel corpora: the same items in several languages, batched with the K translations of an item together.

Two formats, one :class:`ParallelCorpus`:

* a directory of aligned ``{lang}.txt`` files, where line ``i`` is item ``i`` in every language (every line
  counts, blank ones too, since they keep the alignment; unequal line counts are a one-line error naming the
  files and their counts);
* one ``.jsonl`` file, one item per line, with a string field per language (``{"en": ..., "fr": ...}``) and
  optional extra fields (an answer, a label, ...), kept per item in :attr:`ParallelCorpus.fields`.

A line is tokenized *exactly as written*: no special tokens, optionally a BOS in front (which is then left
out of :attr:`ParallelBatch.token_mask`, the positions a statistic counts). An input longer than the window
is cut from the START by default (``keep="end"``: last-token work needs the end), never silently: the count
of cut inputs is in :attr:`TokenizedParallel.cut` and a :class:`~langneurons.errors.LangNeuronsWarning` says
it. :func:`parallel_batches` runs items in item-major order (item 0 in every language, then item 1, ...),
whole items per batch, padded on either side by :func:`langneurons.data.batching.pad_rows`.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import torch

from langneurons.data.batching import Side, last_index, pad_rows, position_ids
from langneurons.data.files import LANGUAGE_TAG, file_sha256, find_corpus_files
from langneurons.errors import LangNeuronsError, LangNeuronsWarning

_TOKENIZE_CHUNK = 512


@dataclass
class ParallelCorpus:
    """Aligned texts ``{language: [text of item 0, item 1, ...]}`` and extra per-item ``fields``."""

    texts_by_language: dict[str, list[str]]
    fields: dict[str, list[Any]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.texts_by_language:
            raise LangNeuronsError("a parallel corpus needs at least one language")
        counts = {lang: len(texts) for lang, texts in self.texts_by_language.items()}
        counts.update({f"field {name!r}": len(values) for name, values in self.fields.items()})
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{name} {n}" for name, n in counts.items())
            raise LangNeuronsError(f"parallel corpus is not aligned: item counts differ ({listing})")

    @property
    def languages(self) -> list[str]:
        return list(self.texts_by_language)

    @property
    def num_items(self) -> int:
        return len(next(iter(self.texts_by_language.values())))

    @property
    def items(self) -> range:
        """The item ids, ``range(num_items)``."""
        return range(self.num_items)

    def __len__(self) -> int:
        return self.num_items

    def texts(self, language: str) -> list[str]:
        """The texts of ``language``, item by item."""
        if language not in self.texts_by_language:
            raise LangNeuronsError(f"parallel corpus has no language {language!r} (has {', '.join(self.languages)})")
        return self.texts_by_language[language]

    def item(self, index: int) -> dict[str, Any]:
        """Item ``index`` as ``{language: text, ..., field: value}``."""
        return {**{lang: texts[index] for lang, texts in self.texts_by_language.items()},
                **{name: values[index] for name, values in self.fields.items()}}

    def select(self, languages: Sequence[str] | None = None, items: Sequence[int] | int | None = None
               ) -> "ParallelCorpus":
        """A corpus of ``languages`` (in that order) and ``items`` (ids, or the first ``items``)."""
        languages = list(languages) if languages else self.languages
        for lang in languages:
            self.texts(lang)  # raises for an unknown language
        if items is None:
            ids = list(self.items)
        elif isinstance(items, int):
            if items < 1:
                raise LangNeuronsError(f"the number of items must be at least 1, got {items}")
            ids = list(range(min(items, self.num_items)))
        else:
            ids = list(items)
        pick = lambda values: [values[i] for i in ids]  # noqa: E731
        return ParallelCorpus({lang: pick(self.texts_by_language[lang]) for lang in languages},
                              {name: pick(values) for name, values in self.fields.items()},
                              {**self.source, "items_selected": len(ids)} if ids != list(self.items) else self.source)

    def provenance(self) -> dict[str, Any]:
        return {**self.source, "languages": self.languages, "items": self.num_items}


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise LangNeuronsError(f"corpus file {str(path)!r} is not valid UTF-8 (byte {exc.start})") from None
    except OSError as exc:
        raise LangNeuronsError(f"cannot read corpus file {str(path)!r}: {exc.strerror}") from None


def _load_txt(directory: Path, langs: list[str] | None) -> ParallelCorpus:
    files = find_corpus_files(directory, langs, kind="parallel corpus")
    texts: dict[str, list[str]] = {}
    for lang, path in files.items():
        if path.suffix != ".txt":
            raise LangNeuronsError(f"parallel corpus files must be .txt, got {path.name} (one .jsonl with a field "
                                   "per language is read when its path is given)")
        texts[lang] = _read_lines(path)
        if not any(line.strip() for line in texts[lang]):
            raise LangNeuronsError(f"corpus file {str(path)!r} is empty")
    counts = {lang: len(lines) for lang, lines in texts.items()}
    if len(set(counts.values())) > 1:
        listing = ", ".join(f"{files[lang].name} {n}" for lang, n in counts.items())
        raise LangNeuronsError(f"parallel corpus {str(directory)!r} is not aligned: line counts differ ({listing})")
    source = {"path": str(directory), "format": "txt",
              "files": {lang: {"file": path.name, "sha256": file_sha256(path)} for lang, path in files.items()}}
    return ParallelCorpus(texts, {}, source)


def _load_jsonl(path: Path, langs: list[str] | None) -> ParallelCorpus:
    records = []
    for number, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise LangNeuronsError(f"{str(path)!r} line {number}: not a JSON object")
        records.append((number, record))
    if not records:
        raise LangNeuronsError(f"corpus file {str(path)!r} is empty")
    first = records[0][1]
    if langs is None:  # string fields named like a language code; pass langs when a field such as "id" is not one
        langs = [key for key, value in first.items() if isinstance(value, str) and LANGUAGE_TAG.fullmatch(key)]
        if not langs:
            raise LangNeuronsError(f"{str(path)!r}: no field looks like a language code ({', '.join(first)}); "
                                   "name the languages with --langs")
    extra = [key for key in dict.fromkeys(k for _, r in records for k in r) if key not in langs]
    texts: dict[str, list[str]] = {lang: [] for lang in langs}
    for number, record in records:
        for lang in langs:
            value = record.get(lang)
            if not isinstance(value, str):
                what = "has no field" if value is None else "has a non-text field"
                raise LangNeuronsError(f"parallel corpus {str(path)!r} is not aligned: line {number} {what} {lang!r}")
            texts[lang].append(value)
    fields = {key: [record.get(key) for _, record in records] for key in extra}
    source = {"path": str(path), "format": "jsonl", "file": path.name, "sha256": file_sha256(path)}
    return ParallelCorpus(texts, fields, source)


def load_parallel_corpus(path: str | Path, langs: list[str] | None = None) -> ParallelCorpus:
    """A parallel corpus from a directory of aligned ``{lang}.txt`` files or one ``.jsonl`` (a field per language).

    Languages come from the file names (``.txt``) or from the string fields named like a language code
    (``.jsonl``) unless ``langs`` names them; other JSONL fields are kept as extra fields.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".jsonl":
            raise LangNeuronsError(f"a parallel corpus is a directory of {{lang}}.txt files or one .jsonl file, "
                                   f"got {str(path)!r}")
        return _load_jsonl(path, langs)
    if not path.is_dir():
        raise LangNeuronsError(f"parallel corpus {str(path)!r} does not exist")
    return _load_txt(path, langs)


def load_parallel(directory: str | Path, langs: list[str] | None = None) -> dict[str, list[str]]:
    """Line-aligned texts ``{lang: lines}`` (line ``i`` is the same text in every language; blank lines count)."""
    return dict(load_parallel_corpus(directory, langs).texts_by_language)


def as_parallel_corpus(corpus: "ParallelCorpus | dict[str, list[str]] | str | Path",
                       langs: list[str] | None = None) -> ParallelCorpus:
    """``corpus`` as a :class:`ParallelCorpus` (a path is loaded; ``{lang: texts}`` is wrapped)."""
    if isinstance(corpus, ParallelCorpus):
        return corpus.select(langs) if langs else corpus
    if isinstance(corpus, dict):
        missing = [lang for lang in langs or [] if lang not in corpus]
        if missing:
            raise LangNeuronsError(f"parallel corpus has no language(s) {', '.join(missing)} (has {', '.join(corpus)})")
        return ParallelCorpus({lang: list(corpus[lang]) for lang in langs or corpus})
    return load_parallel_corpus(corpus, langs)


# -- tokenization and batches -----------------------------------------------------------------------------------
@dataclass
class TokenizedParallel:
    """Token rows ``{language: [ids of item 0, ...]}`` of a parallel corpus, ready to batch.

    ``bos`` says whether every row starts with a BOS (left out of the counted positions); ``cut`` is the
    number of inputs longer than ``max_length`` that were cut (from the start with ``keep="end"``).
    """

    rows: dict[str, list[list[int]]]
    pad_id: int
    bos: bool = False
    cut: int = 0
    max_length: int | None = None
    keep: str = "end"

    @property
    def languages(self) -> list[str]:
        return list(self.rows)

    @property
    def num_items(self) -> int:
        return len(next(iter(self.rows.values())))

    def describe(self) -> dict[str, Any]:
        """What a result's metadata should say about the inputs."""
        return {"max_length": self.max_length, "keep": self.keep, "bos": self.bos, "cut": self.cut,
                "tokens": sum(len(row) for rows in self.rows.values() for row in rows)}


def tokenizer_ids(tokenizer: Any) -> tuple[int | None, int, int]:
    """``(bos, fallback, pad)``: the BOS id (or ``None``), the token an empty text becomes, and the pad id."""
    bos = getattr(tokenizer, "bos_token_id", None)
    fallback = getattr(tokenizer, "eos_token_id", None)
    fallback = bos if fallback is None else fallback
    fallback = 0 if fallback is None else fallback
    pad = getattr(tokenizer, "pad_token_id", None)
    return bos, int(fallback), int(fallback if pad is None else pad)


def tokenize_parallel(corpus: ParallelCorpus, tokenizer: Any, max_length: int | None = None,
                      keep: Literal["end", "start"] = "end", add_bos: bool = False, warn: bool = True
                      ) -> TokenizedParallel:
    """Tokenize every text as written (no special tokens; a BOS first with ``add_bos``).

    An empty text becomes one EOS (so every item exists in every language). Texts longer than
    ``max_length`` (BOS included) keep their last tokens (``keep="end"``, the default: last-token work) or their
    first; how many were cut is counted and, with ``warn``, said in a :class:`LangNeuronsWarning`.
    """
    if keep not in ("end", "start"):
        raise LangNeuronsError(f"keep must be 'end' or 'start', got {keep!r}")
    bos, fallback, pad = tokenizer_ids(tokenizer)
    if add_bos and bos is None:
        raise LangNeuronsError("the tokenizer has no BOS token; run without --bos")
    room = None if max_length is None else max_length - (1 if add_bos else 0)
    if room is not None and room < 1:
        raise LangNeuronsError(f"the maximum length must leave room for one token, got {max_length}")
    rows: dict[str, list[list[int]]] = {}
    cut = 0
    for lang in corpus.languages:
        texts = corpus.texts(lang)
        encoded: list[list[int]] = []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            encoded.extend(tokenizer(texts[start : start + _TOKENIZE_CHUNK], add_special_tokens=False)["input_ids"])
        lang_rows = []
        for ids in encoded:
            ids = list(ids) or [fallback]
            if room is not None and len(ids) > room:
                cut += 1
                ids = ids[-room:] if keep == "end" else ids[:room]
            lang_rows.append(([bos] if add_bos else []) + ids)
        rows[lang] = lang_rows
    if cut and warn:
        side = "start (the end is kept)" if keep == "end" else "end (the start is kept)"
        warnings.warn(f"{cut} of {corpus.num_items * len(rows)} inputs are longer than {max_length} tokens and were "
                      f"cut from the {side}", LangNeuronsWarning, stacklevel=2)
    return TokenizedParallel(rows, pad, bool(add_bos), cut, max_length, keep)


@dataclass
class ParallelBatch:
    """Rows of whole items: ``input_ids`` / ``attention_mask`` ``long[B, T]``, ``token_mask`` ``bool[B, T]`` (the
    positions that count: real tokens without the BOS), ``languages`` and ``item_ids`` ``long[B]`` per row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_mask: torch.Tensor
    languages: list[str]
    item_ids: torch.Tensor

    @property
    def last_index(self) -> torch.Tensor:
        """``long[B]``: the last real token of each row (either padding side)."""
        return last_index(self.attention_mask)


def parallel_batches(tokenized: TokenizedParallel, batch_size: int, padding_side: Side = "right",
                     items: Sequence[int] | None = None) -> Iterator[ParallelBatch]:
    """Batches of whole items in item-major order (item ``i`` in every language, then item ``i + 1``).

    ``batch_size`` counts rows: a batch holds ``max(1, batch_size // K)`` items of ``K`` languages (so at least
    the K translations of one item, even when ``batch_size < K``).
    """
    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    languages = tokenized.languages
    ids = list(range(tokenized.num_items)) if items is None else list(items)
    per_batch = max(1, batch_size // len(languages))
    for start in range(0, len(ids), per_batch):
        chunk = ids[start : start + per_batch]
        rows = [tokenized.rows[lang][i] for i in chunk for lang in languages]
        input_ids, mask = pad_rows(rows, tokenized.pad_id, side=padding_side)
        counted = mask.bool()
        if tokenized.bos:
            counted &= position_ids(mask) != 0  # the BOS is each row's first real token
        yield ParallelBatch(input_ids, mask, counted, [lang for _ in chunk for lang in languages],
                            torch.tensor([i for i in chunk for _ in languages], dtype=torch.long))


def padded_batches(tokenizer: Any, texts: list[str], batch_size: int, max_length: int | None = None,
                   add_bos: bool = False, padding_side: Side = "right", keep: Literal["end", "start"] = "start"
                   ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Padded batches of single texts: ``(input_ids[b, t], attention_mask[b, t], sample_ids[b])``.

    The one-language case of :func:`parallel_batches` (texts as written, a BOS with ``add_bos``, an empty text as
    one EOS); texts longer than ``max_length`` keep their start by default (``keep="end"`` keeps the end) and a
    :class:`LangNeuronsWarning` counts them.
    """
    tokenized = tokenize_parallel(ParallelCorpus({"text": list(texts)}), tokenizer, max_length, keep, add_bos)
    for batch in parallel_batches(tokenized, batch_size, padding_side):
        yield batch.input_ids, batch.attention_mask, batch.item_ids
