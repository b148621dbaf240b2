"""Language identification of generated text, with interchangeable off-line libraries.

Three PyPI libraries that ship their models and run without network access are wrapped behind one
interface, :class:`LanguageIdentifier` (``detect(text) -> code | None``), and their codes are mapped
to the project's ISO 639-1 codes (``zh`` is Simplified Chinese):

- ``langdetect`` (the LAPE paper's choice, Table 4): a port of Google's language-detection, 55
  languages; ``zh-cn`` -> ``zh``, ``zh-tw`` stays ``zh-tw`` (Traditional, not counted as ``zh``).
  Seeded (``DetectorFactory.seed = 0``) so that a text always gets the same answer.
- ``lingua`` (``lingua-language-detector``): 75 languages, n-gram models up to 5-grams; no script
  distinction for Chinese (``zh``).
- ``py3langid``: langid.py's naive Bayes model, 97 languages.
- ``cld3`` (``cld3-py``, optional: ``pip install cld3-py``): Google's Compact Language Detector 3, the
  classifier Zhao et al. 2024 use to label logit-lens tokens (appendix A); ~107 languages.

Every backend also gives a confidence: :meth:`LanguageIdentifier.detect_with_confidence` returns
``(code | None, probability)`` (langdetect's and lingua's top probability, py3langid's normalised
probability, cld3's probability), and :meth:`LanguageIdentifier.detect_confident` keeps a label only when it is
reliable: probability ``>= min_confidence`` (default 0.7, cld3's own reliability threshold) and, for cld3,
its ``is_reliable`` flag.

Text without any letter (empty, digits, punctuation) is ``None`` for every backend. The comparison
on held-out Bible verses that chose the default is in ``docs/language_id.md``; rerun it with
``python -m langneurons.evaluation.langid ../shared/data/bible``.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from langneurons.errors import LangNeuronsError

#: The library used when none is named (see docs/language_id.md for the comparison).
DEFAULT_LANGID = "langdetect"

#: Backend name -> PyPI distribution that provides it.
DISTRIBUTIONS = {"langdetect": "langdetect", "lingua": "lingua-language-detector", "py3langid": "py3langid",
                 "cld3": "cld3-py"}
#: cld3's reliability threshold (``kReliabilityThreshold``), the default of :meth:`LanguageIdentifier.detect_confident`
RELIABLE_PROBABILITY = 0.7

#: Library code -> project code, where they differ.
CODE_MAP = {"zh-cn": "zh", "zh-tw": "zh-tw", "zh-hans": "zh", "zh-hant": "zh-tw", "iw": "he", "jw": "jv"}


def normalize_code(code: str | None) -> str | None:
    """A library's language code as the project's code (lower-case ISO 639-1, ``zh`` = Simplified)."""
    if code is None:
        return None
    code = code.strip().lower().replace("_", "-")
    return CODE_MAP.get(code, code) or None


def has_letters(text: str) -> bool:
    """Whether ``text`` contains at least one alphabetic character (otherwise no language is detected)."""
    return any(ch.isalpha() for ch in text)


@dataclass
class LanguageIdentifier:
    """One language-identification backend: ``detect(text)`` returns a project code or ``None``."""

    name: str
    version: str
    _detect: Callable[[str], str | None] = field(repr=False)
    #: ``text -> (library code | None, probability, reliable)``; ``None`` when the backend has none
    _confidence: Callable[[str], tuple[str | None, float, bool]] | None = field(default=None, repr=False)

    def detect(self, text: str) -> str | None:
        """The language of ``text`` (``None`` when it has no letters or the library cannot tell)."""
        if not text or not has_letters(text):
            return None
        return normalize_code(self._detect(text))

    def detect_with_confidence(self, text: str) -> tuple[str | None, float]:
        """``(code, probability)`` of the most likely language (``(None, 0.0)`` without letters)."""
        code, probability, _ = self._scored(text)
        return code, probability

    def detect_confident(self, text: str, min_confidence: float = RELIABLE_PROBABILITY) -> str | None:
        """The language of ``text`` when the identifier is confident (probability ``>= min_confidence`` and,
        where the backend says so, reliable), else ``None`` (a "non-word" in Zhao et al.'s appendix A)."""
        code, probability, reliable = self._scored(text)
        return code if code is not None and reliable and probability >= min_confidence else None

    def _scored(self, text: str) -> tuple[str | None, float, bool]:
        if not text or not has_letters(text):
            return None, 0.0, False
        if self._confidence is None:
            raise LangNeuronsError(f"language identifier {self.name!r} gives no confidence")
        code, probability, reliable = self._confidence(text)
        return normalize_code(code), float(probability), bool(reliable)

    def detect_many(self, texts: Sequence[str]) -> list[str | None]:
        """:meth:`detect` of every text, in order."""
        return [self.detect(text) for text in texts]

    def describe(self) -> dict[str, str]:
        """Provenance for artefacts: library name, PyPI distribution and version."""
        return {"name": self.name, "distribution": DISTRIBUTIONS.get(self.name), "version": self.version}


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(DISTRIBUTIONS[name])
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _missing(name: str) -> LangNeuronsError:
    return LangNeuronsError(
        f"language identifier {name!r} is not installed: pip install {DISTRIBUTIONS[name]}"
    )


def _langdetect() -> Callable[[str], str | None]:
    try:
        from langdetect import DetectorFactory, detector_factory
        from langdetect.lang_detect_exception import LangDetectException
    except ImportError:
        raise _missing("langdetect") from None
    DetectorFactory.seed = 0  # deterministic: the same text always gets the same answer
    detector_factory.init_factory()

    def detect(text: str) -> str | None:
        try:
            detector = detector_factory._factory.create()
            detector.append(text)
            return detector.detect()
        except LangDetectException:
            return None

    return detect


def _lingua() -> Callable[[str], str | None]:
    try:
        from lingua import LanguageDetectorBuilder
    except ImportError:
        raise _missing("lingua") from None
    detector = LanguageDetectorBuilder.from_all_languages().build()

    def detect(text: str) -> str | None:
        language = detector.detect_language_of(text)
        return None if language is None else language.iso_code_639_1.name

    return detect


def _py3langid() -> Callable[[str], str | None]:
    try:
        import py3langid
    except ImportError:
        raise _missing("py3langid") from None

    def detect(text: str) -> str | None:
        return py3langid.classify(text)[0]

    return detect


def _langdetect_confidence() -> Callable[[str], tuple[str | None, float, bool]]:
    from langdetect import detector_factory
    from langdetect.lang_detect_exception import LangDetectException

    _langdetect()  # seeded, factory loaded

    def confidence(text: str) -> tuple[str | None, float, bool]:
        try:
            detector = detector_factory._factory.create()
            detector.append(text)
            best = detector.get_probabilities()[0]
        except (LangDetectException, IndexError):
            return None, 0.0, False
        return best.lang, float(best.prob), True

    return confidence


def _lingua_confidence() -> Callable[[str], tuple[str | None, float, bool]]:
    from lingua import LanguageDetectorBuilder

    detector = LanguageDetectorBuilder.from_all_languages().build()

    def confidence(text: str) -> tuple[str | None, float, bool]:
        values = detector.compute_language_confidence_values(text)
        if not values:
            return None, 0.0, False
        return values[0].language.iso_code_639_1.name, float(values[0].value), True

    return confidence


def _py3langid_confidence() -> Callable[[str], tuple[str | None, float, bool]]:
    from py3langid import langid

    identifier = langid.LanguageIdentifier.from_pickled_model(langid.MODEL_FILE, norm_probs=True) if hasattr(
        langid.LanguageIdentifier, "from_pickled_model") else langid.LanguageIdentifier.from_modelpath(
        langid.MODEL_DIR / langid.MODEL_FILE, norm_probs=True)

    def confidence(text: str) -> tuple[str | None, float, bool]:
        code, probability = identifier.classify(text)
        return code, float(probability), True

    return confidence


def _cld3_model():
    try:
        import gcld3
    except ImportError:
        raise _missing("cld3") from None
    return gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)


def _cld3() -> Callable[[str], str | None]:
    model = _cld3_model()

    def detect(text: str) -> str | None:
        result = model.FindLanguage(text=text)
        return None if result.language in ("und", "") else result.language

    return detect


def _cld3_confidence() -> Callable[[str], tuple[str | None, float, bool]]:
    model = _cld3_model()

    def confidence(text: str) -> tuple[str | None, float, bool]:
        result = model.FindLanguage(text=text)
        if result.language in ("und", ""):
            return None, 0.0, False
        return result.language, float(result.probability), bool(result.is_reliable)

    return confidence


_FACTORIES: dict[str, Callable[[], Callable[[str], str | None]]] = {
    "langdetect": _langdetect, "lingua": _lingua, "py3langid": _py3langid, "cld3": _cld3,
}
_CONFIDENCE_FACTORIES: dict[str, Callable[[], Callable[[str], tuple[str | None, float, bool]]]] = {
    "langdetect": _langdetect_confidence, "lingua": _lingua_confidence, "py3langid": _py3langid_confidence,
    "cld3": _cld3_confidence,
}
_CACHE: dict[str, LanguageIdentifier] = {}


def available_identifiers() -> list[str]:
    """Names accepted by :func:`get_identifier` (installed or not)."""
    return list(_FACTORIES)


def get_identifier(name: str | None = None) -> LanguageIdentifier:
    """The identifier called ``name`` (default :data:`DEFAULT_LANGID`), built once per process."""
    name = name or DEFAULT_LANGID
    if name not in _FACTORIES:
        raise LangNeuronsError(f"unknown language identifier {name!r}; choose one of {', '.join(_FACTORIES)}")
    if name not in _CACHE:
        _CACHE[name] = LanguageIdentifier(name, _version(name), _FACTORIES[name](), _CONFIDENCE_FACTORIES[name]())
    return _CACHE[name]


def detect_language(text: str, identifier: str | LanguageIdentifier | None = None) -> str | None:
    """Shortcut: the project code of ``text``'s language with the default (or named) identifier."""
    if not isinstance(identifier, LanguageIdentifier):
        identifier = get_identifier(identifier)
    return identifier.detect(text)


# -- comparison on held-out text ------------------------------------------------------------------

@dataclass
class IdentifierScore:
    """Accuracy of one identifier per language on held-out text, and its speed."""

    name: str
    version: str
    accuracy: dict[str, float]
    confusions: dict[str, dict[str, int]]
    texts: int
    load_seconds: float
    seconds: float

    @property
    def mean_accuracy(self) -> float:
        return sum(self.accuracy.values()) / len(self.accuracy)

    @property
    def texts_per_second(self) -> float:
        return self.texts / self.seconds if self.seconds else float("inf")


def held_out_sample(directory: str | Path, langs: Sequence[str], per_language: int = 500,
                    max_chars: int | None = None) -> dict[str, list[str]]:
    """Every ``k``-th line of each ``{lang}.txt`` (evenly spaced, deterministic), ``per_language`` lines.

    With ``max_chars`` each line is cut to its first ``max_chars`` characters (short generations).
    """
    root = Path(directory)
    sample: dict[str, list[str]] = {}
    for lang in langs:
        path = root / f"{lang}.txt"
        if not path.is_file():
            raise LangNeuronsError(f"no file {str(path)!r}")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line[:max_chars] if max_chars else line for line in lines if line]
        step = max(1, len(lines) // per_language)
        sample[lang] = lines[::step][:per_language]
    return sample


def compare_identifiers(texts_by_lang: dict[str, list[str]], names: Sequence[str] | None = None
                        ) -> list[IdentifierScore]:
    """Accuracy (share of texts whose detected code equals the file's language) and speed of each identifier."""
    scores = []
    for name in names or available_identifiers():
        start = time.perf_counter()
        identifier = get_identifier(name)
        identifier.detect("warm up the models, load everything lazily loaded")
        load = time.perf_counter() - start
        accuracy, confusions, total, seconds = {}, {}, 0, 0.0
        for lang, texts in texts_by_lang.items():
            start = time.perf_counter()
            found = identifier.detect_many(texts)
            seconds += time.perf_counter() - start
            total += len(texts)
            accuracy[lang] = sum(code == lang for code in found) / len(texts)
            counts: dict[str, int] = {}
            for code in found:
                if code != lang:
                    counts[str(code)] = counts.get(str(code), 0) + 1
            confusions[lang] = dict(sorted(counts.items(), key=lambda item: -item[1]))
        scores.append(IdentifierScore(name, identifier.version, accuracy, confusions, total, load, seconds))
    return scores


def format_comparison(scores: list[IdentifierScore]) -> str:
    """A Markdown table: one row per identifier, accuracy per language, mean, texts per second."""
    langs = list(scores[0].accuracy)
    head = "| identifier | " + " | ".join(langs) + " | mean | texts/s | load s |"
    lines = [head, "|" + "---|" * (len(langs) + 4)]
    for score in scores:
        cells = " | ".join(f"{score.accuracy[lang]:.3f}" for lang in langs)
        lines.append(f"| {score.name} {score.version} | {cells} | {score.mean_accuracy:.3f} | "
                     f"{score.texts_per_second:.0f} | {score.load_seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - a measurement script
    import argparse

    parser = argparse.ArgumentParser(description="Compare the language identifiers on held-out text.")
    parser.add_argument("directory", help="folder of {lang}.txt files, one text per line (e.g. ../shared/data/bible)")
    parser.add_argument("--langs", default="en,zh,fr,es,vi,id,ja,de,ru,ar")
    parser.add_argument("--per-language", type=int, default=500)
    parser.add_argument("--max-chars", type=int, default=None, help="cut every text to this many characters")
    parser.add_argument("--identifiers", default="langdetect,py3langid,lingua")
    args = parser.parse_args(argv)
    sample = held_out_sample(args.directory, args.langs.split(","), args.per_language, args.max_chars)
    scores = compare_identifiers(sample, args.identifiers.split(","))
    print(format_comparison(scores))
    for score in scores:
        worst = {lang: conf for lang, conf in score.confusions.items() if conf}
        print(f"{score.name} errors: " + "; ".join(f"{lang}->{dict(list(c.items())[:3])}" for lang, c in worst.items()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
