"""Scoring task items with a model: option log-likelihoods, first-token and greedy exact match, numbers.

Scoring rows (prompt + continuation) are right-padded (:func:`langneurons.data.batching.pad_rows`) and scored
with :func:`langneurons.evaluation.logprobs.token_scores` (chunked LM head, the right positions under
padding); generation is left-padded by :func:`langneurons.evaluation.generation.generate_batch` (greedy, KV
cache, no repetition penalty). Rows are batched longest first; each item's score does not depend on its
batch (up to the order of float additions). Under a data-parallel run (:mod:`langneurons.recording.parallel_run`)
batch ``k`` runs on rank ``k % world_size`` and the scores are gathered in order: the single-process batches,
so the same scores. Every rank tokenizes every item (the batches are formed by token length; a task's prompts
take well under a second to tokenize). ``batch_context(row_items)``, when given, is opened around each
forward batch with the item of every row in row order, for interventions that differ per row.

Multiple choice (``metric="choice"``): for option ``o`` with tokens ``c_1..c_n`` after the prompt,
``sum = sum_i log p(c_i | prompt, c_<i)``; ``token = sum / n``; ``char = sum / len(o)`` (characters of the
option text, without the leading space the rule adds). The prediction is the option with the highest score
under ``task.normalization`` (the first on ties). The default is ``char``: the summed log-likelihood favours
short options, and the per-token mean depends on how many tokens the tokenizer spends per character, which
differs across languages (the very thing compared here); per-character normalisation is the
tokenizer-independent choice (lm-evaluation-harness's ``acc_norm`` normalises by bytes likewise).
All three are recorded per item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any
import warnings

import torch
from torch import nn

from langneurons.data.batching import fit_rows, pad_rows
from langneurons.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.evaluation.logprobs import token_scores
from langneurons.evaluation.tasks.answers import answer_matches, normalize_answer, numbers_equal, parse_number
from langneurons.evaluation.tasks.items import Task, TaskItem, encode_options, encode_prompt, split_trailing_space

BatchContext = Callable[[list[TaskItem]], AbstractContextManager]


@dataclass
class ItemScore:
    """The score of one item: whether it is right, what the model chose / said, and the numbers behind it."""

    id: str
    language: str
    correct: bool
    prediction: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RowScore:
    """Summed log-probability of a row's continuation, its token count, whether every token is the argmax,
    and the argmax token at the continuation's first position."""

    logprob: float
    tokens: int
    greedy: bool
    first_argmax: int


def _limit(model: nn.Module) -> int | None:
    from langneurons.evaluation.generation import context_length

    return context_length(model)


def _fit(rows: list[list[int]], targets: Sequence[int], limit: int | None) -> list[list[int]]:
    """Rows cut from the START to the model's context (a warning says how many); continuations are kept whole."""
    if limit is None:
        return rows
    if any(n >= limit for n in targets):
        raise LangNeuronsError(f"a continuation is longer than the model's context ({limit} tokens)")
    fitted, cut = fit_rows(rows, limit, keep="end")
    if cut:
        warnings.warn(f"{cut} of {len(rows)} prompts were longer than the model's context ({limit} tokens) and "
                      "were cut from the start", LangNeuronsWarning, stacklevel=3)
    return fitted


def score_rows(model: nn.Module, rows: Sequence[Sequence[int]], targets: Sequence[int], pad_id: int,
               batch_size: int = 8, chunk_size: int | None = None, row_items: Sequence[TaskItem] | None = None,
               batch_context: BatchContext | None = None, progress: Any = None) -> list[RowScore]:
    """Score the last ``targets[i]`` tokens of each row ``rows[i]`` given the tokens before them.

    Batches of ``batch_size`` rows, longest first, right-padded; returns one :class:`RowScore` per row, in order.
    """
    if batch_size < 1:
        raise LangNeuronsError(f"--batch-size must be at least 1, got {batch_size}")
    from langneurons.recording.parallel_run import current_run

    run = current_run()
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    if batch_context is not None:  # the head check's one-row forward must not run inside a per-row edit
        from langneurons.evaluation.logprobs import head_path

        head_path(model)
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

    def unit(number: int) -> list[tuple[float, int, bool, int]]:  # batch ``number`` on rank number % world
        chosen = batches[number]
        input_ids, mask = pad_rows([rows[i] for i in chosen], pad_id, side="right")
        wanted = torch.zeros_like(mask, dtype=torch.bool)
        for b, i in enumerate(chosen):
            wanted[b, len(rows[i]) - targets[i]:len(rows[i])] = True
        context = batch_context([row_items[i] for i in chosen]) if batch_context and row_items else nullcontext()
        with context:
            scores = token_scores(model, input_ids, mask, wanted, chunk_size)
        scored = []
        for b, i in enumerate(chosen):
            first = len(rows[i]) - targets[i]
            scored.append((float(scores.logprobs[b][wanted[b]].double().sum()), int(targets[i]),
                           bool(scores.greedy[b][wanted[b]].all()), int(scores.argmax[b, first])))
        if progress is not None:
            progress.update(len(chosen) * run.world_size)  # the other ranks advance alike
        return scored

    out: list[RowScore | None] = [None] * len(rows)
    for chosen, scored in zip(batches, run.map(len(batches), unit, sizes=[len(c) for c in batches])):
        for i, values in zip(chosen, scored):
            out[i] = RowScore(*values)
    return out  # type: ignore[return-value]


def _pad_id(tokenizer: Any) -> int:
    from langneurons.evaluation.generation import pad_token_id

    return pad_token_id(tokenizer)


def score_choice(model: nn.Module, tokenizer: Any, task: Task, items: Sequence[TaskItem], batch_size: int = 8,
                 chunk_size: int | None = None, batch_context: BatchContext | None = None, progress: Any = None
                 ) -> list[ItemScore]:
    """Multiple choice by the log-likelihood of each option (see the module docstring)."""
    rows, targets, owners = [], [], []
    for index, item in enumerate(items):
        for prompt_ids, option_ids in encode_options(tokenizer, task, item, item.options):
            rows.append(prompt_ids + option_ids)
            targets.append(len(option_ids))
            owners.append(index)
    rows = _fit(rows, targets, _limit(model))
    scored = score_rows(model, rows, targets, _pad_id(tokenizer), batch_size, chunk_size,
                        [items[i] for i in owners], batch_context, progress)
    results, cursor = [], 0
    for item in items:
        mine = scored[cursor:cursor + len(item.options)]
        cursor += len(item.options)
        logprob = [row.logprob for row in mine]
        norms = {"sum": logprob, "token": [row.logprob / row.tokens for row in mine],
                 "char": [row.logprob / max(1, len(option)) for row, option in zip(mine, item.options)]}
        picks = {name: max(range(len(values)), key=values.__getitem__) for name, values in norms.items()}
        pick = picks[task.normalization]
        details = {"label": item.label, "logprob": logprob, "tokens": [row.tokens for row in mine],
                   "chars": [len(option) for option in item.options], "greedy": [row.greedy for row in mine],
                   **{f"correct_{name}": picks[name] == item.label for name in norms}}
        results.append(ItemScore(item.id, item.language, pick == item.label, item.options[pick], details))
    return results


def score_first_token(model: nn.Module, tokenizer: Any, task: Task, items: Sequence[TaskItem], batch_size: int = 8,
                      chunk_size: int | None = None, batch_context: BatchContext | None = None,
                      progress: Any = None) -> list[ItemScore]:
    """Right when the argmax after the prompt is the first token of a gold answer (any of ``item.answers``)."""
    rows, gold_firsts = [], []
    for item in items:
        encoded = encode_options(tokenizer, task, item, item.answers)
        rows.append(encoded[0][0] + encoded[0][1][:1])
        gold_firsts.append({answer_ids[0] for _, answer_ids in encoded})
    rows = _fit(rows, [1] * len(rows), _limit(model))
    scored = score_rows(model, rows, [1] * len(rows), _pad_id(tokenizer), batch_size, chunk_size, list(items),
                        batch_context, progress)
    results = []
    for item, row, firsts in zip(items, scored, gold_firsts):
        details = {"gold_first_tokens": sorted(firsts), "predicted_token": row.first_argmax,
                   "logprob_gold_first": row.logprob}
        results.append(ItemScore(item.id, item.language, row.first_argmax in firsts,
                                 tokenizer.decode([row.first_argmax]), details))
    return results


def score_generation(model: nn.Module, tokenizer: Any, task: Task, items: Sequence[TaskItem], batch_size: int = 8,
                     batch_context: BatchContext | None = None, progress: Any = None) -> list[ItemScore]:
    """Greedy continuations (left-padded batches), matched as ``task.metric`` says: ``greedy`` or ``numeric``."""
    from langneurons.evaluation.generation import GenerationSettings, generate_batch

    settings = GenerationSettings(max_new_tokens=task.max_new_tokens, repetition_penalty=1.0, stop=task.stop,
                                  batch_size=batch_size)
    rows = [encode_prompt(tokenizer, split_trailing_space(item.prompt, "")[0]) for item in items]
    limit = _limit(model)
    if limit is not None:
        if task.max_new_tokens >= limit:
            raise LangNeuronsError(f"--max-new-tokens {task.max_new_tokens} leaves no room for a prompt in the "
                                   f"model's context ({limit} tokens)")
        rows = _fit(rows, [0] * len(rows), limit - task.max_new_tokens)
    from langneurons.recording.parallel_run import current_run

    run = current_run()

    def unit(number: int) -> list[str]:  # batch ``number`` on rank number % world
        start = number * batch_size
        chunk = list(items[start:start + batch_size])
        with batch_context(chunk) if batch_context else nullcontext():
            texts = generate_batch(model, tokenizer, rows[start:start + batch_size], settings)
        if progress is not None:
            progress.update(len(chunk) * run.world_size)  # the other ranks advance alike
        return texts

    count = -(-len(rows) // batch_size)
    sizes = [len(rows[k * batch_size:(k + 1) * batch_size]) for k in range(count)]
    outputs = [text for part in run.map(count, unit, sizes=sizes) for text in part]
    results = []
    for item, output in zip(items, outputs):
        if task.metric == "numeric":
            got = parse_number(output)
            correct = numbers_equal(output, item.answers[0])
            details = {"parsed": None if got is None else str(got), "gold": item.answers[0]}
        else:
            correct = any(answer_matches(output, answer, item.language, task.match) for answer in item.answers)
            details = {"normalized": normalize_answer(output), "gold": list(item.answers)}
        results.append(ItemScore(item.id, item.language, correct, output, details))
    return results


def score_items(model: nn.Module, tokenizer: Any, task: Task, items: Sequence[TaskItem] | None = None,
                batch_size: int = 8, chunk_size: int | None = None, batch_context: BatchContext | None = None,
                progress: Any = None) -> list[ItemScore]:
    """Score ``items`` (default: all of the task's) by ``task.metric``; one :class:`ItemScore` per item, in order."""
    items = list(task.items if items is None else items)
    if not items:
        return []
    if task.metric == "choice":
        return score_choice(model, tokenizer, task, items, batch_size, chunk_size, batch_context, progress)
    if task.metric == "first_token":
        return score_first_token(model, tokenizer, task, items, batch_size, chunk_size, batch_context, progress)
    if task.metric in ("greedy", "numeric"):
        return score_generation(model, tokenizer, task, items, batch_size, batch_context, progress)
    raise LangNeuronsError(f"unknown metric {task.metric!r}")
