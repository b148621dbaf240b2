"""What one report has shown so far and what problems it noted (both scoped to one :func:`render_scope`).

- :func:`first_time` makes every figure, table and corpus block appear once per run: the second time the same content
  would be shown (the same training corpus in the statistics, the neuron set and its perplexity matrix; the
  same layer plot in a neuron set and its layer distribution) the card links to the first place instead;
- :func:`note_problem` collects each problem the page notes (an unreadable ``meta.json``, a card that could not
  be rendered, a broken figure), so ``langneurons report`` prints one console line per problem.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Scope:
    shown: dict[str, tuple[str, str]] = field(default_factory=dict)  # content key -> (anchor, label)
    problems: list[str] = field(default_factory=list)
    where: tuple[str, str] = ("", "")  # the card being rendered: (anchor, label)
    run: int = 0  # its run: content repeats across runs on purpose (side by side), never within one


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("langneurons_report_scope", default=None)


@contextmanager
def render_scope() -> Iterator[_Scope]:
    """One report's registry of shown content and noted problems."""
    token = _SCOPE.set(_Scope())
    try:
        yield _SCOPE.get()  # type: ignore[misc]
    finally:
        _SCOPE.reset(token)


@contextmanager
def in_card(anchor: str, label: str, run: int = 0) -> Iterator[None]:
    """Content shown (and problems noted) inside the card ``anchor`` / ``label`` of run number ``run``."""
    scope = _SCOPE.get()
    if scope is None:
        yield
        return
    previous, scope.where = (scope.where, scope.run), (anchor, label)
    scope.run = run
    try:
        yield
    finally:
        scope.where, scope.run = previous


def content_key(*parts: Any) -> str:
    """A key for content (bytes, or anything with a stable ``repr``)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    return digest.hexdigest()


def first_time(key: str) -> tuple[str, str] | None:
    """``None`` the first time ``key`` is shown in this report (it is recorded); ``(anchor, label)`` of the card
    that showed it afterwards. Outside a scope everything is shown."""
    scope = _SCOPE.get()
    if scope is None:
        return None
    key = f"{scope.run}:{key}"
    if key in scope.shown:
        return scope.shown[key]
    scope.shown[key] = scope.where
    return None


def note_problem(text: str) -> None:
    """Record a problem the page shows (for the console); prefixed with the card's label."""
    scope = _SCOPE.get()
    if scope is not None:
        label = scope.where[1]
        message = f"{label}: {text}" if label and not text.startswith(label) else text
        if message not in scope.problems:
            scope.problems.append(message)
