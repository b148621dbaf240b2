"""The aligned items of a Sharing Matters run: K translations of each item, their tokens, and (with a task) the
task that scores them and the first token of each gold answer.

Three sources, one :class:`SharingItems`:

* a parallel corpus and a template, no task: the prompts are the template filled with each line; they are
  tokenized **as written** (:func:`~langneurons.data.parallel.tokenize_parallel`: no special tokens, a BOS
  only with ``add_bos``). Nothing has a gold answer.
* a parallel corpus and a task built from it (``task="cloze"``: the line without its last word, the last word
  the gold answer among 3 other lines' last words, the rules of :func:`~langneurons.evaluation.tasks.
  loaders.cloze_items`; ``"choice"`` / ``"first_token"`` / ``"greedy"``: from the JSONL fields ``answer``
  (or ``options`` and ``label``), read like template fields);
* a loaded :class:`~langneurons.evaluation.tasks.Task` (``mpararel``, a task file, ...): the items whose id
  exists in every language (in the first language's order).

With a task, the template is applied to each task prompt and the prompt is tokenized **exactly as the task
scorer tokenizes it** (:func:`~langneurons.evaluation.tasks.items.encode_prompt`: the tokenizer's special
tokens, e.g. a Llama BOS, and trailing spaces moved to the continuation), so that the neuron types are those
of the forward pass that the interventions act on; a BOS the tokenizer adds is left out of the
every-token count. The gold token ``r`` of an item and language is the first token of the gold option /
first answer as the scorer appends it to the prompt; an answer that tokenizes to nothing is a one-line error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch

from langneurons.data.parallel import ParallelCorpus, TokenizedParallel, tokenize_parallel, tokenizer_ids
from langneurons.data.templates import Template, as_template, field_value, render_item
from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.evaluation.tasks.items import Task, TaskItem, encode_options, encode_prompt, split_trailing_space

#: task kinds built from a parallel corpus (any other name is loaded with load_task)
CORPUS_TASKS = ("cloze", "choice", "first_token", "greedy")


@dataclass
class SharingItems:
    """``prompts[lang][i]`` of the aligned items ``ids``; their tokens; the task and gold tokens when scored."""

    languages: list[str]
    ids: list[str]
    prompts: dict[str, list[str]]
    tokenized: TokenizedParallel
    template: Template
    task: Task | None = None
    gold: torch.Tensor | None = None  # long[K, N]: first token of each gold answer
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.ids)

    def index_of(self) -> dict[str, int]:
        """``{item id: item index}``."""
        return {item_id: i for i, item_id in enumerate(self.ids)}

    def describe(self) -> dict[str, Any]:
        data = {"languages": self.languages, "items": self.num_items, **self.template.describe(),
                "tokenization": ("as the task scorer (special tokens)" if self.task is not None
                                 else "as written (no special tokens)"),
                "inputs": self.tokenized.describe(), "source": self.source}
        if self.task is not None:
            data["task"] = self.task.describe()
        return data


def _check_languages(languages: Sequence[str]) -> None:
    if len(languages) < 2:
        raise LangNeuronsError(f"neuron types compare languages: give at least 2, got {list(languages)}")


@dataclass
class ItemsPlan:
    """The rendered prompts of a run before tokenization (every input error is raised while planning, before
    a model is loaded): ``prompts[lang][i]`` of items ``ids``, and the aligned task when there is one."""

    languages: list[str]
    ids: list[str]
    prompts: dict[str, list[str]]
    template: Template
    task: Task | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def tokenize(self, tokenizer: Any, max_length: int | None = 512, add_bos: bool = False) -> SharingItems:
        """:class:`SharingItems`: as written without a task (a BOS with ``add_bos``), as the scorer with one."""
        if self.task is None:
            rendered = ParallelCorpus(self.prompts, {}, self.source)
            tokenized = tokenize_parallel(rendered, tokenizer, max_length, keep="end", add_bos=add_bos)
            return SharingItems(self.languages, self.ids, self.prompts, tokenized, self.template, source=self.source)
        return _tokenize_task(self, tokenizer, max_length)


def plan_corpus(corpus: ParallelCorpus, template: str | Template | None = None, limit: int | None = None
                ) -> ItemsPlan:
    """Items of a parallel corpus without a task: the template filled with each line."""
    template = as_template(template)
    _check_languages(corpus.languages)
    if limit is not None:
        corpus = corpus.select(items=limit)
    prompts = {lang: [render_item(template, text, corpus.fields, i, lang) for i, text in enumerate(corpus.texts(lang))]
               for lang in corpus.languages}
    return ItemsPlan(corpus.languages, [str(i) for i in range(corpus.num_items)], prompts, template,
                     source=corpus.provenance())


def corpus_task(corpus: ParallelCorpus, kind: str, **settings: Any) -> Task:
    """A task built from a parallel corpus's lines and fields (``kind`` in :data:`CORPUS_TASKS`)."""
    from langneurons.evaluation.tasks.loaders import cloze_items

    if kind == "cloze":
        options = settings.pop("options", 4)
        seed = settings.pop("seed", 0)
        metric = settings.pop("metric", None) or "choice"
        items = cloze_items({lang: corpus.texts(lang) for lang in corpus.languages}, options, seed, metric)
        source = {"corpus": corpus.provenance(), "options": options, "seed": seed}
        return Task("cloze", metric, items, source=source, **settings).validate()
    if kind not in CORPUS_TASKS:
        raise LangNeuronsError(f"unknown corpus task {kind!r}; choose one of {', '.join(CORPUS_TASKS)}")
    metric = settings.pop("metric", None)
    if metric is not None and metric != kind:
        raise LangNeuronsError(f"task {kind!r} is scored by {kind!r}; --metric applies to the cloze")
    items = []
    for lang in corpus.languages:
        for i, text in enumerate(corpus.texts(lang)):
            if kind == "choice":
                options = field_value(corpus.fields, "options", i, lang)
                label = field_value(corpus.fields, "label", i, lang)
                if not isinstance(options, (list, tuple)) or not isinstance(label, int):
                    raise LangNeuronsError(f"item {i} ({lang}): 'options' must be a list and 'label' an integer")
                items.append(TaskItem(str(i), lang, text, tuple(str(o) for o in options), label))
            else:
                answer = field_value(corpus.fields, "answer", i, lang)
                answers = tuple(str(a) for a in answer) if isinstance(answer, (list, tuple)) else (str(answer),)
                items.append(TaskItem(str(i), lang, text, answers=answers))
    return Task(kind, kind, items, source={"corpus": corpus.provenance()}, **settings).validate()


def aligned_task(task: Task, langs: Sequence[str] | None = None) -> tuple[Task, list[str]]:
    """The task restricted to the items whose id exists in every language; the ids in the first language's order."""
    task = task.select(langs) if langs else task
    languages = task.languages
    _check_languages(languages)
    present = [{item.id for item in task.by_language(lang)} for lang in languages]
    ids = [item.id for item in task.by_language(languages[0]) if all(item.id in p for p in present)]
    if not ids:
        raise LangNeuronsError(f"task {task.name!r} has no item id present in every language ({', '.join(languages)})")
    keep = set(ids)
    order = {item_id: i for i, item_id in enumerate(ids)}
    items = sorted((item for item in task.items if item.id in keep),
                   key=lambda item: (languages.index(item.language), order[item.id]))
    return replace(task, items=items), ids


def _gold_text(item: TaskItem) -> str:
    return item.options[item.label] if item.options else item.answers[0]


def plan_task(task: Task, template: str | Template | None = None, langs: Sequence[str] | None = None,
              limit: int | None = None) -> ItemsPlan:
    """Items of a task, aligned across its languages, each prompt wrapped in the template (``{text}`` only)."""
    template = as_template(template)
    task, ids = aligned_task(task, langs)
    if limit is not None:
        if limit < 1:
            raise LangNeuronsError(f"--limit must be at least 1, got {limit}")
        keep = set(ids[:limit])
        ids = ids[:limit]
        task = replace(task, items=[item for item in task.items if item.id in keep])
    if not template.verbatim:  # the template wraps each task prompt ({text}); a task has no other fields
        others = [name for name in template.fields if name != "text"]
        if others:
            raise LangNeuronsError(f"template field {{{others[0]}}} has no data: task {task.name!r} gives only {{text}}")
        task = replace(task, items=[replace(item, prompt=template.render({"text": item.prompt}))
                                    for item in task.items])
    by_key = {(item.language, item.id): item for item in task.items}
    prompts = {lang: [by_key[(lang, item_id)].prompt for item_id in ids] for lang in task.languages}
    return ItemsPlan(task.languages, ids, prompts, template, task, source=dict(task.source))


def _tokenize_task(plan: ItemsPlan, tokenizer: Any, max_length: int | None) -> SharingItems:
    """Prompts tokenized as the scorer tokenizes them, and the first token of every gold answer."""
    task, ids, languages = plan.task, plan.ids, plan.languages
    by_key = {(item.language, item.id): item for item in task.items}
    bos, _, pad = tokenizer_ids(tokenizer)
    adds_bos = bos is not None and encode_prompt(tokenizer, "a")[:1] == [bos] and \
        list(tokenizer("a", add_special_tokens=False)["input_ids"])[:1] != [bos]
    rows: dict[str, list[list[int]]] = {}
    gold = torch.zeros(len(languages), len(ids), dtype=torch.long)
    cut = 0
    for k, lang in enumerate(languages):
        rows[lang] = []
        for i, item_id in enumerate(ids):
            item = by_key[(lang, item_id)]
            ids_row = encode_prompt(tokenizer, split_trailing_space(item.prompt, "")[0])
            if max_length is not None and len(ids_row) > max_length:
                cut += 1
                head = ids_row[:1] if adds_bos else []
                ids_row = head + ids_row[len(ids_row) - (max_length - len(head)):]
            rows[lang].append(ids_row)
            answer = _gold_text(item)
            if not answer.strip():
                raise LangNeuronsError(f"item {item.id!r} ({lang}): the answer {answer!r} tokenizes to nothing")
            gold[k, i] = encode_options(tokenizer, task, item, [answer])[0][1][0]
    if cut:
        warnings.warn(f"{cut} of {len(ids) * len(languages)} prompts are longer than {max_length} tokens and were "
                      "cut from the start (the end is kept)", LangNeuronsWarning, stacklevel=3)
    tokenized = TokenizedParallel(rows, pad, bos=adds_bos, cut=cut, max_length=max_length, keep="end")
    return SharingItems(languages, ids, plan.prompts, tokenized, plan.template, task, gold, source=plan.source)


def plan_items(parallel: ParallelCorpus | None = None, task: Task | str | None = None,
               template: str | Template | None = None, langs: Sequence[str] | None = None,
               limit: int | None = None, data: Any = None, task_settings: dict[str, Any] | None = None) -> ItemsPlan:
    """The items of a run from a parallel corpus and / or a task (see the module docstring); no model needed."""
    settings = dict(task_settings or {})
    if parallel is not None and langs:
        parallel = parallel.select(langs)
    if isinstance(task, str) and task in CORPUS_TASKS and (parallel is not None or task != "cloze"):
        if parallel is None:
            raise LangNeuronsError(f"task {task!r} is built from a parallel corpus: give --parallel")
        task = corpus_task(parallel, task, **settings)  # every line (cloze distractors), then the first `limit`
        return plan_task(task, template, limit=limit)
    if task is not None and parallel is not None:
        raise LangNeuronsError(f"task {getattr(task, 'name', task)!r} brings its own prompts: give --parallel only "
                               f"with a task built from it ({', '.join(CORPUS_TASKS)})")
    if isinstance(task, str):
        from langneurons.evaluation.tasks.loaders import load_task

        metric = settings.pop("metric", None)
        task = load_task(task, data=data, langs=langs, metric=metric, **settings)
    if task is not None:
        return plan_task(task, template, langs, limit)
    if parallel is None:
        raise LangNeuronsError("give a parallel corpus (--parallel) or a task (--task)")
    return plan_corpus(parallel, template, limit)


def build_items(tokenizer: Any, parallel: ParallelCorpus | None = None, task: Task | str | None = None,
                template: str | Template | None = None, langs: Sequence[str] | None = None,
                limit: int | None = None, max_length: int | None = 512, add_bos: bool = False,
                data: Any = None, task_settings: dict[str, Any] | None = None) -> SharingItems:
    """:func:`plan_items`, then :meth:`ItemsPlan.tokenize`."""
    plan = plan_items(parallel, task, template, langs, limit, data, task_settings)
    return plan.tokenize(tokenizer, max_length, add_bos)
