"""A bridge to lm-evaluation-harness (optional: ``pip install "langneurons[lmeval]"``).

Any lm-eval task (a registered name, or a YAML in ``include_path``) runs on a loaded model inside any
intervention: the model is wrapped once in lm-eval's ``HFLM`` and every condition's evaluation runs inside
``edit(condition)``, a callable returning a context manager (``normal`` runs the model as it is). The hooks of
an intervention act on lm-eval's forward passes exactly as on ours.

    from langneurons.evaluation.tasks.lmeval import run_lm_eval
    results = run_lm_eval(loaded, ["xnli_en"], ["normal", "deactivate:en"],
                          edit=lambda c: ln.deactivate(loaded.model, neurons, c.split(":")[1]))
    results["deactivate:en"]["results"]["xnli_en"]["acc,none"]
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError


def lm_eval_available() -> bool:
    """Whether lm-evaluation-harness (``lm_eval``) is installed."""
    return importlib.util.find_spec("lm_eval") is not None


def run_lm_eval(loaded: Any, tasks: Sequence[str], conditions: Sequence[str] = ("normal",),
                edit: Callable[[str], AbstractContextManager] | None = None, include_path: str | Path | None = None,
                limit: int | float | None = None, num_fewshot: int | None = None, batch_size: int = 8,
                log_samples: bool = False, **evaluate: Any) -> dict[str, dict[str, Any]]:
    """``{condition: {"results": {task: {metric: value}}, "samples": ...}}`` of lm-eval's ``simple_evaluate``.

    ``loaded`` is a :class:`~langneurons.model.loading.LoadedModel`; ``evaluate`` goes to ``simple_evaluate``.
    Bootstrapped standard errors are off unless ``bootstrap_iters`` is given.
    """
    if not lm_eval_available():
        raise LangNeuronsError('lm-evaluation-harness is not installed: pip install "langneurons[lmeval]"')
    if any(c != "normal" for c in conditions) and edit is None:
        raise LangNeuronsError("conditions other than 'normal' need an edit")
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=batch_size)
    manager = TaskManager(include_path=str(include_path)) if include_path is not None else TaskManager()
    evaluate = {"bootstrap_iters": 0, **evaluate}
    results: dict[str, dict[str, Any]] = {}
    for condition in conditions:
        with nullcontext() if condition == "normal" else edit(condition):
            output = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                                     num_fewshot=num_fewshot, log_samples=log_samples, **evaluate)
        if output is None:  # a non-zero rank under accelerate
            continue
        results[condition] = {"results": output["results"], **({"samples": output["samples"]} if log_samples else {})}
    return results


def lm_eval_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Flat rows ``{condition, task, metric, value}`` of :func:`run_lm_eval`'s numbers (for a CSV)."""
    rows = []
    for condition, output in results.items():
        for task, metrics in output["results"].items():
            for metric, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    rows.append({"condition": condition, "task": task, "metric": metric, "value": float(value)})
    return rows
