"""OpenAI's chat completions API as the openai backend speaks it: the request body
(sampling, and the choices constraint of :mod:`.openai_choices`), the streamed server-sent
events, and upstream HTTP errors as ours."""

from __future__ import annotations

import json
from typing import Any

from ridgeline_core.errors import (
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
)
from ridgeline_core.runtime import FinishReason

from ..settings import OpenAIBackendSettings
from . import BackendRequest
from .openai_choices import ChoicesConstraint

__all__ = ["ChatCompletions", "SseChunks", "http_error"]

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.STOP,
    "tool_calls": FinishReason.STOP,
}


class ChatCompletions:
    """Request bodies for one upstream model, and the choice in a constrained answer."""

    def __init__(self, settings: OpenAIBackendSettings) -> None:
        self._choices = ChoicesConstraint(settings)
        self.model = settings.model or settings.name  # the name upstream

    def payload(self, request: BackendRequest) -> bytes:
        params = request.params
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "stream": True,
            # OpenAI and vLLM report usage in a stream only when asked; others ignore it
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if request.signals:
            # top_logprobs too: llama-cpp-python's server sends none without it
            body.update(logprobs=True, top_logprobs=1)
        if params.choices:
            body.update(self._choices.fields(params.choices))
        elif params.stop:
            body["stop"] = list(params.stop)
        return json.dumps(body).encode()

    def chosen(self, text: str, choices: tuple[str, ...]) -> str:
        """The choice a complete constrained answer names, or UnavailableError."""
        return self._choices.chosen(text, choices)


async def http_error(response: Any, name: str) -> Exception:
    """An upstream's HTTP error as ours: 400 invalid, 429 overloaded, else unavailable."""
    text = (await response.content.read(4096)).decode("utf-8", errors="replace")[:300]
    try:
        message = json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = text.strip() or response.reason
    status = response.status
    where = f"model {name!r}: upstream answered HTTP {status}: {message}"
    if status == 400:
        return InvalidRequestError(where)
    if status == 429:
        try:
            retry_after = float(response.headers.get("Retry-After", "1"))
        except ValueError:
            retry_after = 1.0
        return OverloadedError(where, retry_after)
    return UnavailableError(where)


def _count(value: object) -> int:
    """A token count from upstream JSON; anything but a non-negative integer counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


class SseChunks:
    """OpenAI's chat completion chunks, read from server-sent event bytes as they come."""

    def __init__(self) -> None:
        self.buffer = b""
        self.done = False  # [DONE] arrived
        self.finished = False  # a choice said how it finished
        self.finish = FinishReason.STOP
        self.prompt_tokens = self.completion_tokens = self.pieces = 0
        self.logprobs: list[float] = []  # of the answer's tokens, when the upstream sends them

    def feed(self, data: bytes) -> list[str]:
        """The text pieces in ``data`` (a partial line waits for the next read)."""
        lines = (self.buffer + data).split(b"\n")
        self.buffer = lines.pop()
        texts: list[str] = []
        for raw in lines:
            if not raw.startswith(b"data:"):
                continue
            payload = raw[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                break
            texts += self._chunk(json.loads(payload))
        return texts

    def _chunk(self, chunk: dict[str, Any]) -> list[str]:
        usage = chunk.get("usage")
        if usage:
            self.prompt_tokens = _count(usage.get("prompt_tokens"))
            self.completion_tokens = _count(usage.get("completion_tokens"))
        texts = []
        for choice in chunk.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                self.pieces += 1
                texts.append(text)
            self.logprobs += _logprobs(choice)
            reason = choice.get("finish_reason")
            if reason:
                self.finish = _FINISH.get(reason, FinishReason.STOP)
                self.finished = True
        return texts


def _logprobs(choice: dict[str, Any]) -> list[float]:
    """The token logprobs a chunk's choice carries (``logprobs.content[].logprob``)."""
    content = (choice.get("logprobs") or {}).get("content") or ()
    found = [entry.get("logprob") for entry in content if isinstance(entry, dict)]
    return [float(value) for value in found if isinstance(value, int | float)]
