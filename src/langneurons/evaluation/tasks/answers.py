"""Comparing generated text with gold answers: normalisation, greedy exact match, MGSM-style numbers.

**Normalisation** (:func:`normalize_answer`): Unicode NFKC (full-width letters and digits become ASCII),
case folding, every run of whitespace one space, and punctuation and symbols (Unicode categories P* and S*)
stripped from both ends. Inner punctuation stays (``"U.S."`` -> ``"u.s"``).

**Greedy exact match** (:func:`answer_matches`), on normalised strings ``out`` (the greedy continuation, cut at
the first stop string and EOS) and ``gold``:

* ``match="exact"``: ``out == gold``;
* ``match="prefix"`` (default): ``out`` starts with ``gold`` and, in a language written with spaces, the
  next character of ``out`` is not a letter or digit (so ``"Parisian"`` does not match ``"Paris"`` but
  ``"Paris, the capital"`` does); in a language without spaces (zh, ja, ...) the prefix alone counts.

**Numbers** (:func:`parse_number`): the LAST number in the text, after NFKC (full-width ``１２３`` -> ``123``)
and with U+2212 (minus sign) read as ``-``. A number is an optional minus sign that does not follow a
Latin letter, digit or ``-`` (so the ``-`` of ``3-5`` is a range, not a sign; CJK text may touch the number,
``答えは18です``), digits with optional thousands
separators (``,`` or the no-break / thin spaces U+00A0, U+2009, U+202F, in groups of exactly three; a comma followed by
exactly three digits is always a thousands separator), and an
optional decimal part (``.`` followed by digits; a comma followed by 1, 2 or 4+ digits is also read as a
decimal comma, ``3,5`` = 3.5). A trailing ``.`` (end of sentence) is not a decimal point. The value is a
``Decimal``, so ``18``, ``18.0`` and ``18,00`` are equal.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from langneurons.evaluation.tasks.items import uses_spaces

_SPACES = "\u00a0\u2009\u202f"  # NFKC makes these plain spaces: they become "_" first
_SEPARATORS = ",_"
_NUMBER = re.compile(
    r"(?:(?<![0-9A-Za-z\-])(?P<sign>-))?(?<![0-9])"
    r"(?P<int>\d{1,3}(?:[" + _SEPARATORS + r"]\d{3})+(?!\d)|\d+)"
    r"(?:(?P<point>[.,])(?P<frac>\d+))?"
)


def _strip_ends(text: str) -> str:
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in "PS":
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in "PS":
        end -= 1
    return text[start:end]


def normalize_answer(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed, punctuation and symbols stripped from both ends."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return _strip_ends(text).strip()


def answer_matches(output: str, gold: str, language: str, match: str = "prefix") -> bool:
    """Whether the greedy ``output`` matches ``gold`` (both normalised here; see the module docstring)."""
    out, want = normalize_answer(output), normalize_answer(gold)
    if not want:
        return False
    if match == "exact":
        return out == want
    if not out.startswith(want):
        return False
    if len(out) == len(want) or not uses_spaces(language):
        return True
    return not out[len(want)].isalnum()


def parse_number(text: str) -> Decimal | None:
    """The last number in ``text`` as a ``Decimal`` (``None`` when there is none); see the module docstring."""
    text = unicodedata.normalize("NFKC", text.translate({ord(c): "_" for c in _SPACES})).replace("\u2212", "-")
    found = None
    for found in _NUMBER.finditer(text):
        pass
    if found is None:
        return None
    integer = re.sub("[" + _SEPARATORS + "]", "", found.group("int"))
    frac, point = found.group("frac"), found.group("point")
    if frac is not None and point == "," and len(frac) == 3:  # "1234,567": one more thousands group
        integer, frac = integer + frac, None
    value = integer + (f".{frac}" if frac is not None else "")
    try:
        number = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern only lets digits through
        return None
    return -number if found.group("sign") else number


def numbers_equal(output: str, gold: str) -> bool:
    """The last number of ``output`` equals the number of ``gold`` (MGSM)."""
    got, want = parse_number(output), parse_number(gold)
    return got is not None and want is not None and got == want
