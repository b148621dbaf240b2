"""Text generation under neuron interventions (LAPE paper, section 3.1 open-ended generation, Tables 4-5).

The paper's settings are the defaults: the prompt ``Q: {question}\\nA:``, greedy search with a repetition
penalty of 1.1, generation stopped at ``\\nQ:`` or ``\\nA:`` (the LAPE reference code's stop strings) and
the output stripped. Prompts are batched with LEFT padding and generated with the KV cache; an
intervention (:class:`Condition`: deactivate some languages' neurons, activate others' to their mean
activation x strength) is a hook that stays open for the whole ``model.generate`` call, so it acts on the
prompt and on every generated token.

    settings = GenerationSettings(max_new_tokens=64)
    texts = generate_texts(loaded, ["Q: ...\\nA:"], settings, edits=Condition(activate=["zh"]).edits(neurons, stats))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.errors import LangNeuronsError
from langneurons.interventions.neurons import Activate, Deactivate, Edit, intervene
from langneurons.model.sites import SiteMap

#: The paper's prompt template (LAPE reference code, generation.py).
TEMPLATE = "Q: {question}\nA:"
#: Generation stops when the continuation contains one of these (LAPE reference code).
STOP_STRINGS = ("\nQ:", "\nA:")


@dataclass
class GenerationSettings:
    """Decoding settings; the defaults are the LAPE paper's (greedy, repetition penalty 1.1)."""

    max_new_tokens: int = 256
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    repetition_penalty: float = 1.1
    stop: tuple[str, ...] = STOP_STRINGS
    template: str = TEMPLATE
    batch_size: int = 8
    seed: int = 0

    def validate(self) -> GenerationSettings:
        if self.max_new_tokens < 1:
            raise LangNeuronsError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise LangNeuronsError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.sample and not self.temperature > 0:
            raise LangNeuronsError(f"--temperature must be positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LangNeuronsError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not self.repetition_penalty > 0:
            raise LangNeuronsError(f"--repetition-penalty must be positive, got {self.repetition_penalty}")
        if "{question}" not in self.template:
            raise LangNeuronsError("the prompt template must contain {question}")
        return self

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["stop"] = list(self.stop)
        data["decoding"] = "sampling" if self.sample else "greedy"
        if not self.sample:
            data.pop("temperature"), data.pop("top_p")
        return data


@dataclass
class Condition:
    """One generation condition: languages whose neurons are deactivated (0) and activated (mean x strength).

    The name is ``normal`` without edits, else e.g. ``deactivate:es+activate:zh`` (``activate:zh@5`` at
    strength 5).
    """

    deactivate: list[str] = field(default_factory=list)
    activate: list[str] = field(default_factory=list)
    strength: float = 1.0

    @property
    def name(self) -> str:
        suffix = "" if self.strength == 1.0 else f"@{self.strength:g}"
        parts = [f"deactivate:{lang}" for lang in self.deactivate] + [f"activate:{lang}{suffix}" for lang in self.activate]
        return "+".join(parts) or "normal"

    @property
    def is_normal(self) -> bool:
        return not self.deactivate and not self.activate

    def edits(self, neurons: Any, stats: Any = None) -> list[Edit]:
        """The :mod:`langneurons.interventions.neurons` edits of this condition (activation needs ``stats``)."""
        edits: list[Edit] = []
        if self.is_normal:
            return edits
        if neurons is None:
            raise LangNeuronsError("interventions need a neuron set (--neurons)")
        for lang in self.deactivate + self.activate:
            neurons.layers(lang)  # clear error for an unknown language
        if self.deactivate:
            edits.append(Deactivate(neurons, list(self.deactivate)))
        if self.activate:
            if stats is None:
                raise LangNeuronsError("activating neurons needs the activation statistics (--stats)")
            for lang in self.activate:
                if lang not in stats.languages:
                    raise LangNeuronsError(
                        f"statistics have no language {lang!r} to take mean activations from "
                        f"(have {', '.join(stats.languages)})")
            edits.append(Activate(neurons, list(self.activate), stats, self.strength))
        return edits

    def describe(self, neurons: Any = None, stats: Any = None) -> dict[str, Any]:
        """What the condition does, where, and from which statistic (for the artefact's provenance)."""
        data: dict[str, Any] = {"name": self.name, "deactivate": list(self.deactivate), "activate": list(self.activate)}
        if neurons is not None and not self.is_normal:
            data["site"] = neurons.site
            data["neurons"] = {lang: neurons.size(lang) for lang in self.deactivate + self.activate}
        if self.deactivate:
            data["deactivate_value"] = 0.0
        if self.activate:
            data["activate_value"] = "strength x mean activation = strength x activation_sum / token_count"
            data["strength"] = self.strength
            if stats is not None:
                data["statistic"] = {"site": stats.meta.get("site"), "model": stats.meta.get("model"),
                                     "tokens": {lang: int(stats.token_count[stats.languages.index(lang)])
                                                for lang in self.activate}}
        return data


def read_prompts(directory: str | Path, langs: Sequence[str] | None = None, limit: int | None = None,
                 max_chars: int | None = None) -> dict[str, list[str]]:
    """``{lang: questions}`` from ``{lang}.txt`` files, one question per non-blank line (mvicuna layout).

    ``limit`` keeps the first questions of each language, ``max_chars`` cuts each to its first characters
    (short prompts, e.g. the beginnings of held-out sentences).
    """
    if max_chars is not None and max_chars < 1:
        raise LangNeuronsError(f"--prompt-chars must be at least 1, got {max_chars}")
    if limit is not None and limit < 1:
        raise LangNeuronsError(f"--limit must be at least 1, got {limit}")
    from langneurons.data.corpus import find_corpus_files
    from langneurons.data.files import read_text

    files = find_corpus_files(directory, list(langs) if langs else None, suffixes=(".txt",), kind="prompt")
    prompts: dict[str, list[str]] = {}
    for lang, path in files.items():
        lines = [line.strip() for line in read_text(path, "prompt file").splitlines()]
        lines = [line for line in lines if line]
        if not lines:
            raise LangNeuronsError(f"prompt file {str(path)!r} is empty")
        lines = lines[:limit] if limit else lines
        prompts[lang] = [line[:max_chars].rstrip() for line in lines] if max_chars else lines
    return prompts


def start_token_id(tokenizer: Any) -> int:
    """The token an unconditional generation starts from: BOS, or EOS when the tokenizer has no BOS."""
    for attribute in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if value is not None:
            return int(value)
    raise LangNeuronsError("the tokenizer has neither a BOS nor an EOS token to start an unconditional generation")


def pad_token_id(tokenizer: Any) -> int:
    for attribute in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tokenizer, attribute, None)
        if value is not None:
            return int(value)
    return 0


def left_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids long[B, T], attention_mask long[B, T])`` with every row right-aligned (LEFT padding)."""
    from langneurons.data.batching import pad_rows

    return pad_rows(rows, pad_id, side="left")


def encode_prompts(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt with the tokenizer's own special tokens (a Llama-style BOS, if it adds one)."""
    encoded = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    fallback = start_token_id(tokenizer)
    return [list(ids) or [fallback] for ids in encoded]


def eos_token_ids(model: nn.Module, tokenizer: Any) -> set[int]:
    """Every id that ends a generation (the model's generation config and the tokenizer's EOS)."""
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in ([config_eos] if isinstance(config_eos, int) else list(config_eos or [])):
        ids.add(int(value))
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string (excluded) and whether one was found."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return (text[: min(positions)], True) if positions else (text, False)


def context_length(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _stopping_criteria(tokenizer: Any, stops: Sequence[str], prompt_length: int):
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = 4 * max(len(stop) for stop in stops) + 4  # tokens enough to hold any stop string

    class StopOnStrings(StoppingCriteria):
        """A row is done once its continuation contains a stop string."""

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            tails = input_ids[:, max(prompt_length, input_ids.shape[1] - window):].tolist()
            texts = tokenizer.batch_decode(tails, skip_special_tokens=True)
            done = [any(stop in text for stop in stops) for text in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopOnStrings()])


def _repetition_penalty(penalty: float, prompt_mask: torch.Tensor):
    from transformers import LogitsProcessor

    class PaddingAwareRepetitionPenalty(LogitsProcessor):
        """CTRL's repetition penalty (as ``repetition_penalty`` in transformers and vLLM) over the prompt and the
        generated tokens, ignoring left padding, so that a row's output does not depend on its batch."""

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            mask = prompt_mask.to(scores.device, scores.dtype)
            if input_ids.shape[1] > mask.shape[1]:
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], input_ids.shape[1] - mask.shape[1])], dim=1)
            seen = torch.zeros_like(scores).scatter_add_(1, input_ids, mask) > 0
            penalized = torch.where(scores < 0, scores * penalty, scores / penalty)
            return torch.where(seen, penalized, scores)

    return PaddingAwareRepetitionPenalty()


@torch.inference_mode()
def generate_batch(model: nn.Module, tokenizer: Any, rows: Sequence[Sequence[int]], settings: GenerationSettings,
                   seed: int | None = None) -> list[str]:
    """Continuations (decoded, cut at the first EOS and stop string, stripped) of token-id prompts ``rows``.

    The rows are generated together, left-padded, with the KV cache. With ``settings.sample`` the global
    torch RNG is seeded with ``seed`` inside a forked RNG state (the caller's state is untouched).
    """
    from transformers import LogitsProcessorList

    from langneurons.model.sites import input_device

    device = input_device(model)
    pad = pad_token_id(tokenizer)
    input_ids, attention_mask = left_padded(rows, pad)
    prompt_length = input_ids.shape[1]
    max_new = settings.max_new_tokens
    limit = context_length(model)
    if limit is not None:
        if prompt_length >= limit:
            raise LangNeuronsError(f"a prompt has {prompt_length} tokens, the model's context is {limit}")
        max_new = min(max_new, limit - prompt_length)
    eos = eos_token_ids(model, tokenizer)
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new, "do_sample": settings.sample, "num_beams": 1,
        "repetition_penalty": 1.0,  # applied by our padding-aware processor below
        "pad_token_id": pad, "use_cache": True, "eos_token_id": sorted(eos) if eos else None,
        "no_repeat_ngram_size": 0, "typical_p": 1.0, "top_k": 0 if settings.sample else None,
    }
    if settings.sample:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:  # greedy: neutral values so that a model's sampling defaults raise no warnings
        kwargs.update(temperature=1.0, top_p=1.0)
    if settings.repetition_penalty != 1.0:
        kwargs["logits_processor"] = LogitsProcessorList(
            [_repetition_penalty(settings.repetition_penalty, attention_mask)])
    if settings.stop:
        kwargs["stopping_criteria"] = _stopping_criteria(tokenizer, settings.stop, prompt_length)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        output = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **kwargs)
    texts = []
    for row in output[:, prompt_length:].tolist():
        end = next((i for i, token in enumerate(row) if token in eos), len(row))
        text = tokenizer.decode(row[:end], skip_special_tokens=True)
        texts.append(cut_at_stop(text, settings.stop)[0].strip())
    return texts


def generate_texts(model: Any, prompts: Sequence[str], settings: GenerationSettings,
                   edits: Sequence[Edit] = (), tokenizer: Any = None, site_map: SiteMap | None = None,
                   templated: bool = False, progress: Any = None) -> list[str]:
    """Outputs for ``prompts`` (questions, put into ``settings.template`` unless ``templated``) under ``edits``.

    ``model`` is a :class:`~langneurons.model.loading.LoadedModel` or a model with ``tokenizer``. Batch ``b`` of
    a call is sampled with seed ``settings.seed + b``, so two conditions see the same random streams.
    """
    model, tokenizer = _unpack(model, tokenizer)
    settings.validate()
    texts = list(prompts) if templated else [settings.template.format(question=q) for q in prompts]
    return _generate_rows(model, tokenizer, texts, settings, edits, site_map, progress)


def generate_unconditional(model: Any, count: int, settings: GenerationSettings, edits: Sequence[Edit] = (),
                           tokenizer: Any = None, site_map: SiteMap | None = None, progress: Any = None
                           ) -> list[str]:
    """``count`` sampled generations from the BOS token alone (EOS when there is no BOS) under ``edits``."""
    model, tokenizer = _unpack(model, tokenizer)
    settings.validate()
    if count < 1:
        raise LangNeuronsError(f"--unconditional must be at least 1, got {count}")
    if not settings.sample:
        raise LangNeuronsError("unconditional generation samples: greedy search would repeat one output")
    rows: list[list[int]] = [[start_token_id(tokenizer)]] * count
    return _generate_rows(model, tokenizer, rows, settings, edits, site_map, progress)


def _unpack(model: Any, tokenizer: Any) -> tuple[nn.Module, Any]:
    if hasattr(model, "model") and hasattr(model, "tokenizer") and not isinstance(model, nn.Module):
        return model.model, tokenizer or model.tokenizer
    if tokenizer is None:
        raise LangNeuronsError("generation needs the model's tokenizer: pass tokenizer=...")
    return model, tokenizer


def _generate_rows(model: nn.Module, tokenizer: Any, rows: list[list[int]] | list[str], settings: GenerationSettings,
                   edits: Sequence[Edit], site_map: SiteMap | None, progress: Any) -> list[str]:
    """Batch ``b`` (seed ``settings.seed + b``) runs on rank ``b % world_size`` of the current run; the outputs
    are gathered in order, so they equal a single process's (the same batches, the same seeds). ``rows`` are
    token ids, or texts that each rank encodes only for its own batches."""
    from langneurons.recording.parallel_run import current_run

    run = current_run()
    size = settings.batch_size
    batches = math.ceil(len(rows) / size)

    def unit(b: int) -> list[str]:
        chunk = rows[b * size:(b + 1) * size]
        if chunk and isinstance(chunk[0], str):
            chunk = encode_prompts(tokenizer, chunk)
        texts = generate_batch(model, tokenizer, chunk, settings, seed=settings.seed + b)
        if progress is not None:
            progress.update(len(chunk) * run.world_size)  # the others advance alike
        return texts

    with intervene(model, list(edits), site_map=site_map):
        parts = run.map(batches, unit, sizes=[len(rows[b * size:(b + 1) * size]) for b in range(batches)])
    return [text for part in parts for text in part]
