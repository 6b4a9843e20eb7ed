"""OpenAI's chat completions API as the openai backend speaks it: the request body
(sampling, and the choices constraint as a grammar or a JSON schema), the streamed server-
sent events, the answer to a choices request, and upstream HTTP errors as ours."""

from __future__ import annotations

import json
from typing import Any

from ridgeline_core.errors import (
    InvalidRequestError,
    OverloadedError,
    UnavailableError,
)
from ridgeline_core.runtime import FinishReason
from ridgeline_core.runtime.choices import choices_grammar

from ..settings import OpenAIBackendSettings
from . import BackendRequest

__all__ = ["ChatCompletions", "SseChunks", "http_error"]

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.STOP,
    "tool_calls": FinishReason.STOP,
}
_CHOICE_KEY = "choice"  # the one property of the JSON object a json_schema answer is
_CHOICE_SLACK_TOKENS = 48  # room for the JSON object around the value, and whitespace


class ChatCompletions:
    """Request bodies for one upstream model, and the choice in a constrained answer."""

    def __init__(self, settings: OpenAIBackendSettings) -> None:
        self._settings = settings
        self._upstream_model = settings.model or settings.name

    def payload(self, request: BackendRequest) -> bytes:
        params = request.params
        body: dict[str, Any] = {
            "model": self._upstream_model,
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
        if params.choices:
            body.update(self._choices_payload(params.choices))
        elif params.stop:
            body["stop"] = list(params.stop)
        return json.dumps(body).encode()

    def _choices_payload(self, choices: tuple[str, ...]) -> dict[str, Any]:
        """The fields that limit the answer to ``choices``. max_tokens covers the longest
        choice however it is written (JSON escapes included), so none is cut short."""
        longest = max(len(json.dumps(choice)) for choice in choices)
        fields: dict[str, Any] = {"max_tokens": longest + _CHOICE_SLACK_TOKENS}
        if self._settings.choices == "grammar":
            fields["grammar"] = choices_grammar(choices)
        else:
            schema = {
                "type": "object",
                "properties": {_CHOICE_KEY: {"type": "string", "enum": list(choices)}},
                "required": [_CHOICE_KEY],
                "additionalProperties": False,
            }
            fields["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "choice", "strict": True, "schema": schema},
            }
        return fields

    def chosen(self, text: str, choices: tuple[str, ...]) -> str:
        """The choice a complete constrained answer names, or UnavailableError."""
        chosen: object = text
        if self._settings.choices == "json_schema":
            try:
                chosen = json.loads(text)[_CHOICE_KEY]
            except (ValueError, KeyError, TypeError):
                chosen = None
        if not isinstance(chosen, str) or chosen not in choices:
            where = f"model {self._settings.name!r}: {self._settings.base_url}"
            raise UnavailableError(
                f"{where} answered {text[:120]!r}, "
                f"which is not one of the {len(choices)} choices (does it support "
                f"choices = {self._settings.choices!r}?)"
            )
        return chosen


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
            reason = choice.get("finish_reason")
            if reason:
                self.finish = _FINISH.get(reason, FinishReason.STOP)
                self.finished = True
        return texts
