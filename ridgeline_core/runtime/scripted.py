"""A runtime that answers from a script instead of a model.

It goes through everything a real model does (a manifest with ``runtime = "scripted"``, the
store's sha256 check, the runtime registry, the pool), so the request pipeline's every path
(local, escalated, skipped, aborted, degraded, cached) runs in milliseconds without a model:
the project's fast test lane uses it, and an app can use it to exercise its handling of
escalations. The model file is a JSON script::

    {
      "answers": [
        {"when": "capital of France", "text": "Paris.", "prob": 0.95},
        {"when": "haiku", "text": "a thread of life", "probs": [0.9, 0.2, 0.1, 0.1]}
      ],
      "default": {"text": "I am not sure.", "prob": 0.5},
      "token_delay_s": 0.0
    }

The first answer whose ``when`` occurs (case-insensitively) in the last user message is
given; ``complete`` (the confidence probes' raw continuation) matches the prompt text the
same way. Each word is one token; its signals are ``prob`` (or the word's entry of
``probs``, the last repeating) as the chosen-token probability and the top-1/top-2 margin,
so the ``margin`` scorer's confidence of an answer is the mean of its probabilities.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, PromptTooLongError, UnsupportedError
from ..store.manifest import ModelManifest
from .base import Generation
from .types import (
    ChatMessage,
    FinishReason,
    GenerationStats,
    LoadOptions,
    SamplingParams,
    Token,
    TokenSignals,
)

__all__ = ["Script", "ScriptedAnswer", "ScriptedRuntime"]

_WORD = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True)
class ScriptedAnswer:
    when: str  # matched case-insensitively in the question ("" matches anything)
    text: str
    probs: tuple[float, ...]  # per token; the last repeats

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ScriptedAnswer:
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise ModelLoadError(f"{where}: an answer needs a text")
        probs = data.get("probs", [data.get("prob", 0.9)])
        if not isinstance(probs, list) or not probs:
            raise ModelLoadError(f"{where}: probs must be a non-empty list")
        if not all(isinstance(p, int | float) and 0.0 <= p <= 1.0 for p in probs):
            raise ModelLoadError(f"{where}: probabilities must be numbers in [0, 1]")
        return cls(str(data.get("when", "")), data["text"], tuple(float(p) for p in probs))

    def matches(self, text: str) -> bool:
        return self.when.lower() in text.lower()


@dataclass(frozen=True)
class Script:
    """A script file's answers, its default answer and its pace."""

    answers: list[ScriptedAnswer]
    default: ScriptedAnswer
    token_delay_s: float

    @classmethod
    def read(cls, path: Path, name: str) -> Script:
        try:
            script = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise ModelLoadError(f"cannot read the script of {name}: {exc}") from exc
        if not isinstance(script, dict):
            raise ModelLoadError(f"the script of {name} is not a JSON object")
        where = f"script {name}"
        answers = [
            ScriptedAnswer.from_dict(item, f"{where} answers[{i}]")
            for i, item in enumerate(script.get("answers", []))
        ]
        default = ScriptedAnswer.from_dict(
            script.get("default", {"text": "I am not sure.", "prob": 0.5}), f"{where} default"
        )
        return cls(answers, default, float(script.get("token_delay_s", 0.0)))

    def answer(self, text: str) -> ScriptedAnswer:
        """The first answer whose ``when`` occurs in ``text``, else the default."""
        return next((a for a in self.answers if a.matches(text)), self.default)


class ScriptedRuntime:
    """The :class:`~ridgeline_core.runtime.base.Runtime` of a script file."""

    kind = "scripted"

    def __init__(self, manifest: ModelManifest, path: Path, options: LoadOptions) -> None:
        started = time.perf_counter()
        self.script = Script.read(path, manifest.name)
        self.manifest = manifest
        self.context_length = min(options.n_ctx, manifest.context_length or options.n_ctx)
        self.load_seconds = time.perf_counter() - started
        self._busy = threading.Lock()  # one generation at a time, like a real model

    def generate(self, messages: Sequence[ChatMessage], params: SamplingParams) -> Generation:
        question = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return self._start(self.render(messages), question, params)

    def complete(
        self, prompt: str, params: SamplingParams, *, control_tokens: bool = True
    ) -> Generation:
        return self._start(prompt, prompt, params)

    def render(self, messages: Sequence[ChatMessage]) -> str:
        system = self.manifest.system_prompt
        if system and not any(m.role == "system" for m in messages):
            messages = [ChatMessage("system", system), *messages]
        if len(messages) > 1 and messages[-1].role == "assistant":  # continue that turn
            head = "".join(f"<{m.role}>{m.content}\n" for m in messages[:-1])
            return head + "<assistant>" + messages[-1].content
        return "".join(f"<{m.role}>{m.content}\n" for m in messages) + "<assistant>"

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def next_token_probs(
        self, messages: Sequence[ChatMessage], candidates: Sequence[str]
    ) -> list[float]:
        answer = self._answer(messages[-1].content if messages else "")
        first = answer.text.split()[0].lower() if answer.text.split() else ""
        hits = [1.0 if c.lower().startswith(first) and first else 0.0 for c in candidates]
        total = sum(hits)
        return [h / total for h in hits] if total else [1.0 / len(candidates)] * len(candidates)

    def close(self) -> None:
        pass

    def _answer(self, text: str) -> ScriptedAnswer:
        return self.script.answer(text)

    def _start(self, prompt: str, question: str, params: SamplingParams) -> Generation:
        if params.adapters:
            raise UnsupportedError(f"{self.manifest.name}: a scripted model takes no LoRA adapter")
        prompt_tokens = self.count_tokens(prompt)
        if prompt_tokens >= self.context_length:
            raise PromptTooLongError.for_prompt(prompt_tokens, self.context_length)
        stats = GenerationStats(prompt_tokens=prompt_tokens)
        answer = self._answer(question)
        if params.choices:
            answer = ScriptedAnswer("", params.choices[0], answer.probs)
        return Generation(self._tokens(answer, params, stats), stats)

    def _tokens(
        self, answer: ScriptedAnswer, params: SamplingParams, stats: GenerationStats
    ) -> Iterator[Token]:
        started = time.perf_counter()
        with self._busy:
            yield from _play(answer, params, stats, self.script.token_delay_s, started)


def _play(
    answer: ScriptedAnswer,
    params: SamplingParams,
    stats: GenerationStats,
    delay_s: float,
    started: float,
) -> Iterator[Token]:
    """The answer's words as tokens, cut at a stop sequence or ``max_tokens``."""
    text, stop = _cut_at_stop(answer.text, () if params.choices else params.stop)
    words = _WORD.findall(text)
    finish = FinishReason.STOP_SEQUENCE if stop else FinishReason.STOP
    if len(words) > params.max_tokens:
        words, finish = words[: params.max_tokens], FinishReason.LENGTH
    for index, word in enumerate(words):
        if delay_s:
            time.sleep(delay_s)
        prob = answer.probs[min(index, len(answer.probs) - 1)]
        if stats.time_to_first_token_s is None:
            stats.time_to_first_token_s = time.perf_counter() - started
        stats.completion_tokens += 1
        yield Token(index, word, _signals(prob))
    stats.stop_sequence = stop
    stats.finish_reason = finish
    stats.total_s = time.perf_counter() - started


def _signals(prob: float) -> TokenSignals:
    """The chosen token has ``prob``; the rest is spread thinly (top-2 ≈ 0)."""
    p = min(max(prob, 1e-6), 1.0)
    rest = 1.0 - p
    entropy = -p * math.log(p) - (rest * math.log(rest / 1000) if rest > 0 else 0.0)
    return TokenSignals(prob=p, entropy=entropy, margin=p)


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    hits = [(text.find(s), s) for s in stops if s and s in text]
    if not hits:
        return text, None
    at, stop = min(hits)
    return text[:at], stop
