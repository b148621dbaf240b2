"""Artefacts on disk: a directory with ``tensors.safetensors`` and a ``meta.json`` sidecar.

Every artefact is written atomically (into a temporary sibling directory, then renamed), carries a
kind, a schema version, the package version and a SHA-256 checksum of its tensors, and is checked on
load: a truncated or edited file is reported, never silently used. No pickles.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from langneurons._version import __version__
from langneurons.errors import LangNeuronsError

TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def environment() -> dict[str, str]:
    """Versions of the software that produced an artefact."""
    import transformers

    return {
        "langneurons": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def check_writable(directory: str | Path, marker: str = META_FILE) -> None:
    """Raise unless ``directory`` is absent, empty or a previous result (holds ``marker``).

    Commands call it before any work, so that a long run never ends in a refusal to save.
    """
    target = Path(directory)
    if target.exists() and (not target.is_dir() or (not (target / marker).exists() and any(target.iterdir()))):
        raise LangNeuronsError(f"{str(target)!r} exists and is not a langneurons output; refusing to overwrite")


@contextmanager
def atomic_directory(directory: str | Path, marker: str = META_FILE) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces ``directory``, on error it is removed.

    An existing ``directory`` is replaced only if it is empty or holds ``marker`` (a previous result).
    """
    check_writable(directory, marker)
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(staging, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def sidecar(kind: str, schema_version: int, meta: dict[str, Any]) -> dict[str, Any]:
    """The common head of every ``meta.json``: kind, schema, time, software versions."""
    return {
        "kind": kind,
        "schema_version": schema_version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        **meta,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8")


def write_artefact(
    directory: str | Path, kind: str, schema_version: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``tensors`` and ``meta`` to ``directory`` atomically; an existing artefact there is replaced."""
    with atomic_directory(directory) as staging:
        tensors_path = staging / TENSORS_FILE
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tensors_path))
        head = sidecar(kind, schema_version, {"tensors_sha256": _sha256(tensors_path)})
        write_json(staging / META_FILE, {**head, **{k: v for k, v in meta.items() if k not in head}})
    return Path(directory)


def read_artefact(directory: str | Path, kind: str, max_schema_version: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Load and verify an artefact of ``kind``; returns ``(tensors, meta)``."""
    root = Path(directory)
    meta_path, tensors_path = root / META_FILE, root / TENSORS_FILE
    if not root.is_dir() or not meta_path.is_file():
        raise LangNeuronsError(f"{str(root)!r} is not a langneurons {kind} artefact (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LangNeuronsError(f"{str(meta_path)!r} is corrupt (not JSON)") from None
    if meta.get("kind") != kind:
        raise LangNeuronsError(f"{str(root)!r} holds a {meta.get('kind')!r} artefact, expected {kind!r}")
    if int(meta.get("schema_version", 0)) > max_schema_version:
        raise LangNeuronsError(
            f"{str(root)!r} has schema version {meta.get('schema_version')}, newer than this langneurons "
            f"({__version__}) reads; upgrade langneurons"
        )
    if not tensors_path.is_file():
        raise LangNeuronsError(f"{str(root)!r} is incomplete: {TENSORS_FILE} is missing")
    expected = meta.get("tensors_sha256")
    if expected and _sha256(tensors_path) != expected:
        raise LangNeuronsError(f"{str(tensors_path)!r} is corrupt: its checksum does not match {META_FILE}")
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError) as exc:
        raise LangNeuronsError(f"{str(tensors_path)!r} cannot be read: {exc}") from None
    return tensors, meta
