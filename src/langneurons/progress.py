"""The one progress display of every long command: one line saying how much work is ahead, then ONE overall bar
with a total and the time left.

    with progress_bar("perplexity", total, "tok", factors=[(12, "conditions"), (409_600, "tokens")]) as bar:
        ...
        bar.update(n)            # n units done
        bar.describe("zh->en")   # what runs now (shown before the bar)

prints ``perplexity: 12 conditions x 409,600 tokens = 4.9M tokens`` on stderr, then the bar
(``perplexity zh->en:  40%|####      | 1.96M/4.92M [01:10<01:45, 28.0k tok/s]``). A function that is one part of
a larger job takes ``progress: bool | Progress`` and passes it to :func:`progress_bar`: given a running
:class:`Progress`, it reuses that bar (no second bar, no second announcement), so a command that calls it
several times (steering: one call per condition) still shows one bar over everything.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["Progress", "corpus_factors", "human", "progress_bar", "work_line"]

#: how a bar's short unit reads in the work line
UNIT_NAMES = {"tok": "tokens", "gen": "outputs", "it": "steps", "sent": "sentences"}


def human(count: float) -> str:
    """``4_915_200`` -> ``"4.9M"``, ``40_960`` -> ``"41.0k"``, ``512`` -> ``"512"``."""
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(count) >= limit:
            return f"{count / limit:.1f}{suffix}"
    return f"{count:g}" if isinstance(count, float) else str(count)


def work_line(what: str, factors: Sequence[tuple[int, str]], total: int | None = None, unit: str = "") -> str:
    """One line saying how much work is ahead: ``"perplexity: 12 conditions x 10 languages = 120 runs"``.

    ``factors`` are ``(count, label)`` pairs multiplied together; ``total`` (with ``unit``) is the product shown
    after ``=`` when there are several factors.
    """
    parts = [f"{count:,} {label}" for count, label in factors]
    text = " x ".join(parts)
    if total is not None and len(parts) > 1:
        text += f" = {human(total)} {unit}".rstrip()
    return f"{what}: {text}"


def corpus_factors(runs: int, label: str, tokens: dict[str, int]) -> list[tuple[int, str]]:
    """Work-line factors of ``runs`` passes over a corpus of ``{language: tokens}``: ``runs x languages x
    tokens`` when every language has as many tokens, else ``runs x tokens in K languages``."""
    counts = list(tokens.values())
    if counts and len(set(counts)) == 1:
        return [(runs, label), (len(counts), "languages"), (counts[0], "tokens")]
    return [(runs, label), (sum(counts), f"tokens in {len(counts)} languages")]


class Progress:
    """One overall bar (tqdm) with a total and the time left; every method is a no-op when disabled."""

    def __init__(self, what: str, total: int | None, unit: str = "it", enabled: bool = True,
                 file: TextIO | None = None) -> None:
        self.what, self.total, self.unit, self.enabled = what, total, unit, enabled
        self.done = 0
        self._bar: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit=unit, unit_scale=unit == "tok", desc=what, dynamic_ncols=True,
                             file=file or sys.stderr, smoothing=0.05, leave=True)

    @classmethod
    def start(cls, what: str, total: int | None, unit: str = "it", factors: Sequence[tuple[int, str]] = (),
              enabled: bool = True, file: TextIO | None = None, work: tuple[int, str] | None = None) -> "Progress":
        """Print the work line (when enabled and there are ``factors``) and start the bar.

        ``work``: the line's ``(total, unit)`` when it counts something else than the bar (default: the bar's)."""
        stream = file or sys.stderr
        if enabled and factors:
            line_total, line_unit = work or (total, UNIT_NAMES.get(unit, unit))
            print(work_line(what, factors, line_total, line_unit), file=stream, flush=True)
        return cls(what, total, unit, enabled=enabled, file=stream)

    def update(self, count: int = 1) -> None:
        """``count`` more units done."""
        self.done += int(count)
        if self._bar is not None:
            self._bar.update(int(count))

    def describe(self, text: str) -> None:
        """What runs now, shown after the command's name."""
        if self._bar is not None:
            self._bar.set_description(f"{self.what} {text}".strip(), refresh=False)

    def postfix(self, **values: Any) -> None:
        """Numbers shown after the bar (e.g. the current loss)."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def finish(self) -> None:
        """The work is done: a total that was an estimate or an upper bound becomes what was done."""
        if self.total is not None and self.done != self.total:
            self.total = self.done
            if self._bar is not None:
                self._bar.total = self.done
                self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def progress_bar(what: str, total: int | None, unit: str = "it", factors: Sequence[tuple[int, str]] = (),
                 progress: "bool | Progress" = True, file: TextIO | None = None) -> Iterator[Progress]:
    """The overall bar of a command (see the module doc); ``progress`` may be a running bar to reuse.

    With ``progress=True`` the work line (:func:`work_line` of ``factors`` and ``total``) is printed first,
    when there are factors; with ``False`` nothing is shown.
    """
    if isinstance(progress, Progress):
        yield progress
        return
    bar = Progress.start(what, total, unit, factors, bool(progress), file)
    try:
        yield bar
    finally:
        bar.close()
