"""Task items, tasks, and how a continuation is joined to its prompt and tokenized.

A :class:`Task` is a list of independent :class:`TaskItem` (one prompt each, in one language) and a metric:

* ``choice``: multiple choice; each option is scored as a continuation of the prompt by its log-likelihood;
* ``first_token``: the gold answer's first token is the argmax of the next-token distribution after the prompt;
* ``greedy``: the greedy continuation, normalised, matches the normalised answer (:mod:`.answers`);
* ``numeric``: the last number of the greedy continuation equals the answer's number (MGSM).

Items are scored independently of each other (batching changes only the order of float additions), so a
task can be split into any parts (ranks, resumable chunks) and the parts' scores joined.

**The leading-space rule.** A continuation (option or answer) is appended to the prompt with one space
between them when the language is written with spaces between words, the prompt does not end in whitespace
and the continuation does not start with it; languages written without spaces (zh, ja, th, lo, km, my, bo,
...: :data:`NO_SPACE_LANGUAGES`) get none. ``Task.space`` overrides it (one bool, or one per language).

**Tokenization** follows lm-evaluation-harness: trailing spaces and tabs of the prompt move to the front of
the continuation (a BPE vocabulary has ``" Paris"``, and a prompt ending in a lone space token is unnatural;
a trailing newline stays in the prompt); the prompt is tokenized with the tokenizer's special tokens (a
Llama-style BOS), the whole text too, and the continuation's tokens are the whole text's tokens after the
prompt's. When the prompt's tokens are not a prefix of the whole's (a merge across the boundary), the
continuation is tokenized alone, without special tokens. An empty prompt is the BOS (or EOS) token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from langneurons.errors import LangNeuronsError

METRICS = ("choice", "first_token", "greedy", "numeric")
NORMALIZATIONS = ("sum", "token", "char")

#: Languages (ISO 639-1/3 codes, before any ``-script`` / ``_region`` suffix) written without spaces between words.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo", "dz", "yue", "wuu", "cmn", "jpn", "tha"})


def base_language(language: str) -> str:
    """``zh-hans`` / ``pt_BR`` -> ``zh`` / ``pt``."""
    return language.lower().replace("_", "-").split("-")[0]


def uses_spaces(language: str) -> bool:
    """Whether ``language`` is written with spaces between words (the default of the leading-space rule)."""
    return base_language(language) not in NO_SPACE_LANGUAGES


def join_continuation(prompt: str, continuation: str, space: bool) -> str:
    """``continuation`` as appended to ``prompt``: with a leading space when ``space`` and neither side has one."""
    if space and prompt and not prompt[-1].isspace() and continuation and not continuation[0].isspace():
        return " " + continuation
    return continuation


@dataclass(frozen=True)
class TaskItem:
    """One prompt in one language: ``options`` and the gold ``label`` (choice) or gold ``answers`` (any counts)."""

    id: str
    language: str
    prompt: str
    options: tuple[str, ...] = ()
    label: int | None = None
    answers: tuple[str, ...] = ()


@dataclass
class Task:
    """Items and how to score them (see the module docstring)."""

    name: str
    metric: str
    items: list[TaskItem]
    normalization: str = "char"
    space: bool | dict[str, bool] | None = None
    match: str = "prefix"
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ("\n",)
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def languages(self) -> list[str]:
        """Languages in order of first appearance."""
        return list(dict.fromkeys(item.language for item in self.items))

    def space_for(self, language: str) -> bool:
        if isinstance(self.space, bool):
            return self.space
        if isinstance(self.space, dict) and language in self.space:
            return bool(self.space[language])
        return uses_spaces(language)

    def by_language(self, language: str) -> list[TaskItem]:
        return [item for item in self.items if item.language == language]

    def select(self, langs: Sequence[str] | None = None, limit: int | None = None) -> Task:
        """The items of ``langs`` (in that order), at most ``limit`` per language."""
        if limit is not None and limit < 1:
            raise LangNeuronsError(f"--limit must be at least 1, got {limit}")
        have = self.languages
        wanted = list(langs) if langs else have
        missing = [lang for lang in wanted if lang not in have]
        if missing:
            raise LangNeuronsError(f"task {self.name!r} has no items in {', '.join(missing)} (has {', '.join(have)})")
        items = [item for lang in wanted for item in self.by_language(lang)[:limit]]
        return replace(self, items=items)

    def validate(self) -> Task:
        """Raise a one-line :class:`LangNeuronsError` for anything that cannot be scored."""
        if self.metric not in METRICS:
            raise LangNeuronsError(f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}")
        if self.normalization not in NORMALIZATIONS:
            raise LangNeuronsError(f"unknown normalization {self.normalization!r}; choose one of "
                                   f"{', '.join(NORMALIZATIONS)}")
        if self.match not in ("prefix", "exact"):
            raise LangNeuronsError(f"unknown match {self.match!r}; choose prefix or exact")
        if self.max_new_tokens < 1:
            raise LangNeuronsError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if not self.items:
            raise LangNeuronsError(f"task {self.name!r} has no items")
        seen: set[tuple[str, str]] = set()
        for item in self.items:
            key = (item.language, item.id)
            if key in seen:
                raise LangNeuronsError(f"task {self.name!r}: item id {item.id!r} appears twice in {item.language}")
            seen.add(key)
            if self.metric == "choice":
                if len(item.options) < 2:
                    raise LangNeuronsError(f"item {item.id!r} ({item.language}) needs at least 2 options")
                if item.label is None or not 0 <= item.label < len(item.options):
                    raise LangNeuronsError(f"item {item.id!r} ({item.language}) has no valid gold option")
                if any(not option.strip() for option in item.options):
                    raise LangNeuronsError(f"item {item.id!r} ({item.language}) has an empty option")
            elif not item.answers or any(not answer.strip() for answer in item.answers):
                raise LangNeuronsError(f"item {item.id!r} ({item.language}) has no answer")
        if self.metric == "numeric":
            from langneurons.evaluation.tasks.answers import parse_number

            for item in self.items:
                if parse_number(item.answers[0]) is None:
                    raise LangNeuronsError(f"item {item.id!r} ({item.language}): answer {item.answers[0]!r} "
                                           "is not a number")
        return self

    def describe(self) -> dict[str, Any]:
        """Provenance: name, metric, settings, item counts, source."""
        data: dict[str, Any] = {"name": self.name, "metric": self.metric,
                                "items": {lang: len(self.by_language(lang)) for lang in self.languages},
                                "space": {lang: self.space_for(lang) for lang in self.languages},
                                "source": self.source}
        if self.metric == "choice":
            data["normalization"] = self.normalization
        if self.metric in ("greedy", "numeric"):
            data.update(max_new_tokens=self.max_new_tokens, stop=list(self.stop), decoding="greedy")
        if self.metric == "greedy":
            data["match"] = self.match
        return data


def split_trailing_space(prompt: str, continuation: str) -> tuple[str, str]:
    """Move the prompt's trailing spaces and tabs to the front of the continuation (lm-evaluation-harness)."""
    stripped = prompt.rstrip(" \t")
    return stripped, prompt[len(stripped):] + continuation


def start_ids(tokenizer: Any) -> list[int]:
    from langneurons.evaluation.generation import start_token_id

    return [start_token_id(tokenizer)]


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """The prompt's token ids with special tokens (the BOS / EOS token for an empty prompt)."""
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"]) if prompt else []
    return ids or start_ids(tokenizer)


def encode_pair(tokenizer: Any, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(prompt_ids, continuation_ids)`` of ``prompt`` + ``continuation`` (already joined by the space rule)."""
    prompt, continuation = split_trailing_space(prompt, continuation)
    context = encode_prompt(tokenizer, prompt)
    whole = list(tokenizer(prompt + continuation, add_special_tokens=True)["input_ids"]) if prompt else []
    if prompt and whole[:len(context)] == context and len(whole) > len(context):
        tail = whole[len(context):]
    else:
        tail = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
    if not tail:
        raise LangNeuronsError(f"the continuation {continuation!r} tokenizes to nothing")
    return context, tail


def encode_options(tokenizer: Any, task: Task, item: TaskItem, texts: Iterable[str]
                   ) -> list[tuple[list[int], list[int]]]:
    """:func:`encode_pair` of each of ``texts`` after ``item.prompt`` under the task's space rule."""
    space = task.space_for(item.language)
    return [encode_pair(tokenizer, item.prompt, join_continuation(item.prompt, text, space)) for text in texts]
