"""Corpus and prompt files: finding ``{lang}.txt`` / ``{lang}.jsonl`` files in a directory
(:func:`find_corpus_files`), hashing them, and opening them: plain, gzip, xz or bz2 (standard library), always
UTF-8; anything else is reported in one line naming the file, never skipped.

``{lang}.txt``, ``{lang}.txt.gz``, ``{lang}.jsonl.xz``, ``{lang}.txt.bz2`` ... all read the same way:
:func:`open_text` (a streaming text file), :func:`iter_lines` / :func:`raw_lines` (decoded lines with their
byte offsets, for streaming readers that hash as they go) and :func:`read_text`. A UTF-8 byte-order mark is
dropped; UTF-16 / UTF-32 text (a byte-order mark), bytes that are not UTF-8, a compression the standard library cannot read (zstd, lz4,
zip, ...) and a compressed file named as plain text are errors that name the file. Checksums
(:func:`text_sha256`) are of the decompressed bytes, so a corpus keeps its checksum when it is compressed.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import re
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from langneurons.errors import LangNeuronsError, LangNeuronsWarning

CORPUS_SUFFIXES = (".txt", ".jsonl")

#: compression suffix -> opener (standard library only)
COMPRESSIONS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}
#: compressions the standard library cannot read: suffix -> (name, how to decompress)
UNSUPPORTED = {".zst": ("zstd", "zstd -d"), ".zstd": ("zstd", "zstd -d"), ".lz4": ("lz4", "lz4 -d"),
               ".zip": ("zip", "unzip"), ".7z": ("7-Zip", "7z x"), ".br": ("brotli", "brotli -d"),
               ".lzma": ("lzma", "xz -d"), ".z": ("compress", "uncompress"), ".rar": ("rar", "unrar x"),
               ".tar": ("tar", "tar xf"), ".tgz": ("tar+gzip", "tar xzf")}
#: leading bytes of compressed data -> (name, suffix it should carry)
MAGIC = {b"\x1f\x8b": ("gzip", ".gz"), b"\xfd7zXZ\x00": ("xz", ".xz"), b"BZh": ("bzip2", ".bz2"),
         b"\x28\xb5\x2f\xfd": ("zstd", ".zst"), b"PK\x03\x04": ("zip", ".zip")}
_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
               b"\xfe\xff": "UTF-16"}
_READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error)


def split_name(path: str | Path) -> tuple[str, str, str]:
    """``zh.txt.gz`` -> ``("zh", ".txt", ".gz")``; ``en.jsonl`` -> ``("en", ".jsonl", "")``."""
    name = Path(path).name
    compression = ""
    lowered = name.lower()
    for suffix in (*COMPRESSIONS, *UNSUPPORTED):
        if lowered.endswith(suffix) and len(name) > len(suffix):
            compression, name = name[-len(suffix):].lower(), name[: -len(suffix)]
            break
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return name, "", compression
    return stem, f".{suffix}", compression


def text_suffix(path: str | Path) -> str:
    """The text format of a file, ``.txt`` or ``.jsonl``, whatever compression follows (``zh.jsonl.xz``: ``.jsonl``)."""
    return split_name(path)[1].lower()


def check_compression(path: str | Path, what: str = "corpus file") -> None:
    """Raise unless the standard library can decompress ``path`` (by its name)."""
    compression = split_name(path)[2]
    if compression in UNSUPPORTED:
        name, command = UNSUPPORTED[compression]
        raise LangNeuronsError(f"{what} {str(path)!r} is {name}-compressed, which langneurons cannot read; "
                               f"decompress it ({command}) or recompress it as .gz, .xz or .bz2")


def _open_binary(path: Path, what: str) -> tuple[IO[bytes], bytes]:
    """The decompressed bytes of ``path`` positioned after a UTF-8 byte-order mark, and the bytes skipped
    (checked as the module doc says)."""
    check_compression(path, what)
    compression = split_name(path)[2]
    try:
        handle: Any = COMPRESSIONS[compression](path, "rb") if compression else open(path, "rb")
        head = handle.peek(4)[:4] if hasattr(handle, "peek") else b""
    except _READ_ERRORS as exc:
        raise LangNeuronsError(f"cannot read {what} {str(path)!r}: {_reason(exc)}") from None
    problem = None
    if not compression:
        for magic, (name, suffix) in MAGIC.items():
            if head.startswith(magic):
                problem = (f"{what} {str(path)!r} is {name}-compressed data; name it {Path(path).name}{suffix} "
                           "(or decompress it)")
                break
    for bom, encoding in _OTHER_BOMS.items():  # UTF-32 before UTF-16: its mark starts the same way
        if problem is None and head.startswith(bom):
            problem = (f"{what} {str(path)!r} is {encoding} text; convert it to UTF-8 "
                       f"(e.g. iconv -f {encoding} -t UTF-8)")
    if problem is not None:
        handle.close()
        raise LangNeuronsError(problem)
    skipped = b""
    if head.startswith(_UTF8_BOM):
        skipped = handle.read(len(_UTF8_BOM))
    return handle, skipped


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__


def raw_lines(path: str | Path, what: str = "corpus file", hasher: Any = None) -> Iterator[tuple[bytes, int]]:
    """``(line bytes, byte offset)`` of the decompressed file, one line at a time (``hasher`` sees every byte).

    Only I/O and decompression errors are translated here; decoding is the caller's (see :func:`iter_lines`).
    """
    path = Path(path)
    handle, skipped = _open_binary(path, what)
    if hasher is not None:
        hasher.update(skipped)
    offset = len(skipped)
    try:
        with handle:
            while True:
                try:
                    raw = handle.readline()
                except _READ_ERRORS as exc:
                    raise LangNeuronsError(f"cannot read {what} {str(path)!r}: {_reason(exc)} "
                                           f"(after byte {offset})") from None
                if not raw:
                    return
                if hasher is not None:
                    hasher.update(raw)
                yield raw, offset
                offset += len(raw)
    except OSError as exc:  # closing a truncated stream
        raise LangNeuronsError(f"cannot read {what} {str(path)!r}: {_reason(exc)}") from None


def decode(raw: bytes, offset: int, path: str | Path, what: str = "corpus file") -> str:
    """``raw`` as UTF-8; a one-line error naming the file and the byte otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LangNeuronsError(f"{what} {str(path)!r} is not valid UTF-8 (byte {offset + exc.start}); convert it "
                               "to UTF-8 (e.g. iconv -f latin1 -t UTF-8)") from None


def iter_lines(path: str | Path, what: str = "corpus file", hasher: Any = None) -> Iterator[str]:
    """The lines of a text file as ``str.splitlines`` of its whole text gives them, read line by line."""
    for raw, offset in raw_lines(path, what, hasher):
        yield from decode(raw, offset, path, what).splitlines()


def read_text(path: str | Path, what: str = "corpus file") -> str:
    """The whole (decompressed, UTF-8) text of ``path``."""
    return open_text(path, what).read()


class TextFile:
    """A checked, streaming text file: iterating gives its lines (line ends kept), ``read()`` the whole text."""

    def __init__(self, path: str | Path, what: str = "corpus file") -> None:
        self.path, self.what = Path(path), what
        check_compression(self.path, what)

    def __iter__(self) -> Iterator[str]:
        for raw, offset in raw_lines(self.path, self.what):
            yield decode(raw, offset, self.path, self.what)

    def read(self) -> str:
        return "".join(self)

    def __enter__(self) -> "TextFile":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def open_text(path: str | Path, what: str = "corpus file") -> TextFile:
    """The one way langneurons opens a corpus or prompt file: plain / .gz / .xz / .bz2, UTF-8, checked.

    ``with open_text(path) as handle: for line in handle: ...`` streams it; ``open_text(path).read()`` is the
    whole text. Errors (see the module doc) are one line naming the file.
    """
    return TextFile(path, what)


def text_sha256(path: str | Path, what: str = "corpus file") -> str:
    """SHA-256 of the decompressed bytes (for a plain file: of the file, as ``sha256sum`` gives it)."""
    digest = hashlib.sha256()
    if not split_name(path)[2]:
        try:
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
        except OSError as exc:
            raise LangNeuronsError(f"cannot read {what} {str(path)!r}: {_reason(exc)}") from None
        return digest.hexdigest()
    for _ in raw_lines(path, what, digest):
        pass
    return digest.hexdigest()


#: What a language name usually looks like: an ISO 639 code with optional script / region / variant subtags
#: (en, yue, zh-Hans, pt_BR, eng_Latn, zh_hant). Other file names are still read, with a warning.
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def find_corpus_files(directory: str | Path, langs: list[str] | None = None,
                      suffixes: tuple[str, ...] = CORPUS_SUFFIXES, kind: str = "corpus") -> dict[str, Path]:
    """``{lang: file}`` for a directory of ``{lang}{suffix}`` files; languages from file names unless ``langs``.

    ``kind`` names the directory in errors (``corpus``, ``prompt``). Discovered names that do not look like
    language codes (:data:`LANGUAGE_TAG`, e.g. a ``refs.txt`` next to the languages) give a warning. Files may be
    compressed (``zh.txt.gz``, ``.xz``, ``.bz2``: :mod:`langneurons.data.files`); a compression that cannot be
    read is an error naming the file, never skipped.
    """
    root = Path(directory)
    if root.is_file():
        raise LangNeuronsError(f"{kind} {str(root)!r} is a file, expected a directory of "
                               + " or ".join(f"{{lang}}{suffix}" for suffix in suffixes) + " files")
    if not root.is_dir():
        raise LangNeuronsError(f"{kind} directory {str(root)!r} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        stem, suffix, _ = split_name(path)
        if path.is_file() and suffix in suffixes and not path.name.startswith("."):
            if stem in found:
                raise LangNeuronsError(f"{kind} directory {str(root)!r} has both {found[stem].name} and "
                                       f"{path.name}")
            found[stem] = path
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
        for path in found.values():
            check_compression(path, f"{kind} file")
        return found
    missing = [lang for lang in langs if lang not in found]
    if missing:
        raise LangNeuronsError(
            f"no {kind} file for language(s) {', '.join(missing)} in {str(root)!r} (found: {', '.join(found)})"
        )
    for lang in langs:
        check_compression(found[lang], f"{kind} file")
    return {lang: found[lang] for lang in langs}


def file_sha256(path: str | Path) -> str:
    """SHA-256 of the file's (decompressed) bytes."""
    return text_sha256(path)
