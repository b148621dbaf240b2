"""Artefacts on disk: atomic writes that follow the umask, the checks every command runs on its outputs
before any work, the common ``meta.json`` head, and the safetensors artefact.

A safetensors artefact is a directory with ``tensors.safetensors`` and a ``meta.json`` sidecar; it carries a
kind, a schema version, the package version and a SHA-256 checksum of its tensors, and is checked on load: a
truncated or edited file is reported, never silently used. No pickles. Tables, figures, arrays and raw
records go through :mod:`langneurons.sets.output` (the one output style), written by the same
:func:`atomic_directory`.

Replacement rules (the data-safety contract, see ``docs/architecture.md``, "Outputs"):

- a folder that is not a langneurons output (non-empty, no ``meta.json``) is never written over;
- Python ``save()`` replaces a previous artefact of the *same* kind, and one of another kind only with
  ``force=True`` (so ``neurons.save(stats_dir)`` cannot destroy recorded statistics);
- every CLI command checks its outputs with :func:`check_outputs` before any work: an existing artefact is
  replaced only with ``--force``, an output is never one of the command's inputs (nor inside one, nor holding
  one), and an unwritable location is reported before a model is loaded;
- folders and files get the modes a plain ``mkdir`` / ``open`` would give under the user's umask (the
  staging folder of ``tempfile.mkdtemp`` would otherwise stay ``drwx------``).
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


sha256_file = _sha256


def environment() -> dict[str, str]:
    """Versions of the software that produced an artefact."""
    import transformers

    return {
        "langneurons": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


# -- modes ------------------------------------------------------------------------------------------
def current_umask() -> int:
    """The process umask (read from ``/proc`` where it can be, else set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: str | Path) -> None:
    """Give ``root`` and everything under it the modes ``mkdir`` / ``open`` give under the umask."""
    mask = current_umask()
    folder_mode, file_mode = 0o777 & ~mask, 0o666 & ~mask
    root = Path(root)
    if not root.is_dir():
        os.chmod(root, file_mode)
        return
    os.chmod(root, folder_mode)
    for base, folders, files in os.walk(root):
        for name in folders:
            os.chmod(os.path.join(base, name), folder_mode)
        for name in files:
            os.chmod(os.path.join(base, name), file_mode)


# -- replacement rules ------------------------------------------------------------------------------
#: Outputs a command was given ``--force`` for (set by :func:`check_outputs`, scoped to one CLI call).
_FORCED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("langneurons_forced", default=frozenset())


def _key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def allow_replacing(paths: Iterable[str | Path]) -> None:
    """Let the writers replace existing artefacts at ``paths`` whatever their kind (``--force``)."""
    _FORCED.set(_FORCED.get() | {_key(path) for path in paths})


def existing_kind(directory: str | Path) -> str | None:
    """The kind in ``directory/meta.json`` (``"?"`` when it cannot be read), ``None`` without one."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        return None
    try:
        kind = json.loads(path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return "?"
    return kind if isinstance(kind, str) and kind else "?"


def check_replaceable(directory: str | Path, kind: str | None = None, marker: str = META_FILE,
                      force: bool = False) -> None:
    """Raise unless ``directory`` may receive a new artefact (of ``kind``, when given).

    Absent or empty: yes. Not a folder, or a non-empty folder without ``marker``: never. A previous artefact
    of another kind: only with ``force`` (or ``--force``).
    """
    target = Path(directory)
    if not target.exists():
        return
    if not target.is_dir():
        raise LangNeuronsError(f"{str(target)!r} exists and is a file, not an output folder; refusing to replace it")
    if not (target / marker).exists():
        if any(target.iterdir()):
            raise LangNeuronsError(f"{str(target)!r} exists and is not a langneurons output (no {marker}); "
                                   "refusing to write there")
        return
    found = existing_kind(target) if marker == META_FILE else None
    if kind is not None and found is not None and found != kind and not (force or _key(target) in _FORCED.get()):
        raise LangNeuronsError(f"{str(target)!r} holds a {found!r} artefact; refusing to replace it with a "
                               f"{kind!r} (give force=True, or --force, to replace it)")


def check_writable(directory: str | Path, marker: str = META_FILE) -> None:
    """Raise unless ``directory`` is absent, empty or a previous result (holds ``marker``)."""
    check_replaceable(directory, None, marker)


@contextmanager
def atomic_directory(directory: str | Path, marker: str = META_FILE, kind: str | None = None,
                     force: bool = False) -> Iterator[Path]:
    """Yield a staging directory; on success it replaces ``directory``, on error it is removed.

    The replacement rules are :func:`check_replaceable`'s; the result gets the modes of the user's umask.
    """
    check_replaceable(directory, kind, marker, force)
    target = Path(directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        apply_umask(staging)
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


def write_file_atomically(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(partial)`` into a temporary sibling, then rename it to ``path`` (mode from the umask)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    try:
        write(Path(partial))
        apply_umask(partial)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


# -- output checks of the commands --------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One output of a command.

    ``role``: ``"artefact"`` (a folder with ``meta.json``), ``"file"``, ``"workdir"`` (may exist and is reused,
    e.g. checkpoints) or ``"folder"`` (a folder of outputs, e.g. a model or the demo's run; ``marker`` names the
    file a previous result holds; ``""``: any non-empty folder may be written into with ``--force``).
    ``replaceable(path)`` says when existing contents are replaced without ``--force`` (a previous report, the
    demo's own output).
    """

    flag: str
    path: str | Path
    role: str = "artefact"
    marker: str = META_FILE
    replaceable: Callable[[Path], bool] | None = None


def _inputs(inputs: dict[str, Any] | Sequence[tuple[str, Any]]) -> list[tuple[str, Path]]:
    items = inputs.items() if isinstance(inputs, dict) else inputs
    found = []
    for flag, value in items:
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path is not None and str(path) != "":
                found.append((flag, Path(str(path)).expanduser()))
    return found


def _overlap(target: Target, resolved: Path, inputs: list[tuple[str, Path]], containers: set[str],
             role: str = "input") -> None:
    where = f"{target.flag} {str(target.path)!r}"
    for flag, path in inputs:
        source = path.resolve()
        name = f"the {role} {flag} {str(path)!r}"
        if source == resolved:
            raise LangNeuronsError(f"{where} is also {name}; a command never writes over its own {role} "
                                   f"(choose another {target.flag})")
        if source in resolved.parents and flag not in containers:
            raise LangNeuronsError(f"{where} lies inside {name}; writing there would change the input "
                                   f"(choose another {target.flag})")
        if resolved in source.parents:
            raise LangNeuronsError(f"{name} lies inside {where}; replacing {target.flag} would destroy it "
                                   f"(choose another {target.flag})")


def _existing(target: Target, path: Path, force: bool) -> None:
    where = f"{target.flag} {str(path)!r}"
    if target.role == "file":
        if path.is_dir():
            raise LangNeuronsError(f"{where} is a directory; give a file name")
        if path.exists() and not force and not (target.replaceable and target.replaceable(path)):
            raise LangNeuronsError(f"{where} exists; refusing to replace it (add --force to replace it)")
        return
    if not path.exists():
        return
    if not path.is_dir():
        raise LangNeuronsError(f"{where} exists and is a file, not a folder; refusing to replace it")
    if target.role == "workdir" or not any(path.iterdir()):
        return
    if target.replaceable and target.replaceable(path):
        return
    if target.marker and not (path / target.marker).exists():
        raise LangNeuronsError(f"{where} exists and is not a langneurons output (no {target.marker}); refusing to "
                               f"write there, even with --force (choose another {target.flag})")
    if not force:
        kind = existing_kind(path) if target.marker == META_FILE else None
        what = f"a {kind} artefact" if kind and kind != "?" else "a previous result"
        raise LangNeuronsError(f"{where} already holds {what}; refusing to replace it (add --force to replace it)")


def _probe(target: Target, path: Path) -> None:
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".langneurons-probe-", dir=parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise LangNeuronsError(f"cannot write {target.flag} {str(target.path)!r}: "
                               f"{exc.strerror or exc} ({str(parent)!r})") from None


def check_outputs(outputs: Sequence[Target], inputs: dict[str, Any] | Sequence[tuple[str, Any]] = (),
                  force: bool = False, containers: Iterable[str] = ()) -> None:
    """The checks every command runs on its outputs before any work (one-line errors).

    For each output: never one of ``inputs`` (``{flag: path or [paths]}``; resolved paths compared), nor inside
    one (except the ``containers`` flags, e.g. the report's run directories), nor holding one; an existing
    artefact only with ``force``; a folder that is not a langneurons output never; and the location writable
    (its parent is created and a probe file written and removed). With ``force`` the writers may replace the
    outputs whatever kind they hold.
    """
    given = _inputs(inputs)
    container_flags = set(containers)
    targets = [(t, Path(str(t.path)).expanduser()) for t in outputs if t.path is not None and str(t.path) != ""]
    for index, (target, path) in enumerate(targets):
        _overlap(target, path.resolve(), given, container_flags)
        others = [(t.flag, p) for t, p in targets[:index]]
        _overlap(target, path.resolve(), others, set(), role="output")
    for target, path in targets:
        _existing(target, path, force)
    for target, path in targets:
        _probe(target, path)
    if force:
        allow_replacing(path for _, path in targets)


# -- the common head of every meta.json -------------------------------------------------------------
def sidecar(kind: str, schema_version: int, meta: dict[str, Any]) -> dict[str, Any]:
    """The common head of every ``meta.json``: kind, schema, time, software versions."""
    return {
        "kind": kind,
        "schema_version": schema_version,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        **meta,
    }


def _finite(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by ``None`` (strict JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as strict, indented UTF-8 JSON (NaN and infinities written as ``null``)."""
    path.write_text(json.dumps(_finite(data), indent=2, default=str, ensure_ascii=False, allow_nan=False) + "\n",
                    encoding="utf-8")


def read_meta(directory: str | Path, kind: str | None = None, what: str = "a langneurons artefact") -> dict[str, Any]:
    """The parsed ``meta.json`` of ``directory`` (checked to be of ``kind`` when given); one-line errors."""
    root = Path(directory)
    path = root / META_FILE
    if not root.is_dir() or not path.is_file():
        raise LangNeuronsError(f"{str(root)!r} is not {what} (no {META_FILE})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LangNeuronsError(f"{str(path)!r} is corrupt (not JSON)") from None
    except OSError as exc:
        raise LangNeuronsError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    if not isinstance(meta, dict):
        raise LangNeuronsError(f"{str(path)!r} is corrupt (not a JSON object)")
    if kind is not None and meta.get("kind") != kind:
        raise LangNeuronsError(f"{str(root)!r} holds a {meta.get('kind')!r} artefact, expected {kind!r}")
    return meta


def check_schema(directory: str | Path, meta: dict[str, Any], max_schema_version: int) -> None:
    if int(meta.get("schema_version", 0)) > max_schema_version:
        raise LangNeuronsError(
            f"{str(directory)!r} has schema version {meta.get('schema_version')}, newer than this langneurons "
            f"({__version__}) reads; upgrade langneurons"
        )


# -- safetensors artefacts --------------------------------------------------------------------------
def write_artefact(
    directory: str | Path, kind: str, schema_version: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
    force: bool = False,
) -> Path:
    """Write ``tensors`` and ``meta`` to ``directory`` atomically (replacement rules: module doc)."""
    with atomic_directory(directory, kind=kind, force=force) as staging:
        tensors_path = staging / TENSORS_FILE
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tensors_path))
        head = sidecar(kind, schema_version, {"tensors_sha256": _sha256(tensors_path)})
        write_json(staging / META_FILE, {**head, **{k: v for k, v in meta.items() if k not in head}})
    return Path(directory)


def read_artefact(directory: str | Path, kind: str, max_schema_version: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Load and verify an artefact of ``kind``; returns ``(tensors, meta)``."""
    root = Path(directory)
    tensors_path = root / TENSORS_FILE
    meta = read_meta(root, kind, f"a langneurons {kind} artefact")
    check_schema(root, meta, max_schema_version)
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
