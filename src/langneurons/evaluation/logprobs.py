"""Log-probabilities of given tokens without ever holding the full logits.

``model(...).logits`` is ``[batch, seq, vocab]``: 8 x 4096 x 256k floats are 32 GiB in float32, and a float32
copy of bfloat16 logits doubles that. Here the model's *body* (the decoder stack without the LM head,
:func:`langneurons.recording.recorder.model_body`) gives the final hidden states ``[B, T, hidden]``; only
the positions that are scored are taken, and the LM head, the family's logit transform and the log-softmax
run on ``chunk_size`` of them at a time. Peak memory is ``chunk_size x vocab`` logits instead of
``B x T x vocab``.

What stands between the body's output and the logits differs by family. Today that knowledge lives here
(:data:`LOGIT_TRANSFORMS`, config attributes applied in order, as the families' ``forward`` apply them), to
be joined with the model registry's "output head" later. Whatever the family, :func:`head_path` checks once
per model (4 tokens) that body + head + transforms reproduce the model's own logits, and falls back to
the full logits (still scored in chunks, without a float32 copy of the whole) with a
:class:`~langneurons.errors.LangNeuronsWarning` when they do not.

Token ``t`` of a row is scored from the hidden state at ``t - 1``; a target needs both positions to be real
tokens (``attention_mask`` 1), so left and right padding both work.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple
from weakref import WeakKeyDictionary

import torch
from torch import nn

from langneurons.data.batching import forward_kwargs
from langneurons.errors import LangNeuronsWarning
from langneurons.model.sites import input_device

#: Config attributes (of ``config.get_text_config()``) that change the LM head's output, in the order the
#: families' ``forward`` apply them: cohere ``logit_scale`` (x), ``output_multiplier`` (x), granite
#: ``logits_scaling`` (/), gemma2 / gemma3 ``final_logit_softcapping`` (cap * tanh(logits / cap)).
LOGIT_TRANSFORMS: tuple[tuple[str, str], ...] = (
    ("logit_scale", "multiply"),
    ("output_multiplier", "multiply"),
    ("logits_scaling", "divide"),
    ("final_logit_softcapping", "softcap"),
)

#: Default budget of logits per chunk (elements): 2**26 floats = 256 MiB in float32 (256 positions at 256k vocab).
CHUNK_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class HeadPath:
    """How logits are made from the body's hidden states: ``chunked`` (body + head) or the full forward."""

    chunked: bool
    transforms: tuple[tuple[str, float], ...] = ()
    reason: str | None = None


class TokenScores(NamedTuple):
    """``logprobs[B, T]`` of each target token (0 elsewhere), ``greedy bool[B, T]`` (the target is the argmax)
    and ``argmax long[B, T]`` (the argmax token predicting position t; -1 where nothing is scored)."""

    logprobs: torch.Tensor
    greedy: torch.Tensor
    argmax: torch.Tensor


_PATHS: WeakKeyDictionary = WeakKeyDictionary()


def logit_transforms(model: nn.Module) -> tuple[tuple[str, float], ...]:
    """The ``(kind, value)`` transforms of :data:`LOGIT_TRANSFORMS` that the model's config sets."""
    config = getattr(model, "config", None)
    if config is None:
        return ()
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    found = []
    for attribute, kind in LOGIT_TRANSFORMS:
        value = getattr(text, attribute, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found.append((kind, float(value)))
    return tuple(found)


def apply_transforms(logits: torch.Tensor, transforms: tuple[tuple[str, float], ...]) -> torch.Tensor:
    """``logits`` after each ``(kind, value)`` in order, in the logits' dtype (as the families do)."""
    for kind, value in transforms:
        if kind == "multiply":
            logits = logits * value
        elif kind == "divide":
            logits = logits / value
        elif kind == "softcap":
            logits = torch.tanh(logits / value) * value
        else:  # pragma: no cover - the table above is closed
            raise ValueError(f"unknown logit transform {kind!r}")
    return logits


def _body(model: nn.Module) -> nn.Module:
    from langneurons.recording.recorder import model_body

    return model_body(model)


def _hidden(body: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Final hidden states ``[B, T, hidden]`` of the body (final norm included, as the body applies it)."""
    output = body(input_ids=input_ids, use_cache=False, **forward_kwargs(body, attention_mask))
    hidden = getattr(output, "last_hidden_state", None)
    return hidden if hidden is not None else output[0]


def _full_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    return model(input_ids=input_ids, use_cache=False, **forward_kwargs(model, attention_mask)).logits


def _head_logits(head: nn.Module, hidden: torch.Tensor, transforms: tuple[tuple[str, float], ...]) -> torch.Tensor:
    weight = getattr(head, "weight", None)
    if weight is not None and weight.device.type != "meta" and hidden.device != weight.device:
        hidden = hidden.to(weight.device)
    return apply_transforms(head(hidden), transforms)


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-4 if dtype in (torch.float32, torch.float64) else 3e-2


@torch.inference_mode()
def head_path(model: nn.Module, check: bool = True) -> HeadPath:
    """Whether body + output head + :func:`logit_transforms` reproduce ``model``'s logits (checked on 4 tokens).

    The answer is cached per model and dtype. When it does not (or the model has no separate body / head),
    a :class:`LangNeuronsWarning` says so and the full-logits path is used.
    """
    dtype = next(model.parameters()).dtype
    cached = _PATHS.get(model)
    if cached is not None and cached[0] == dtype:
        return cached[1]
    body = _body(model)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    transforms = logit_transforms(model)
    if body is model or head is None:
        path = HeadPath(False, transforms, "the model has no separate decoder body and output head")
    elif not check:
        path = HeadPath(True, transforms)
    else:
        vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, max(1, vocab), (1, 4), generator=generator).to(input_device(model))
        try:
            expected = _full_logits(model, ids, None)
            got = _head_logits(head, _hidden(body, ids, None), transforms).to(expected.device)
            diff = float((expected.double() - got.double()).abs().max()) if got.shape == expected.shape else math.inf
            scale = float(expected.double().abs().max())
        except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
            diff, scale = math.inf, 0.0
            reason = f"body + head failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        else:
            reason = f"body + head differ from the model's logits by {diff:.3g}"
        ok = diff <= _tolerance(dtype) * (1.0 + scale)
        path = HeadPath(True, transforms) if ok else HeadPath(False, transforms, reason)
    if not path.chunked:
        warnings.warn(f"{type(model).__name__}: {path.reason}; scoring from the full logits (more memory)",
                      LangNeuronsWarning, stacklevel=3)
    _PATHS[model] = (dtype, path)
    return path


def default_chunk(vocab_size: int) -> int:
    """Positions per chunk so that one chunk holds at most :data:`CHUNK_ELEMENTS` logits."""
    return max(1, CHUNK_ELEMENTS // max(1, vocab_size))


def _targets(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, targets_mask: torch.Tensor | None
             ) -> torch.Tensor:
    """``bool[B, T]``: tokens to score; each needs itself and its predecessor to be real tokens."""
    mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    wanted = mask.clone() if targets_mask is None else targets_mask.bool().clone()
    if targets_mask is not None and bool(wanted[:, 0].any()):
        raise ValueError("position 0 has no prediction: targets_mask[:, 0] must be False")
    wanted[:, 0] = False
    wanted[:, 1:] &= mask[:, 1:] & mask[:, :-1]
    return wanted


def _score_chunks(logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], rows: torch.Tensor,
                  cols: torch.Tensor, targets: torch.Tensor, chunk: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``targets[n]`` and the argmax token from ``logits_of(rows, cols) -> [n, vocab]``."""
    logprobs, argmax = [], []
    for start in range(0, rows.numel(), chunk):
        part = slice(start, start + chunk)
        logits = logits_of(rows[part], cols[part])
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        target = targets[part].to(logits.device)
        picked = logits.gather(-1, target[:, None])[:, 0]
        logprobs.append((picked - torch.logsumexp(logits, dim=-1)).cpu())
        argmax.append(logits.argmax(-1).cpu())
        del logits
    if not logprobs:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.cat(logprobs), torch.cat(argmax)


@torch.inference_mode()
def token_scores(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 targets_mask: torch.Tensor | None = None, chunk_size: int | None = None) -> TokenScores:
    """Log-probability ``log p(x_t | x_<t)`` and greedy match of the tokens ``targets_mask`` marks.

    ``input_ids long[B, T]`` (left or right padded; ``attention_mask long[B, T]``), ``targets_mask bool[B, T]``
    (default: every real token but each row's first). Returns :class:`TokenScores` of shape ``[B, T]``
    (on the CPU; ``float32``, or ``float64`` for a float64 model), 0 / False where nothing is scored.
    ``greedy`` is ``argmax_v logits[t - 1, v] == x_t`` (torch's argmax: the first of tied maxima).
    """
    device = input_device(model)
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device) if attention_mask is not None else None
    wanted = _targets(input_ids, attention_mask, targets_mask.to(device) if targets_mask is not None else None)
    rows, cols = wanted.nonzero(as_tuple=True)
    targets = input_ids[rows, cols]
    path = head_path(model)
    if path.chunked:
        head = model.get_output_embeddings()
        hidden = _hidden(_body(model), input_ids, attention_mask)
        vocab = int(getattr(head, "out_features", 0) or head.weight.shape[0])

        def logits_of(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return _head_logits(head, hidden[r.to(hidden.device), (c - 1).to(hidden.device)], path.transforms)
    else:
        full = _full_logits(model, input_ids, attention_mask)
        vocab = full.shape[-1]

        def logits_of(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return full[r.to(full.device), (c - 1).to(full.device)]

    chunk = chunk_size or default_chunk(vocab)
    if chunk < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk}")
    logprobs, best = _score_chunks(logits_of, rows, cols, targets, chunk)
    dtype = logprobs.dtype if logprobs.numel() else torch.float32
    out = torch.zeros(input_ids.shape, dtype=dtype)
    top = torch.full(input_ids.shape, -1, dtype=torch.long)
    rows, cols = rows.cpu(), cols.cpu()
    out[rows, cols] = logprobs
    top[rows, cols] = best
    return TokenScores(out, top == input_ids.cpu(), top)


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                   targets_mask: torch.Tensor | None, chunk_size: int | None = None) -> torch.Tensor:
    """``[B, T]`` log-probabilities of the target tokens (see :func:`token_scores`), 0 elsewhere."""
    return token_scores(model, input_ids, attention_mask, targets_mask, chunk_size).logprobs


def sequence_nll(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL ``float64[B]`` (nats) over every predicted real token of each row, and their count ``long[B]``."""
    wanted = _targets(input_ids, attention_mask, None)
    logprobs = token_logprobs(model, input_ids, attention_mask, wanted, chunk_size)
    return -logprobs.double().sum(-1), wanted.sum(-1).cpu()
