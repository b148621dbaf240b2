"""The one output style: a folder of tables, arrays, figures and raw records with one ``meta.json`` sidecar.

Every table, figure and result file a command writes goes through :class:`Output`::

    OUT/
      meta.json   {"kind", "schema_version", "created", "environment", "title", "headline" (optional),
                   "tables":  [{"file": "x.csv", "title", "rows", "columns"}],
                   "arrays":  [{"file": "x.npy", "title", "dtype", "shape", "rows", "columns", "sha256"}],
                   "figures": [{"file": "x.png", "title"}],
                   "raw":     [{"file": "x.jsonl", "title", "count"}],
                   "summary": {...headline numbers...},
                   ...provenance: model, revision, model_type, dtype, site, corpus (files with SHA-256),
                      token counts, parameters, and whatever the kind adds}
      *.csv       header row, then one row per named row
      *.npy       large arrays (float32 unless said), dtype and shape in meta.json
      *.png       figures
      *.jsonl     raw records, one JSON object per line (UTF-8)

written atomically (:func:`~langneurons.sets.artefacts.atomic_directory`: staging folder, umask modes,
rename). Kinds are registered where they are defined (:func:`register_kind`), so a new module declares its
kind next to its writer; the report finds every folder by its ``meta.json`` and renders unknown kinds from
this sidecar alone.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError
from langneurons.sets.artefacts import (
    atomic_directory,
    check_schema,
    read_meta,
    sha256_file,
    sidecar,
    write_json,
)

#: sidecar keys the writer sets; provenance copied from another artefact's meta never overrides them
HEAD_KEYS = ("kind", "schema_version", "created", "environment", "tensors_sha256", "title", "headline", "tables",
             "arrays", "figures", "raw", "summary")


# -- the kind registry ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KindSpec:
    """A registered output kind: its name, the schema version written now, what it holds."""

    kind: str
    schema_version: int = 1
    description: str = ""


_KINDS: dict[str, KindSpec] = {}


def register_kind(kind: str, schema_version: int = 1, description: str = "") -> str:
    """Declare an output kind (call it where the kind's writer is defined); returns ``kind``."""
    if not kind or not isinstance(kind, str):
        raise ValueError("an output kind needs a name")
    _KINDS[kind] = KindSpec(kind, int(schema_version), description)
    return kind


def kind_spec(kind: str) -> KindSpec:
    if kind not in _KINDS:
        raise ValueError(f"unknown output kind {kind!r}; declare it with register_kind({kind!r})")
    return _KINDS[kind]


def registered_kinds() -> list[str]:
    return sorted(_KINDS)


class KindsView:
    """The registered kinds, live (``"ses" in KINDS``, ``list(KINDS)``): the registry is open, not a tuple."""

    def __contains__(self, kind: object) -> bool:
        return kind in _KINDS

    def __iter__(self) -> Iterator[str]:
        return iter(registered_kinds())

    def __len__(self) -> int:
        return len(_KINDS)

    def __repr__(self) -> str:
        return f"KindsView({registered_kinds()})"


# -- the parts of an output -----------------------------------------------------------------------------
def format_cell(value: Any, decimals: int = 6, missing: str = "nan") -> str:
    """A CSV cell: ints as ints, floats with ``decimals`` decimals (``missing`` for NaN), anything else as text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return missing if math.isnan(value) else f"{value:.{decimals}f}"
    return "" if value is None else str(value)


@dataclass
class Table:
    """One CSV file: ``header`` then ``rows``; ``rows_are`` / ``columns_are`` say what they name."""

    file: str
    title: str
    header: list[str]
    rows: list[list[Any]]
    rows_are: str
    columns_are: str
    decimals: int = 6
    missing: str = "nan"

    def write(self, directory: Path) -> None:
        with open(directory / self.file, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(self.header)
            for row in self.rows:
                writer.writerow([format_cell(value, self.decimals, self.missing) for value in row])

    def describe(self) -> dict[str, Any]:
        return {"file": self.file, "title": self.title, "rows": self.rows_are, "columns": self.columns_are}


@dataclass
class Figure:
    """One PNG file drawn by ``draw(path)``."""

    file: str
    title: str
    draw: Callable[[Path], Any]

    def describe(self) -> dict[str, Any]:
        return {"file": self.file, "title": self.title}


@dataclass
class Array:
    """A large array: ``.npy`` (``dtype``, float32 by default) or ``.safetensors`` (one tensor, key ``values``)."""

    file: str
    title: str
    values: Any  # torch.Tensor or numpy.ndarray
    rows_are: str = ""
    columns_are: str = ""
    dtype: str = "float32"

    def _numpy(self):
        import numpy as np

        values = self.values.detach().cpu().numpy() if hasattr(self.values, "detach") else np.asarray(self.values)
        return np.ascontiguousarray(values.astype(self.dtype, copy=False))

    def write(self, directory: Path) -> dict[str, Any]:
        import numpy as np

        values = self._numpy()
        path = directory / self.file
        if self.file.endswith(".npy"):
            np.save(path, values, allow_pickle=False)
        elif self.file.endswith(".safetensors"):
            import torch
            from safetensors.torch import save_file

            save_file({"values": torch.from_numpy(values)}, str(path))
        else:
            raise ValueError(f"array file {self.file!r}: use .npy or .safetensors")
        return {"file": self.file, "title": self.title, "dtype": str(values.dtype), "shape": list(values.shape),
                "rows": self.rows_are, "columns": self.columns_are, "sha256": sha256_file(path)}


@dataclass
class Records:
    """Raw records: one JSON object per line (UTF-8, not ASCII-escaped)."""

    file: str
    title: str
    records: Sequence[dict[str, Any]]

    def write(self, directory: Path) -> None:
        write_records(directory / self.file, self.records)

    def describe(self) -> dict[str, Any]:
        return {"file": self.file, "title": self.title, "count": len(self.records)}


def write_records(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False, default=str) + "\n" for record in records)


@dataclass
class Output:
    """What a command writes: its kind, tables, figures, arrays, raw records, headline numbers, provenance.

    ``meta`` is the provenance (model, revision, site, dtype, corpus with file hashes, token counts,
    ``parameters``, ...) plus anything the kind's reader needs; it lands at the top level of ``meta.json``.
    ``headline`` is one sentence for the report's findings (optional; a registered section may compute it).
    """

    kind: str
    title: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: list[Array] = field(default_factory=list)
    records: list[Records] = field(default_factory=list)
    headline: str | None = None

    def save(self, directory: str | Path, plot: bool = True, force: bool = False) -> Path:
        """Write every part (figures unless ``plot`` is false) and ``meta.json`` into ``directory`` atomically.

        An existing output of the same kind is replaced; one of another kind only with ``force``.
        """
        spec = kind_spec(self.kind)
        names = [part.file for part in [*self.tables, *self.figures, *self.arrays, *self.records]]
        if len(set(names)) != len(names) or "meta.json" in names:
            raise ValueError(f"output files must be distinct and not meta.json: {names}")
        with atomic_directory(directory, kind=self.kind, force=force) as staging:
            for table in self.tables:
                table.write(staging)
            arrays = [array.write(staging) for array in self.arrays]
            for records in self.records:
                records.write(staging)
            figures = self.figures if plot else []
            for figure in figures:
                figure.draw(staging / figure.file)
            head: dict[str, Any] = {"title": self.title}
            if self.headline:
                head["headline"] = self.headline
            head.update({"tables": [t.describe() for t in self.tables], "arrays": arrays,
                         "figures": [f.describe() for f in figures], "raw": [r.describe() for r in self.records],
                         "summary": self.summary})
            provenance = {key: value for key, value in self.meta.items() if key not in HEAD_KEYS}
            write_json(staging / "meta.json", sidecar(self.kind, spec.schema_version, {**head, **provenance}))
        return Path(directory)


# -- reading ----------------------------------------------------------------------------------------------
def read_output_meta(directory: str | Path, kind: str | Sequence[str] | None = None,
                     what: str = "a langneurons output") -> dict[str, Any]:
    """The ``meta.json`` of an output folder, checked to be of ``kind`` (one or several) and readable here."""
    meta = read_meta(directory, None, what)
    found = meta.get("kind")
    wanted = [kind] if isinstance(kind, str) else list(kind) if kind is not None else None
    if wanted is not None and found not in wanted:
        expected = wanted[0] if len(wanted) == 1 else " or ".join(wanted)
        raise LangNeuronsError(f"{str(directory)!r} holds a {found!r} output, not {expected}")
    if found in _KINDS:
        check_schema(directory, meta, _KINDS[found].schema_version)
    return meta


def read_table(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """``(header, rows)`` of a CSV written by :class:`Table` (cells as text)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise LangNeuronsError(f"cannot read table {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    if not rows:
        raise LangNeuronsError(f"table {str(path)!r} is empty")
    return rows[0], rows[1:]


def read_matrix(path: str | Path, what: str) -> tuple[list[str], list[str], Any]:
    """``(row labels, column labels, float64 [rows, columns])`` of a labelled numeric table (blank cells: NaN);
    a cell that is not a number is a one-line error naming ``what`` the file should be."""
    import torch

    header, rows = read_table(path)
    try:
        values = torch.tensor([[float(v) if v else float("nan") for v in row[1:]] for row in rows],
                              dtype=torch.float64)
    except ValueError as exc:
        raise LangNeuronsError(f"{str(path)!r} is not {what}: {exc}") from None
    return [row[0] for row in rows], header[1:], values


def read_array(directory: str | Path, file: str, mmap: bool = False):
    """A ``numpy`` array written by :class:`Array`, checked against its ``meta.json`` entry (``mmap``: memory-map)."""
    import numpy as np

    root = Path(directory)
    meta = read_meta(root)
    entry = next((a for a in meta.get("arrays") or [] if isinstance(a, dict) and a.get("file") == file), None)
    if entry is None:
        raise LangNeuronsError(f"{str(root)!r} lists no array {file!r}")
    path = root / file
    if not mmap and entry.get("sha256") and path.is_file() and sha256_file(path) != entry["sha256"]:
        raise LangNeuronsError(f"{str(path)!r} is corrupt: its checksum does not match meta.json")
    try:
        if file.endswith(".npy"):
            values = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        else:
            from safetensors.numpy import load_file

            values = load_file(str(path))["values"]
    except (OSError, ValueError, KeyError) as exc:
        raise LangNeuronsError(f"{str(path)!r} cannot be read: {exc}") from None
    if list(values.shape) != list(entry.get("shape", values.shape)) or str(values.dtype) != entry.get(
            "dtype", str(values.dtype)):
        raise LangNeuronsError(f"{str(path)!r} is {values.dtype}{list(values.shape)} but meta.json says "
                               f"{entry.get('dtype')}{entry.get('shape')}")
    return values


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file (blank lines skipped); a bad line is a one-line error naming it."""
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LangNeuronsError(f"cannot read {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LangNeuronsError(f"{str(path)!r} line {number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise LangNeuronsError(f"{str(path)!r} line {number}: not a JSON object")
            records.append(record)
    return records
