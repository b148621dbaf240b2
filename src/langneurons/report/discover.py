"""Finding the artefacts of a run directory: every folder (depth <= 2) with a ``meta.json`` that names a kind."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError

META_FILE = "meta.json"
MAX_DEPTH = 2


@dataclass
class Artefact:
    """One artefact directory: its ``kind``, parsed ``meta.json``, and where it lies in its run."""

    path: Path
    kind: str
    meta: dict[str, Any]
    run: "Run"
    relative: str  # path inside the run directory, "." for the run directory itself

    @property
    def anchor(self) -> str:
        from langneurons.report.html import slug

        return f"a{self.run.index}-{slug(self.kind)}-{slug(self.relative)}"

    def files(self, suffixes: tuple[str, ...]) -> list[Path]:
        """Files with one of ``suffixes`` in the directory, plus those ``meta.json`` names (in sub-folders too)."""
        found = {p.resolve(): p for p in sorted(self.path.iterdir()) if p.is_file() and p.suffix.lower() in suffixes}
        for name in _strings(self.meta):
            if not name.lower().endswith(suffixes) or "\n" in name or len(name) > 300:
                continue
            candidate = (self.path / name)
            try:
                resolved = candidate.resolve()
                if resolved.is_file() and resolved.is_relative_to(self.path.resolve()):
                    found.setdefault(resolved, candidate)
            except OSError:
                continue
        return sorted(found.values(), key=lambda p: str(p.relative_to(self.path)))


@dataclass
class Run:
    """A run directory given on the command line and what it holds."""

    path: Path
    index: int
    label: str = ""
    artefacts: list[Artefact] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Artefact]:
        return [a for a in self.artefacts if a.kind == kind]


def _strings(value: Any) -> list[str]:
    """Every string anywhere in a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _candidate_dirs(root: Path, depth: int) -> list[Path]:
    found = [root]
    if depth == 0:
        return found
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    except OSError:
        return found
    for child in children:
        found.extend(_candidate_dirs(child, depth - 1))
    return found


def discover_run(path: str | Path, index: int = 0) -> Run:
    """Read every artefact of the run directory ``path``; unreadable ``meta.json`` files become ``problems``."""
    root = Path(path)
    if not root.exists():
        raise LangNeuronsError(f"run directory {str(root)!r} does not exist")
    if not root.is_dir():
        raise LangNeuronsError(f"{str(root)!r} is not a directory")
    run = Run(root, index)
    for directory in _candidate_dirs(root, MAX_DEPTH):
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            continue
        relative = directory.relative_to(root).as_posix()
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            run.problems.append(f"{relative}/{META_FILE} cannot be read: {str(exc).splitlines()[0]}")
            continue
        if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str) or not meta["kind"]:
            run.problems.append(f"{relative}/{META_FILE} has no \"kind\"; skipped")
            continue
        run.artefacts.append(Artefact(directory, meta["kind"], meta, run, relative))
    if not run.artefacts:
        raise LangNeuronsError(
            f"no langneurons artefacts in {str(root)!r} (looked for meta.json with a \"kind\" up to {MAX_DEPTH} "
            f"levels deep)"
        )
    return run


def discover_runs(paths: list[str | Path]) -> list[Run]:
    """Discover each run directory and give each a short, distinct label."""
    if not paths:
        raise LangNeuronsError("give at least one run directory")
    runs = [discover_run(path, index) for index, path in enumerate(paths)]
    names = [run.path.resolve().name or str(run.path) for run in runs]
    for run, name in zip(runs, names):
        run.label = name if names.count(name) == 1 else str(run.path)
    return runs
