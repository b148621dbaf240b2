"""Recording PLND importance over a per-language corpus: every input scored once, reduced per language.

The corpus is a directory of ``{lang}.txt`` / ``{lang}.jsonl`` files. Each input is one document (a line, or a
``text`` field), tokenized as written (no special tokens; ``add_bos`` puts the BOS first), cut to
``max_length`` tokens from its end (the cut inputs are counted and warned about), or, with
``mode="windows"``, one window of the project's packer (documents joined with EOS, ``max_length`` tokens each).
``lines="a:b"`` takes only lines ``a`` to ``b - 1`` (0-based) of every file, so a training part and a held-out
part of one corpus need no copies. At most ``max_inputs`` inputs per language (the reference code runs 1,000
documents). Inputs are independent items: :func:`importance_batches` makes the batches, the one recorder runs
them (:func:`langneurons.recording.recorder.run_batches`), :class:`~langneurons.methods.plnd.PLNDFeeder` scores
every row, :class:`~langneurons.stats.importance.ImportanceStats` reduces them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

from langneurons.data.batching import pad_rows
from langneurons.data.files import file_sha256, find_corpus_files
from langneurons.data.streaming import iter_documents, iter_windows
from langneurons.errors import LangNeuronsError, LangNeuronsWarning

MODES = ("documents", "windows")


def parse_lines(value: str | None) -> slice | None:
    """``"a:b"`` (0-based, ``b`` exclusive; either side may be empty) as a slice; ``None`` for all lines."""
    if value is None or value == "":
        return None
    start, sep, stop = str(value).partition(":")
    try:
        bounds = (int(start) if start else None, int(stop) if stop else None)
    except ValueError:
        bounds = None
    if not sep or bounds is None or any(b is not None and b < 0 for b in bounds) or (
            None not in bounds and bounds[0] >= bounds[1]):
        raise LangNeuronsError(f"--lines must be START:STOP (0-based, STOP exclusive, START < STOP), got {value!r}")
    return slice(*bounds)


def read_lines(path: Path, lines: slice | None) -> list[str]:
    """The documents of one corpus file (blank lines skipped), from the line range ``lines`` only."""
    if lines is None:
        return list(iter_documents(path))
    if path.suffix == ".jsonl":
        return list(iter_documents(path))[lines]
    raw = path.read_text(encoding="utf-8").splitlines()[lines]
    return [line for line in raw if line.strip()]


def check_corpus(corpus: str | Path, langs: list[str] | None = None, lines: str | slice | None = None) -> None:
    """Raise the one-line error of an empty corpus (or line range) before any model is loaded."""
    span = parse_lines(lines) if not isinstance(lines, slice) else lines
    for path in find_corpus_files(corpus, langs).values():
        if not read_lines(path, span):
            raise LangNeuronsError(f"corpus file {str(path)!r} has no document"
                                   + (f" in lines {lines}" if span is not None else "") + " (an empty corpus)")


@dataclass
class PLNDInputs:
    """Token ids of every input, per language, and how they were made."""

    rows: dict[str, list[list[int]]]
    cut: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        return list(self.rows)


def plnd_inputs(tokenizer: Any, corpus: str | Path, langs: list[str] | None = None, max_inputs: int | None = 1000,
                max_length: int = 512, mode: str = "documents", add_bos: bool = False,
                lines: str | slice | None = None) -> PLNDInputs:
    """The inputs of every language of ``corpus`` (see the module docstring); one-line errors for bad input."""
    if mode not in MODES:
        raise LangNeuronsError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if max_length < 1 or (max_inputs is not None and max_inputs < 1):
        raise LangNeuronsError(f"max_length and max_inputs must be at least 1, got {max_length} and {max_inputs}")
    span = parse_lines(lines) if not isinstance(lines, slice) else lines
    files = find_corpus_files(corpus, langs)
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos and bos is None:
        raise LangNeuronsError("add_bos: the tokenizer has no BOS token")
    rows: dict[str, list[list[int]]] = {}
    cut: dict[str, int] = {}
    for lang, path in files.items():
        documents = read_lines(path, span)
        if not documents:
            raise LangNeuronsError(f"corpus file {str(path)!r} has no document"
                                   + (f" in lines {lines}" if span is not None else "") + " (an empty corpus)")
        room = max_length - (1 if add_bos else 0)
        if room < 1:
            raise LangNeuronsError(f"max_length {max_length} leaves no room after the BOS")
        counter = [0]
        if mode == "windows":
            made = (w.tolist() for w in iter_windows(tokenizer, documents, room, name=f"language {lang!r}"))
        else:
            made = _documents(tokenizer, documents, room, counter)
        chosen = []
        for ids in made:
            if ids:
                chosen.append(([bos] if add_bos else []) + ids)
            if max_inputs is not None and len(chosen) >= max_inputs:
                break
        cut[lang] = counter[0]
        if not chosen:
            raise LangNeuronsError(f"corpus file {str(path)!r} gives no input of at least one token")
        rows[lang] = chosen
    cut_total = sum(cut.values())
    if cut_total:
        total = sum(len(r) for r in rows.values())
        warnings.warn(f"{cut_total} of {total} PLND inputs are longer than {max_length} tokens and were cut to their "
                      "first tokens", LangNeuronsWarning, stacklevel=2)
    provenance = {"path": str(corpus), "mode": mode, "max_inputs": max_inputs, "max_length": max_length,
                  "add_bos": add_bos, "lines": None if span is None else [span.start, span.stop],
                  "files": {lang: {"file": path.name, "sha256": file_sha256(path), "inputs": len(rows[lang]),
                                   "tokens": sum(len(r) for r in rows[lang]), "cut": cut[lang]}
                            for lang, path in files.items()}}
    return PLNDInputs(rows, cut, provenance)


def _documents(tokenizer: Any, documents: list[str], room: int, cut: list[int]) -> Iterator[list[int]]:
    for text in documents:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) > room:
            cut[0] += 1
            ids = ids[:room]
        yield list(ids)


def importance_batches(inputs: PLNDInputs, batch_size: int = 1, pad_id: int = 0, padding_side: str = "right"
                       ) -> Iterator[Any]:
    """Batches of ``batch_size`` inputs of one language each (padded), language after language."""
    from langneurons.recording.recorder import Batch
    from langneurons.stats.base import BatchInfo

    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    for lang, rows in inputs.rows.items():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            ids, mask = pad_rows(chunk, pad_id, padding_side)
            sample_ids = torch.arange(start, start + len(chunk))
            yield Batch(BatchInfo(lang, sample_ids=sample_ids), ids, mask if len(chunk) > 1 else None)


def record_importance(model: Any, corpus: str | Path | PLNDInputs, langs: list[str] | None = None,
                      max_inputs: int | None = 1000, max_length: int = 512, mode: str = "documents",
                      add_bos: bool = False, lines: str | None = None, batch_size: int = 1,
                      structures: tuple[str, ...] | None = None, ffn_score: str = "paper",
                      memory_bytes: int | None = None, compute_dtype: torch.dtype = torch.float32,
                      tokenizer: Any = None, progress: bool = True, **load: Any):
    """PLND importance of every input of ``corpus``, reduced per language (:class:`ImportanceStats`).

    ``model``: a path / hub id (``load`` goes to :func:`langneurons.model.loading.as_loaded`), a model with
    ``tokenizer``, or a :class:`LoadedModel`. ``corpus``: a directory or ready :class:`PLNDInputs`.
    """
    from langneurons.methods.plnd import DEFAULT_MEMORY, STRUCTURES, PLNDFeeder
    from langneurons.model.loading import as_loaded
    from langneurons.recording.recorder import run_batches
    from langneurons.stats.importance import ImportanceStats

    loaded = as_loaded(model, tokenizer, **load)
    inputs = corpus if isinstance(corpus, PLNDInputs) else plnd_inputs(
        loaded.tokenizer, corpus, langs, max_inputs, max_length, mode, add_bos, lines)
    holder: dict[str, ImportanceStats] = {}

    def sink(language: str, sample: int, importance: dict[str, torch.Tensor], tokens: int) -> None:
        holder["stats"].add(language, importance, tokens)

    feeder = PLNDFeeder(loaded.model, sink, tuple(structures or STRUCTURES), ffn_score,
                        memory_bytes or DEFAULT_MEMORY, compute_dtype)
    grids = {s: (feeder.num_layers, w) for s, w in feeder.widths.items()}
    parameters = {"ffn_score": ffn_score, "memory_bytes": memory_bytes or DEFAULT_MEMORY, "batch_size": batch_size,
                  "compute_dtype": str(compute_dtype).replace("torch.", "")}
    from langneurons.sets.compatibility import model_provenance

    meta = {**model_provenance(loaded), "corpus": inputs.provenance, "parameters": parameters,
            "sites": {s: "ffn.down_in" if s == "ffn" else s for s in grids}, "skipped": feeder.skipped,
            "geometry": {k: v for k, v in feeder.geometry.to_dict().items() if k in (
                "num_heads", "num_kv_heads", "head_dim", "positions", "rotary_dim", "qk_norm")}}
    holder["stats"] = ImportanceStats(inputs.languages, grids, meta=meta)
    pad = getattr(loaded.tokenizer, "pad_token_id", None)
    pad = pad if pad is not None else (getattr(loaded.tokenizer, "eos_token_id", None) or 0)
    total = sum(len(r) for rows in inputs.rows.values() for r in rows)
    run_batches(loaded.model, feeder.providers, importance_batches(inputs, batch_size, pad), [feeder],
                total_tokens=total, progress=progress, desc="plnd")
    return holder["stats"]
