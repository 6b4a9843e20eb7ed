"""Models behind an OpenAI-compatible HTTP server: vLLM, llama-server, Ollama, TGI,
llama-cpp-python's server, hosted APIs.

One pooled aiohttp session per backend; each request is a streaming
``POST {base_url}/chat/completions`` read as server-sent events. Cancelling the
stream closes the upstream response, which is how such servers learn that the
client left and stop generating.

A request with ``choices`` is constrained upstream as the ``choices`` setting says:
``json_schema`` asks for ``{"choice": <one of the choices>}`` through
``response_format`` (an ``enum`` in a strict JSON schema) and takes the value out;
``grammar`` sends a GBNF grammar whose only sentences are the choices (the
``grammar`` extension of llama.cpp's servers) and takes the text as it is. Either
way the answer is held back until it is complete and checked: text that is not
one of the choices fails the request (UNAVAILABLE) instead of reaching the caller.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator
from typing import Any

from ridgeline_core.errors import (
    ConfigError,
    InvalidRequestError,
    MissingDependencyError,
    OverloadedError,
    UnavailableError,
    UnsupportedError,
)
from ridgeline_core.runtime import FinishReason
from ridgeline_core.runtime.choices import choices_grammar

from ..admission import Admission
from ..settings import OpenAIBackendSettings
from . import BackendRequest, Outcome

__all__ = ["OpenAIBackend"]

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.STOP,
    "tool_calls": FinishReason.STOP,
}
_CHOICE_KEY = "choice"  # the one property of the JSON object a json_schema answer is
_CHOICE_SLACK_TOKENS = 48  # room for the JSON object around the value, and whitespace


class OpenAIBackend:
    kind = "openai"
    role = "chat"

    def __init__(self, settings: OpenAIBackendSettings, env: dict[str, str] | None = None) -> None:
        self.name = settings.name
        self.context_length = settings.context_length
        self.admission = Admission(settings.name, settings.slots, settings.queue)
        self.running = 0
        self._settings = settings
        self._url = f"{settings.base_url}/chat/completions"
        self._upstream_model = settings.model or settings.name
        key = settings.api_key.get_secret_value()
        if not key and settings.api_key_env:
            key = (env if env is not None else dict(os.environ)).get(settings.api_key_env, "")
            if not key:
                raise ConfigError(
                    f"openai backend {settings.name!r}: environment variable "
                    f"{settings.api_key_env} is not set"
                )
        self._headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._session: Any = None

    async def start(self) -> None:
        try:
            import aiohttp
        except ImportError:
            raise MissingDependencyError.for_module("aiohttp", "broker") from None
        connector = aiohttp.TCPConnector(
            limit=self._settings.max_connections, keepalive_timeout=30, ttl_dns_cache=300
        )
        timeout = aiohttp.ClientTimeout(
            total=self._settings.timeout_s, sock_connect=self._settings.connect_timeout_s
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self._headers, raise_for_status=False
        )

    def _payload(self, request: BackendRequest) -> bytes:
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

    def _chosen(self, text: str, choices: tuple[str, ...]) -> str:
        """The choice a complete constrained answer names, or UnavailableError."""
        chosen: object = text
        if self._settings.choices == "json_schema":
            try:
                chosen = json.loads(text)[_CHOICE_KEY]
            except (ValueError, KeyError, TypeError):
                chosen = None
        if not isinstance(chosen, str) or chosen not in choices:
            raise UnavailableError(
                f"model {self.name!r}: {self._settings.base_url} answered {text[:120]!r}, "
                f"which is not one of the {len(choices)} choices (does it support "
                f"choices = {self._settings.choices!r}?)"
            )
        return chosen

    async def stream(self, request: BackendRequest) -> AsyncGenerator[str | Outcome, None]:
        import aiohttp

        if self._session is None:
            raise RuntimeError(f"backend {self.name} is not started")
        choices = request.params.choices
        if choices and self._settings.choices == "off":
            raise UnsupportedError(
                f"model {self.name!r} cannot limit its answer to choices "
                '(its [[openai]] table says choices = "off")'
            )
        self.running += 1
        try:
            async with self._session.post(self._url, data=self._payload(request)) as response:
                if response.status != 200:
                    raise await self._http_error(response)
                async for item in self._answer(response, request):
                    yield item
        except aiohttp.ClientError as exc:  # refused, reset, or a broken response body
            raise UnavailableError(
                f"model {self.name!r}: cannot reach {self._settings.base_url}: {exc}"
            ) from None
        except asyncio.TimeoutError:
            raise UnavailableError(
                f"model {self.name!r}: {self._settings.base_url} did not answer within "
                f"{self._settings.timeout_s:g} s"
            ) from None
        except (ValueError, AttributeError, TypeError) as exc:  # bad JSON, UTF-8 or shapes
            raise UnavailableError(
                f"model {self.name!r}: {self._settings.base_url} sent a malformed stream: {exc}"
            ) from None
        finally:
            self.running -= 1

    async def _answer(
        self, response: Any, request: BackendRequest
    ) -> AsyncGenerator[str | Outcome, None]:
        """The upstream's server-sent events as text pieces, then the outcome. One piece
        per network read: text that arrives together leaves together, since every gRPC
        message costs the broker far more than joining strings. A choices answer is held
        until it is complete and checked."""
        choices = request.params.choices
        events, held = SseChunks(), []
        while not events.done:
            data = await response.content.readany()
            if not data:
                break
            texts = events.feed(data)
            if texts and choices:
                held += texts
            elif texts:
                yield "".join(texts)
        if not (events.done or events.finished):
            raise UnavailableError(
                f"model {self.name!r}: {self._settings.base_url} ended the stream "
                "before the answer was complete"
            )
        finish = events.finish
        if choices:
            yield self._chosen("".join(held), choices)
            finish = FinishReason.STOP
        prompt_tokens = events.prompt_tokens
        if not prompt_tokens:  # not reported: estimate, so token limits still hold
            prompt_tokens = (sum(len(m.content) for m in request.messages) + 3) // 4
        yield Outcome(finish, prompt_tokens, events.completion_tokens or events.pieces)

    async def _http_error(self, response: Any) -> Exception:
        text = (await response.content.read(4096)).decode("utf-8", errors="replace")[:300]
        try:
            message = json.loads(text)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = text.strip() or response.reason
        status = response.status
        where = f"model {self.name!r}: upstream answered HTTP {status}: {message}"
        if status == 400:
            return InvalidRequestError(where)
        if status == 429:
            try:
                retry_after = float(response.headers.get("Retry-After", "1"))
            except ValueError:
                retry_after = 1.0
            return OverloadedError(where, retry_after)
        return UnavailableError(where)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


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
