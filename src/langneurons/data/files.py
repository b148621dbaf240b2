"""Finding the files of a corpus directory (``{lang}.txt`` / ``{lang}.jsonl``) and hashing them.

Shared by the packer (:mod:`langneurons.data.streaming`), its in-memory view (:mod:`langneurons.data.corpus`)
and parallel corpora (:mod:`langneurons.data.parallel`).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

from langneurons.errors import LangNeuronsError, LangNeuronsWarning

CORPUS_SUFFIXES = (".txt", ".jsonl")

#: What a language name usually looks like: an ISO 639 code with optional script / region / variant subtags
#: (en, yue, zh-Hans, pt_BR, eng_Latn, zh_hant). Other file names are still read, with a warning.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def find_corpus_files(directory: str | Path, langs: list[str] | None = None,
                      suffixes: tuple[str, ...] = CORPUS_SUFFIXES, kind: str = "corpus") -> dict[str, Path]:
    """``{lang: file}`` for a directory of ``{lang}{suffix}`` files; languages from file names unless ``langs``.

    ``kind`` names the directory in errors (``corpus``, ``prompt``). Discovered names that do not look like
    language codes (:data:`LANGUAGE_TAG`, e.g. a ``refs.txt`` next to the languages) give a warning.
    """
    root = Path(directory)
    if not root.is_dir():
        raise LangNeuronsError(f"{kind} directory {str(root)!r} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix in suffixes and not path.name.startswith("."):
            if path.stem in found:
                raise LangNeuronsError(f"{kind} directory {str(root)!r} has both {found[path.stem].name} and "
                                       f"{path.name}")
            found[path.stem] = path
    if not found:
        names = " or ".join(f"{{lang}}{suffix}" for suffix in suffixes)
        raise LangNeuronsError(f"{kind} directory {str(root)!r} has no {names} files")
    if langs is None:
        odd = [name for name in found if not LANGUAGE_TAG.fullmatch(name)]
        if odd:
            plural = len(odd) > 1
            warnings.warn(f"{kind} directory {str(root)!r}: {', '.join(found[name].name for name in odd)} "
                          f"{'are' if plural else 'is'} read as language{'s' if plural else ''} {', '.join(odd)}, "
                          f"which {'do' if plural else 'does'} not look like a language code; "
                          "choose the languages with --langs", LangNeuronsWarning, stacklevel=2)
        return found
    missing = [lang for lang in langs if lang not in found]
    if missing:
        raise LangNeuronsError(
            f"no {kind} file for language(s) {', '.join(missing)} in {str(root)!r} (found: {', '.join(found)})"
        )
    return {lang: found[lang] for lang in langs}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

