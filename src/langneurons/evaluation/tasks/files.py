"""Local task files: JSONL (one object per line) or TSV (a header row, then one item per row).

Fields / columns (names case-sensitive):

* ``prompt`` (or ``question``): the text the model continues;
* ``language`` (or ``lang``): the item's language code (or ``language=`` given to :func:`read_task_file`);
* multiple choice: ``options`` (a JSON list; in TSV, the columns whose names start with ``option``, in header
  order, empty cells skipped) and the gold ``label`` (0-based index) or an ``answer`` equal to one option;
* exact match: ``answer``: a string, a number, or (JSONL) a list of acceptable strings;
* ``id`` (optional): the item's id, the same for the translations of one item (default: its line number).

In TSV cells, ``\\n`` and ``\\t`` stand for a newline and a tab. The metric is ``choice`` when the file has
options, else ``greedy``, unless given.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError
from langneurons.evaluation.tasks.items import Task, TaskItem


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _item(record: dict[str, Any], where: str, index: int, language: str | None) -> TaskItem:
    prompt = record.get("prompt", record.get("question"))
    if not isinstance(prompt, str):
        raise LangNeuronsError(f"{where}: no 'prompt' (or 'question') text")
    lang = record.get("language", record.get("lang", language))
    if not isinstance(lang, str) or not lang:
        raise LangNeuronsError(f"{where}: no 'language' (or 'lang'), and no default language given")
    options = record.get("options") or ()
    if not isinstance(options, (list, tuple)) or any(not isinstance(o, str) for o in options):
        raise LangNeuronsError(f"{where}: 'options' must be a list of strings")
    answer = record.get("answer")
    label = record.get("label")
    answers: tuple[str, ...] = ()
    if answer is not None:
        answers = tuple(str(a) for a in answer) if isinstance(answer, list) else (str(answer),)
    if options:
        if label is None or label == "":
            if len(answers) != 1 or answers[0] not in options:
                raise LangNeuronsError(f"{where}: give 'label' (0-based) or an 'answer' equal to one of the options")
            label = list(options).index(answers[0])
        try:
            label = int(label)
        except (TypeError, ValueError):
            raise LangNeuronsError(f"{where}: 'label' must be an integer, got {label!r}") from None
    item_id = record.get("id")
    return TaskItem(str(index) if item_id in (None, "") else str(item_id), lang, prompt, tuple(options),
                    label if options else None, answers)


def _jsonl_records(path: Path) -> list[tuple[int, dict]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LangNeuronsError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LangNeuronsError(f"{path}:{number}: each line must be a JSON object")
        records.append((number, record))
    return records


def _tsv_records(path: Path) -> list[tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows:
        raise LangNeuronsError(f"{path}: empty")
    header = rows[0]
    if "prompt" not in header and "question" not in header:
        raise LangNeuronsError(f"{path}: the first row must be a header with a 'prompt' (or 'question') column")
    option_columns = [i for i, name in enumerate(header) if name.startswith("option")]
    records = []
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise LangNeuronsError(f"{path}:{number}: {len(row)} cells, the header has {len(header)}")
        record: dict[str, Any] = {name: _unescape(cell) for name, cell in zip(header, row)
                                  if not name.startswith("option")}
        options = [_unescape(row[i]) for i in option_columns if row[i] != ""]
        if options:
            record["options"] = options
        for key in ("answer", "label", "id"):
            if record.get(key) == "":
                record.pop(key)
        records.append((number, record))
    return records


def read_task_file(path: str | Path, metric: str | None = None, name: str | None = None,
                   language: str | None = None, **settings: Any) -> Task:
    """A :class:`Task` from a ``.jsonl`` or ``.tsv`` file (see the module docstring); ``settings`` go to the Task."""
    path = Path(path)
    if not path.is_file():
        raise LangNeuronsError(f"task file {str(path)!r} does not exist")
    try:
        if path.suffix == ".jsonl":
            records = _jsonl_records(path)
        elif path.suffix in (".tsv", ".tab"):
            records = _tsv_records(path)
        else:
            raise LangNeuronsError(f"task file {str(path)!r} must end in .jsonl or .tsv")
    except UnicodeDecodeError as exc:
        raise LangNeuronsError(f"task file {str(path)!r} is not valid UTF-8 (byte {exc.start})") from None
    items = [_item(record, f"{path}:{number}", number, language) for number, record in records]
    if not items:
        raise LangNeuronsError(f"task file {str(path)!r} has no items")
    if metric is None:
        metric = "choice" if any(item.options for item in items) else "greedy"
    task = Task(name or path.stem, metric, items, source={"path": str(path)}, **settings)
    return task.validate()
