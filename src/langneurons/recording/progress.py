"""What a long evaluation has finished, on disk: results per (unit, index), checked against a run fingerprint.

Two stores of the results of :meth:`langneurons.recording.parallel_run.ParallelRun.map`:

* :class:`ProgressStore`, the checkpoints of one run (``OUT.checkpoint/`` next to the output unless
  ``--checkpoint-dir`` says otherwise): ``run.json`` holds the run's fingerprint (command, options, input
  checksums, model fingerprint, langneurons version), and every flush adds one ``part-NNNNNN.pt`` with the
  results finished since the last one (``{unit name: {index: result}}``). Each file is written into a
  temporary sibling and renamed into place, so a process killed at any instant leaves whole files only.
  Results are keyed by the unit's name and index, never by rank, so a run resumes with any number of ranks.
  Only rank 0 reads and writes it (the others receive the progress), so it needs no shared filesystem.
* :class:`ResultCache`, the results of the ``normal`` condition (no intervention), which several commands of
  one run directory compute identically (the perplexity matrix, the sweep, ``pv perplexity`` on the same
  validation corpus; ``generate --also-normal`` and ``steer`` on the same prompts; ``task``): one file per
  fingerprint (``<sha256>.pt``: the fingerprint and the value) in ``RUN/.langneurons-cache/normal/``, where
  ``RUN`` is the folder that holds the command's ``--out``.

Values are what the units return: numbers, strings, booleans, ``None``, lists, tuples, dicts and tensors
(loaded with ``torch.load(weights_only=True)``: no code runs on load).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from langneurons.errors import LangNeuronsError
from langneurons.sets.artefacts import apply_umask

KIND = "evaluation_checkpoint"
SCHEMA_VERSION = 1
RUN_FILE = "run.json"
PART_PREFIX = "part-"
CACHE_FOLDER = ".langneurons-cache"

Results = dict[str, dict[int, Any]]


def normalised(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples as lists, keys as strings, paths as strings)."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def digest(value: Any) -> str:
    """SHA-256 of the normalised JSON of ``value``."""
    return hashlib.sha256(json.dumps(normalised(value), sort_keys=True).encode()).hexdigest()


def short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _save_atomically(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        torch.save(value, partial)
        apply_umask(partial)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _load(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported on one line
        raise LangNeuronsError(f"{what} {str(path)!r} cannot be read ({type(exc).__name__}); delete it") from None


class ProgressStore:
    """The finished units of one evaluation run under ``directory`` (see the module doc)."""

    def __init__(self, directory: str | Path, fingerprint: dict[str, Any]) -> None:
        self.directory = Path(directory)
        self.fingerprint = normalised(fingerprint)
        self._next = 0

    def exists(self) -> bool:
        return (self.directory / RUN_FILE).is_file() or any(self._parts())

    def _parts(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.name.startswith(PART_PREFIX) and p.suffix == ".pt")

    def open(self, resume: bool) -> Results:
        """The results of the earlier run (``resume``), verified against the fingerprint; ``{}`` when starting.

        Without ``resume`` an existing store is an error (nothing is overwritten); with it and none, the run
        starts afresh. A store of another run (any fingerprint key differs) is an error naming the key.
        """
        if self.exists() and not resume:
            raise LangNeuronsError(f"{str(self.directory)!r} holds checkpoints of an earlier run; resume it "
                                   "(--resume) or delete it")
        done: Results = {}
        if resume and self.exists():
            run_file = self.directory / RUN_FILE
            try:
                meta = json.loads(run_file.read_text())
            except (OSError, ValueError):
                raise LangNeuronsError(f"checkpoint {str(run_file)!r} is missing or not JSON; delete "
                                       f"{str(self.directory)!r} to start over") from None
            if meta.get("kind") != KIND:
                raise LangNeuronsError(f"{str(self.directory)!r} holds {meta.get('kind')!r} checkpoints, not an "
                                       "evaluation's; use another --checkpoint-dir or delete it")
            recorded = meta.get("run", {})
            for key in sorted(set(recorded) | set(self.fingerprint)):
                if recorded.get(key) != self.fingerprint.get(key):
                    raise LangNeuronsError(
                        f"checkpoint {str(self.directory)!r} belongs to a different run ({key}: "
                        f"{short(recorded.get(key))} there, {short(self.fingerprint.get(key))} now); "
                        "use another --checkpoint-dir or delete it")
            for part in self._parts():
                content = _load(part, "checkpoint")
                if not isinstance(content, dict):
                    raise LangNeuronsError(f"checkpoint {str(part)!r} is not a progress file; delete it")
                for name, results in content.items():
                    done.setdefault(str(name), {}).update({int(i): v for i, v in results.items()})
                self._next = max(self._next, int(part.stem[len(PART_PREFIX):]) + 1)
        self._remove_staging()
        if not (self.directory / RUN_FILE).is_file():
            self.directory.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"kind": KIND, "schema_version": SCHEMA_VERSION, "run": self.fingerprint}, indent=1)

            def write(path: Path) -> None:
                path.write_text(text)

            from langneurons.sets.artefacts import write_file_atomically

            write_file_atomically(self.directory / RUN_FILE, write)
        return done

    def append(self, results: Results) -> Path | None:
        """Write the newly finished ``results`` as one more part file (atomically)."""
        results = {name: dict(values) for name, values in results.items() if values}
        if not results:
            return None
        path = self.directory / f"{PART_PREFIX}{self._next:06d}.pt"
        self._next += 1
        _save_atomically(path, results)
        return path

    def _remove_staging(self) -> None:
        if self.directory.is_dir():
            for path in self.directory.iterdir():
                if path.name.startswith(".") and path.name.endswith(".partial"):
                    path.unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the store (once the result is written)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def default_cache_dir(out: str | Path) -> Path:
    """``RUN/.langneurons-cache/normal`` for an output ``RUN/NAME``."""
    return Path(out).expanduser().absolute().parent / CACHE_FOLDER / "normal"


class ResultCache:
    """Values keyed by a fingerprint, one file each, in ``directory`` (see the module doc)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path(self, key: dict[str, Any]) -> Path:
        return self.directory / f"{digest(key)[:32]}.pt"

    def get(self, key: dict[str, Any]) -> tuple[bool, Any]:
        """``(True, value)`` when ``key`` is cached, else ``(False, None)``; an unreadable entry is a miss."""
        path = self.path(key)
        if not path.is_file():
            return False, None
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a torn or foreign file is recomputed and replaced
            return False, None
        if not isinstance(content, dict) or content.get("key") != json.dumps(normalised(key), sort_keys=True):
            return False, None
        return True, content.get("value")

    def put(self, key: dict[str, Any], value: Any) -> Path:
        path = self.path(key)
        _save_atomically(path, {"key": json.dumps(normalised(key), sort_keys=True), "value": value})
        return path
