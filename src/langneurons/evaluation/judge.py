"""Content-quality scores from an LLM judge (LAPE paper Tables 1 and 4: GPT-4, 1-10 scale).

The prompt is MT-bench's single-answer grading prompt (Zheng et al. 2023, FastChat ``single-v1``): the
judge explains, then rates 1-10 as ``[[rating]]``. Any OpenAI-compatible chat-completions endpoint
works (``--judge-url http://host:port/v1``, ``--judge-model``); the key, if any, comes from the
environment variable ``LANGNEURONS_JUDGE_KEY`` and is never written anywhere. Only the standard library
is used. Every request has a timeout, failures are retried a bounded number of times with exponential
backoff, and after a few items in a row fail the judge is considered down: the remaining items get
``score = None`` with a reason instead of more waiting, so generation results are never held back.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langneurons.errors import LangNeuronsError

KEY_ENV = "LANGNEURONS_JUDGE_KEY"
PROMPT_NAME = "mt-bench single-v1"
SYSTEM_PROMPT = "You are a helpful assistant."
PROMPT_TEMPLATE = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response provided by an AI "
    "assistant to the user question displayed below. Your evaluation should consider factors such as the "
    "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your "
    "evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, "
    "you must rate the response on a scale of 1 to 10 by strictly following this format: \"[[rating]]\", for "
    "example: \"Rating: [[5]]\".\n\n[Question]\n{question}\n\n[The Start of Assistant's Answer]\n{answer}\n"
    "[The End of Assistant's Answer]"
)
_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_FALLBACK = re.compile(r"\[(\d+\.?\d*)\]")
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class JudgeResult:
    """A score in [1, 10] or ``None`` with the reason; ``explanation`` is the judge's text."""

    score: float | None
    reason: str | None = None
    explanation: str | None = None


def parse_rating(text: str) -> float | None:
    """The ``[[rating]]`` in a judge's answer (``[rating]`` as a fallback), ``None`` if absent or outside 1-10."""
    match = _RATING.search(text) or _RATING_FALLBACK.search(text)
    if not match:
        return None
    value = float(match.group(1))
    return value if 1.0 <= value <= 10.0 else None


def chat_endpoint(url: str) -> str:
    """``url`` as a chat-completions endpoint: ``.../v1`` becomes ``.../v1/chat/completions``."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise LangNeuronsError(f"--judge-url must be an http(s) URL, got {url!r}")
    if parsed.username or parsed.password:
        raise LangNeuronsError(f"put the judge's key in ${KEY_ENV}, not in --judge-url")
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return urllib.parse.urlunparse(parsed._replace(path=path))


class _Retryable(Exception):
    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _is_timeout(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", None)
    return isinstance(exc, TimeoutError) or isinstance(reason, TimeoutError)


class Judge:
    """Scores (question, answer) pairs with a chat-completions endpoint, bounded in time and requests.

    Each item makes at most ``1 + retries`` requests of at most ``timeout`` seconds; after
    ``max_consecutive_failures`` items in a row without a score from the server, or ``max_timeouts`` requests
    in a row that the server accepted but never answered within ``timeout``, no more requests are made
    (so a server that hangs costs ``max_timeouts x timeout`` seconds, not every retry of several items).
    """

    def __init__(self, url: str, model: str, key: str | None = None, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 1.0, max_consecutive_failures: int = 3, max_tokens: int = 2048,
                 max_timeouts: int = 2, sleep: Callable[[float], None] = time.sleep) -> None:
        if not model:
            raise LangNeuronsError("--judge-model is required with --judge-url")
        if timeout <= 0 or retries < 0 or max_consecutive_failures < 1 or max_timeouts < 1:
            raise LangNeuronsError("judge timeout must be positive, retries and failures non-negative")
        self.endpoint = chat_endpoint(url)
        self.model = model
        self._key = key if key is not None else os.environ.get(KEY_ENV)
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)
        self.max_consecutive_failures, self.max_tokens = int(max_consecutive_failures), int(max_tokens)
        self.max_timeouts = int(max_timeouts)
        self._sleep = sleep
        self.requests = 0
        self._failures = 0
        self._timeouts = 0
        self._down_reason: str | None = None

    @property
    def is_down(self) -> bool:
        return self._down_reason is not None

    def describe(self) -> dict[str, Any]:
        """Provenance (the key is never included, only whether one was set)."""
        return {"endpoint": self.endpoint, "model": self.model, "prompt": PROMPT_NAME, "scale": [1, 10],
                "temperature": 0.0, "max_tokens": self.max_tokens, "key_set": bool(self._key),
                "timeout_s": self.timeout, "retries": self.retries}

    def _request(self, question: str, answer: str) -> str:
        body = {
            "model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens,
            "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                         {"role": "user", "content": PROMPT_TEMPLATE.format(question=question, answer=answer)}],
        }
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code in _RETRY_STATUS:
                raise _Retryable(f"HTTP {exc.code}") from None
            raise ValueError(f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            if _is_timeout(exc):
                raise _Retryable(f"no answer within {self.timeout:g} s", timed_out=True) from None
            raise _Retryable(f"unreachable: {getattr(exc, 'reason', exc)}") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("the response is not JSON") from None
        try:
            return str(payload["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ValueError("the response has no choices[0].message.content") from None

    def score(self, question: str, answer: str) -> JudgeResult:
        """Score one answer; never raises for server problems (score ``None`` and the reason instead)."""
        if self._down_reason is not None:
            return JudgeResult(None, self._down_reason)
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self._sleep(min(self.backoff * 2 ** (attempt - 1), 30.0))
            try:
                text = self._request(question, answer)
            except _Retryable as exc:
                last = str(exc)
                self._timeouts = self._timeouts + 1 if exc.timed_out else 0
                if self._timeouts >= self.max_timeouts:
                    self._down_reason = f"judge down after {self._timeouts} requests in a row without an answer"
                    return JudgeResult(None, f"judge request failed: {last}")
                continue
            except ValueError as exc:
                last = str(exc)
                self._timeouts = 0
                break
            self._failures = self._timeouts = 0
            rating = parse_rating(text)
            return JudgeResult(rating, None if rating is not None else "no [[rating]] in the judge's answer", text)
        self._failures += 1
        if self._failures >= self.max_consecutive_failures:
            self._down_reason = f"judge down after {self._failures} failed items in a row ({last})"
        return JudgeResult(None, f"judge request failed: {last}")

    def score_many(self, pairs: Sequence[tuple[str, str]]) -> list[JudgeResult]:
        """:meth:`score` of every ``(question, answer)``, in order."""
        return [self.score(question, answer) for question, answer in pairs]
