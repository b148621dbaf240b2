"""Per-sample pooled vectors on a parallel corpus (sentence embeddings, "Sharing Matters", "Lingua Franca").

For every language ``k``, sample ``s`` (an item of a parallel corpus) and layer ``l`` it keeps one vector over
the site's width: the last token's activation (``mode="last"``, the last real token under left or right
padding: ``BatchInfo.last_index``), or the mean / sum over the sample's counted tokens (``"mean"`` /
``"sum"``; padding, and a BOS the caller leaves out, never count: ``BatchInfo.token_mask``). A batch may mix
languages and items (``BatchInfo.languages`` and ``sample_ids`` per row).

Storage scales with the corpus: ``float32`` in memory while ``languages x samples x layers x width`` is at
most ``threshold`` elements; above it ``float16``, in a numpy memory map (``vectors.npy`` in a directory)
when a directory is given. ``meta["storage"]`` says which (``kind`` memory / memmap, ``dtype``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from langneurons.data.files import file_sha256
from langneurons.errors import LangNeuronsError
from langneurons.sets.artefacts import (
    META_FILE,
    TENSORS_FILE,
    atomic_directory,
    read_artefact,
    sidecar,
    write_artefact,
    write_json,
)
from langneurons.stats.base import BatchInfo, as_rows

KIND = "pooled_vectors"
#: 2: ``meta["storage"]``, and memory-mapped vectors in ``vectors.npy``; version-1 artefacts still load.
SCHEMA_VERSION = 2
MODES = ("mean", "sum", "last")
STORAGES = ("auto", "memory", "memmap")
#: Elements above which ``storage="auto"`` keeps float16 (and a memory map when a directory is given): 2**28
#: elements are 1 GiB of float32.
LARGE_ELEMENTS = 1 << 28
MEMMAP_FILE = "vectors.npy"
_NUMPY = {torch.float16: np.float16, torch.float32: np.float32}


def choose_storage(elements: int, storage: str = "auto", dtype: torch.dtype | None = None,
                   directory: str | Path | None = None, threshold: int = LARGE_ELEMENTS) -> tuple[str, torch.dtype]:
    """``(kind, dtype)`` for ``elements`` values: ``memory`` or ``memmap``; float32 when small, float16 when large
    (more than ``threshold``) unless ``dtype`` is given. ``auto`` memory-maps large vectors when ``directory``
    is given."""
    if storage not in STORAGES:
        raise LangNeuronsError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    large = elements > threshold
    dtype = dtype or (torch.float16 if large else torch.float32)
    kind = "memmap" if storage == "memmap" or (storage == "auto" and large and directory is not None) else "memory"
    if kind == "memmap":
        if directory is None:
            raise LangNeuronsError("memory-mapped storage needs a directory for its vectors.npy")
        if dtype not in _NUMPY:
            raise LangNeuronsError(f"memory-mapped vectors are float16 or float32, not {dtype}")
    return kind, dtype


class PooledVectors:
    """``vectors[language, sample, layer, width]`` on the CPU (a tensor, or a view of a numpy memory map).

    ``sites`` is ``(site,)`` (from ``site`` or ``meta["site"]``) when known: the site it is fed from.
    """

    def __init__(self, languages: list[str], vectors: torch.Tensor, mode: str = "mean",
                 meta: dict[str, Any] | None = None, site: str | None = None) -> None:
        if mode not in MODES:
            raise LangNeuronsError(f"pooling mode must be one of {', '.join(MODES)}, got {mode!r}")
        if vectors.dim() != 4 or vectors.shape[0] != len(languages):
            raise LangNeuronsError(f"vectors must be [language, sample, layer, width], got {tuple(vectors.shape)}")
        self.languages, self.vectors, self.mode, self.meta = list(languages), vectors, mode, dict(meta or {})
        site = site or self.meta.get("site")
        self.sites: tuple[str, ...] = (site,) if site else ()
        self.meta.setdefault("storage", {"kind": "memory", "dtype": str(vectors.dtype).replace("torch.", "")})
        self._memmap: np.memmap | None = None
        self._batch: BatchInfo | None = None
        self._rows: torch.Tensor | None = None

    @classmethod
    def empty(cls, languages: list[str], num_samples: int, num_layers: int, width: int, mode: str = "mean",
              dtype: torch.dtype | None = None, meta: dict[str, Any] | None = None, storage: str = "auto",
              directory: str | Path | None = None, threshold: int = LARGE_ELEMENTS,
              site: str | None = None) -> "PooledVectors":
        """Zero vectors; the storage follows :func:`choose_storage` and is recorded in ``meta["storage"]``."""
        shape = (len(languages), num_samples, num_layers, width)
        elements = int(np.prod(shape))
        kind, dtype = choose_storage(elements, storage, dtype, directory, threshold)
        info: dict[str, Any] = {"kind": kind, "dtype": str(dtype).replace("torch.", ""), "elements": elements,
                                "threshold": threshold}
        memmap = None
        if kind == "memmap":
            root = Path(directory)
            root.mkdir(parents=True, exist_ok=True)
            memmap = np.lib.format.open_memmap(root / MEMMAP_FILE, mode="w+", dtype=_NUMPY[dtype], shape=shape)
            vectors = torch.from_numpy(memmap)
            info["path"] = str(root / MEMMAP_FILE)
        else:
            vectors = torch.zeros(shape, dtype=dtype)
        pooled = cls(languages, vectors, mode, {**(meta or {}), "storage": info}, site=site)
        pooled._memmap = memmap
        return pooled

    @property
    def num_samples(self) -> int:
        return self.vectors.shape[1]

    @property
    def num_layers(self) -> int:
        return self.vectors.shape[2]

    @property
    def width(self) -> int:
        return self.vectors.shape[3]

    @property
    def storage(self) -> dict[str, Any]:
        """How the vectors are stored: ``{"kind": "memory" | "memmap", "dtype": ..., ...}``."""
        return self.meta["storage"]

    def language(self, language: str) -> torch.Tensor:
        """``[sample, layer, width]`` vectors of one language."""
        return self.vectors[self.languages.index(language)]

    # -- streaming (the recorder's SiteStatistic contract) ----------------------------------------
    def begin_batch(self, batch: BatchInfo, batch_size: int, seq_len: int) -> None:
        if batch.sample_ids is None:
            raise LangNeuronsError("pooled vectors need sample ids (a parallel corpus)")
        rows = batch.row_languages(batch_size)
        unknown = [lang for lang in dict.fromkeys(rows) if lang not in self.languages]
        if unknown:
            raise LangNeuronsError(f"language {unknown[0]!r} is not one of {self.languages}")
        self._batch = batch
        self._shape = (batch_size, seq_len)
        self._rows = torch.tensor([self.languages.index(lang) for lang in rows], dtype=torch.long)

    def update(self, layer: int, activations: torch.Tensor, site: str | None = None) -> None:
        """Pool ``activations[batch, seq, width]`` of ``layer`` per row and store them at (row language, sample)."""
        batch = self._batch
        acts = as_rows(activations, *self._shape).float()
        size, length = acts.shape[:2]
        if self.mode == "last":
            last = batch.last_positions(size, length).to(acts.device)
            pooled = acts[torch.arange(size, device=acts.device), last]
        else:
            if batch.token_mask is None:
                mask = torch.ones((size, length), dtype=torch.bool, device=acts.device)
            else:
                mask = batch.token_mask.to(acts.device)
            pooled = torch.where(mask.unsqueeze(-1), acts, acts.new_zeros(())).sum(1)
            if self.mode == "mean":
                pooled = pooled / mask.sum(1, keepdim=True).clamp_min(1)
        self.vectors[self._rows, batch.sample_ids.cpu(), layer] = pooled.to(self.vectors.device, self.vectors.dtype)

    def end_batch(self) -> None:
        self._batch = None

    # -- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"vectors": self.vectors}

    def flush(self) -> None:
        """Write a memory map's pages to its file (nothing for vectors in memory)."""
        if self._memmap is not None:
            self._memmap.flush()

    def _meta(self) -> dict[str, Any]:
        return {**self.meta, "languages": self.languages, "mode": self.mode, "num_samples": self.num_samples,
                "num_layers": self.num_layers, "width": self.width}

    def save(self, directory: str | Path) -> Path:
        """Write the artefact: ``tensors.safetensors`` + ``meta.json``; memory-mapped vectors go to ``vectors.npy``
        next to them (copied, unless the memory map already lives in ``directory``)."""
        if self.storage.get("kind") != "memmap":
            return write_artefact(directory, KIND, SCHEMA_VERSION, self.state_dict(), self._meta())
        from safetensors.torch import save_file

        self.flush()
        source = Path(self.storage["path"])
        shape = torch.tensor(list(self.vectors.shape), dtype=torch.long)

        def write(root: Path) -> None:
            if (root / MEMMAP_FILE).resolve() != source.resolve():
                shutil.copyfile(source, root / MEMMAP_FILE)
            save_file({"shape": shape}, str(root / TENSORS_FILE))
            head = sidecar(KIND, SCHEMA_VERSION, {"tensors_sha256": file_sha256(root / TENSORS_FILE),
                                                  "vectors_sha256": file_sha256(root / MEMMAP_FILE)})
            meta = self._meta()
            meta["storage"] = {**meta["storage"], "path": MEMMAP_FILE}
            write_json(root / META_FILE, {**head, **{k: v for k, v in meta.items() if k not in head}})

        target = Path(directory)
        if target.resolve() == source.parent.resolve():  # recorded in place: meta.json last marks it complete
            write(target)
        else:
            with atomic_directory(target) as staging:
                write(staging)
        return target


def load_pooled(directory: str | Path, verify: bool = True) -> PooledVectors:
    """Load vectors written by :meth:`PooledVectors.save` (checksums verified; memory-mapped vectors are mapped
    copy-on-write, so edits stay in memory)."""
    tensors, meta = read_artefact(directory, KIND, SCHEMA_VERSION)
    storage = meta.get("storage", {})
    if storage.get("kind") != "memmap":
        return PooledVectors(meta["languages"], tensors["vectors"], meta["mode"], meta)
    path = Path(directory) / MEMMAP_FILE
    if not path.is_file():
        raise LangNeuronsError(f"{str(directory)!r} is incomplete: {MEMMAP_FILE} is missing")
    if verify and file_sha256(path) != meta.get("vectors_sha256"):
        raise LangNeuronsError(f"{str(path)!r} is corrupt: its checksum does not match {META_FILE}")
    array = np.load(path, mmap_mode="c")
    if list(array.shape) != tensors["shape"].tolist():
        raise LangNeuronsError(f"{str(path)!r} has shape {list(array.shape)}, expected {tensors['shape'].tolist()}")
    pooled = PooledVectors(meta["languages"], torch.from_numpy(array), meta["mode"],
                           {**meta, "storage": {**storage, "path": str(path)}})
    pooled._memmap = array
    return pooled
