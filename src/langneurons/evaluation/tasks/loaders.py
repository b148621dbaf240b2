"""Tasks built from the data sets of the project's data folder (``../shared/data``; ``$LANGNEURONS_DATA``).

* ``cloze`` (:func:`cloze_task`): held-out aligned Bible verses; the prompt is the verse without its last word,
  the gold answer the last word. Multiple choice by default, against the last words of other held-out verses
  of the same language (drawn by one seeded sequence per verse, the same in every language, so the items
  stay aligned). This is the task
  the project's small models can do: a 9M-parameter model trained on the other verses cannot produce the exact
  next word often (first-token match is available as ``metric="first_token"`` and is near the floor), but it
  ranks the verse's own last word above a few random ones well above chance; see ``docs/tasks.md``.
  "Last word": the last whitespace-separated word, punctuation stripped from both ends; for a language
  written without spaces (zh, ja, ...) the last ``word_chars`` characters (default 2) before the final
  punctuation. Held out: the last ``heldout`` lines (default 1,000: the verses the bundled toy model never saw).
* ``mgsm`` (:func:`mgsm_task`): ``mgsm/mgsm_{lang}.tsv`` (question, number), ``numeric`` metric.
* ``xquad`` (:func:`xquad_task`): ``xquad/raw/xquad.{lang}.json``: context + question, greedy exact match against
  every gold answer text.
* ``mpararel`` (:func:`mpararel_task`): fact probing (Sharing Matters): per relation and language the first
  pattern that ends in ``[Y]`` (human-checked ones first), ``[X]`` filled with the subject, the object the
  answer; ``first_token`` metric. Item ids ``P36:Q227`` (relation, subject) align the languages.

Each loader raises a one-line :class:`LangNeuronsError` when its folder is absent.
"""

from __future__ import annotations

import json
import os
import random
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError
from langneurons.evaluation.tasks.items import Task, TaskItem, uses_spaces

DATA_ENV = "LANGNEURONS_DATA"
MGSM_TEMPLATE = "Question: {question}\nAnswer:"
XQUAD_TEMPLATE = "{context}\n\nQuestion: {question}\nAnswer:"


def data_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$LANGNEURONS_DATA``, else ``../shared/data`` (relative to the working directory)."""
    return Path(root or os.environ.get(DATA_ENV) or Path("..") / "shared" / "data")


def _folder(root: str | Path | None, name: str) -> Path:
    base = data_root(root)
    folder = base if base.name == name else base / name
    if not folder.is_dir():
        raise LangNeuronsError(f"data folder {str(folder)!r} not found (give --data DIR or set ${DATA_ENV})")
    return folder


def _languages(found: Sequence[str], langs: Sequence[str] | None, what: str) -> list[str]:
    if not found:
        raise LangNeuronsError(f"no {what} files found")
    if not langs:
        return sorted(found)
    missing = [lang for lang in langs if lang not in found]
    if missing:
        raise LangNeuronsError(f"{what} has no {', '.join(missing)} (has {', '.join(sorted(found))})")
    return list(langs)


def _strip(text: str) -> str:
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in "PSZ":
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in "PSZ":
        end -= 1
    return text[start:end]


def split_last_word(verse: str, language: str, word_chars: int = 2) -> tuple[str, str] | None:
    """``(prompt, last word)`` of a verse, or ``None`` when either would be empty (see the module docstring)."""
    core = _strip(verse)
    if uses_spaces(language):
        head, _, word = core.rpartition(" ")
        word, head = _strip(word), head.rstrip()
    else:
        word, head = core[-word_chars:], core[:-word_chars]
        word = word if _strip(word) == word else ""
    return (head, word) if head and word else None


def cloze_items(lines: dict[str, Sequence[str]], options: int = 4, seed: int = 0, metric: str = "choice",
                word_chars: int = 2, limit: int | None = None) -> list[TaskItem]:
    """Cloze items of aligned verses ``{lang: lines}`` (item id = line index; see the module docstring)."""
    if options < 2 and metric == "choice":
        raise LangNeuronsError(f"a cloze needs at least 2 options, got {options}")
    items = []
    for lang, verses in lines.items():
        split = [split_last_word(line, lang, word_chars) for line in verses]
        count = 0
        for index, parts in enumerate(split):
            if parts is None:
                continue
            prompt, gold = parts
            if metric != "choice":
                items.append(TaskItem(str(index), lang, prompt, answers=(gold,)))
            else:
                rng = random.Random(f"{seed}:{index}")  # depends on the verse only: the same draw in every language
                position = rng.randrange(options)  # first, so that it is the same in every language
                distractors: list[str] = []
                for _ in range(100 * options):
                    j = rng.randrange(len(split))
                    word = split[j][1] if split[j] and j != index else None
                    if word and word.casefold() != gold.casefold() and word not in distractors:
                        distractors.append(word)
                    if len(distractors) == options - 1:
                        break
                if len(distractors) < options - 1:
                    raise LangNeuronsError(f"cloze {lang}: not enough distinct last words for {options} options")
                choice = distractors[:position] + [gold] + distractors[position:]
                items.append(TaskItem(str(index), lang, prompt, tuple(choice), position))
            count += 1
            if limit and count >= limit:
                break
    return items


def cloze_task(root: str | Path | None = None, langs: Sequence[str] | None = None, limit: int | None = None,
               heldout: int = 1000, options: int = 4, seed: int = 0, metric: str = "choice", word_chars: int = 2,
               **settings: Any) -> Task:
    """Predict the last word of held-out aligned verses (``bible/{lang}.txt``); see the module docstring."""
    if options < 2 and metric == "choice":
        raise LangNeuronsError(f"a cloze needs at least 2 options, got {options}")
    folder = _folder(root, "bible")
    found = [p.stem for p in folder.glob("*.txt") if p.stem != "refs"]
    lines = {lang: (folder / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[-heldout:]
             for lang in _languages(found, langs, "bible")}
    items = cloze_items(lines, options, seed, metric, word_chars, limit)
    source = {"data": str(folder), "heldout_lines": heldout, "options": options, "seed": seed,
              "word_chars": word_chars}
    return Task("cloze", metric, items, source=source, **settings).validate()


def mgsm_task(root: str | Path | None = None, langs: Sequence[str] | None = None, limit: int | None = None,
              template: str = MGSM_TEMPLATE, **settings: Any) -> Task:
    """MGSM questions (``{question}`` in ``template``), numeric answers; ids are line numbers (aligned)."""
    folder = _folder(root, "mgsm")
    found = [p.stem.removeprefix("mgsm_") for p in folder.glob("mgsm_*.tsv")]
    items = []
    for lang in _languages(found, langs, "mgsm"):
        rows = (folder / f"mgsm_{lang}.tsv").read_text(encoding="utf-8").splitlines()
        for index, row in enumerate(rows[:limit]):
            question, _, answer = row.rpartition("\t")
            items.append(TaskItem(str(index), lang, template.format(question=question.strip()), answers=(answer,)))
    settings = {"max_new_tokens": 128, "stop": ("\n\n", "Question:"), **settings}
    return Task("mgsm", "numeric", items, source={"data": str(folder), "template": template}, **settings).validate()


def xquad_task(root: str | Path | None = None, langs: Sequence[str] | None = None, limit: int | None = None,
               template: str = XQUAD_TEMPLATE, **settings: Any) -> Task:
    """XQuAD questions with their paragraph, greedy exact match against every gold answer; ids are SQuAD ids."""
    folder = _folder(root, "xquad") / "raw"
    found = [p.stem.removeprefix("xquad.") for p in folder.glob("xquad.*.json")]
    items = []
    for lang in _languages(found, langs, "xquad"):
        data = json.loads((folder / f"xquad.{lang}.json").read_text(encoding="utf-8"))
        mine = []
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"] if a["text"].strip()))
                    prompt = template.format(context=paragraph["context"], question=qa["question"])
                    mine.append(TaskItem(qa["id"], lang, prompt, answers=answers))
        items.extend(mine[:limit])
    settings = {"max_new_tokens": 32, "stop": ("\n",), **settings}
    return Task("xquad", "greedy", items, source={"data": str(folder), "template": template}, **settings).validate()


def _pattern(path: Path) -> str | None:
    patterns = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    patterns.sort(key=lambda p: not p.get("checked-by-human", False))  # stable: human-checked first
    for entry in patterns:
        text = entry["pattern"]
        if "[X]" in text and text.count("[Y]") == 1 and not _strip(text[text.index("[Y]") + 3:]):
            return text
    return None


def mpararel_task(root: str | Path | None = None, langs: Sequence[str] | None = None, limit: int | None = None,
                  relations: Sequence[str] | None = None, **settings: Any) -> Task:
    """Fact probing from mParaRel (see the module docstring); ``limit`` caps the items per language."""
    folder = _folder(root, "mpararel")
    found = [p.name for p in (folder / "patterns").iterdir() if p.is_dir()] if (folder / "patterns").is_dir() else []
    items = []
    for lang in _languages(found, langs, "mpararel patterns"):
        files = sorted((folder / "patterns" / lang).glob("P*.jsonl"))
        mine = []
        for path in files:
            if relations and path.stem not in relations:
                continue
            pattern, tuples = _pattern(path), folder / "tuples" / lang / path.name
            if pattern is None or not tuples.is_file():
                continue
            prompt_part = pattern[:pattern.index("[Y]")].rstrip(" \t")
            for line in tuples.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                fact = json.loads(line)
                if fact["sub_label"].strip() and fact["obj_label"].strip():
                    mine.append(TaskItem(f"{path.stem}:{fact['sub_uri']}", lang,
                                         prompt_part.replace("[X]", fact["sub_label"]), answers=(fact["obj_label"],)))
        items.extend(list({item.id: item for item in mine}.values())[:limit])
    return Task("mpararel", "first_token", items, source={"data": str(folder), "relations": list(relations or [])},
                **settings).validate()


#: Named tasks for ``langneurons task --task NAME``.
NAMED_TASKS = {"cloze": cloze_task, "mgsm": mgsm_task, "xquad": xquad_task, "mpararel": mpararel_task}


def load_task(name_or_path: str | Path, data: str | Path | None = None, langs: Sequence[str] | None = None,
              limit: int | None = None, metric: str | None = None, **settings: Any) -> Task:
    """A task file (``.jsonl`` / ``.tsv``) or a named task of :data:`NAMED_TASKS` read from ``data``."""
    from langneurons.evaluation.tasks.files import read_task_file

    text = str(name_or_path)
    if text in NAMED_TASKS:
        kwargs = dict(settings)
        if metric is not None:
            if text != "cloze":
                raise LangNeuronsError(f"task {text!r} has a fixed metric; --metric applies to cloze and task files")
            kwargs["metric"] = metric
        return NAMED_TASKS[text](data, langs=langs, limit=limit, **kwargs)
    if Path(text).suffix in (".jsonl", ".tsv", ".tab") or Path(text).exists():
        return read_task_file(text, metric=metric, **settings).select(langs, limit)
    raise LangNeuronsError(f"unknown task {text!r}: give a .jsonl / .tsv file or one of {', '.join(NAMED_TASKS)}")
