"""Task scoring under any intervention: multiple choice, first-token / greedy exact match, numbers.

    task = load_task("cloze", data="../shared/data", langs=["en", "zh"], limit=200)
    result = evaluate_task(loaded, task, ["normal", "deactivate:zh"], edit)   # rows x languages accuracy
    result.save("runs/cloze")                                                  # accuracy.csv, items.jsonl, meta.json

See ``docs/tasks.md``. :mod:`.items` (items, the leading-space rule, tokenization), :mod:`.answers`
(normalisation, numbers), :mod:`.scoring` (batched scoring), :mod:`.files` (TSV / JSONL task files),
:mod:`.loaders` (the data folder's sets, the Bible cloze), :mod:`.run` (conditions, tables, output),
:mod:`.lmeval` (lm-evaluation-harness bridge, optional).
"""

from langneurons.evaluation.tasks.answers import answer_matches, normalize_answer, numbers_equal, parse_number
from langneurons.evaluation.tasks.files import read_task_file
from langneurons.evaluation.tasks.items import (
    METRICS,
    NO_SPACE_LANGUAGES,
    Task,
    TaskItem,
    encode_pair,
    join_continuation,
    uses_spaces,
)
from langneurons.evaluation.tasks.loaders import (
    NAMED_TASKS,
    cloze_task,
    load_task,
    mgsm_task,
    mpararel_task,
    xquad_task,
)
from langneurons.evaluation.tasks.run import (
    TaskResult,
    evaluate_task,
    load_task_result,
    neuron_conditions,
    task_accuracy,
)
from langneurons.evaluation.tasks.scoring import ItemScore, score_items

__all__ = [
    "METRICS", "NAMED_TASKS", "NO_SPACE_LANGUAGES", "ItemScore", "Task", "TaskItem", "TaskResult", "answer_matches",
    "cloze_task", "encode_pair", "evaluate_task", "join_continuation", "load_task", "load_task_result", "mgsm_task",
    "mpararel_task", "neuron_conditions", "normalize_answer", "numbers_equal", "parse_number", "read_task_file",
    "score_items", "task_accuracy", "uses_spaces", "xquad_task",
]
