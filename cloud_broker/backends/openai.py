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
import os
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from ridgeline_core.errors import (
    ConfigError,
    MissingDependencyError,
    UnavailableError,
    UnsupportedError,
)
from ridgeline_core.runtime import ChatMessage, FinishReason

from ..admission import Admission
from ..settings import OpenAIBackendSettings
from . import AnswerSignals, BackendRequest, Outcome, Probe
from .openai_probe import probe_of, probe_payload
from .openai_wire import ChatCompletions, SseChunks, http_error

__all__ = ["OpenAIBackend"]

# what reading an upstream's stream raises when the stream is not what the API says
_MALFORMED = (ValueError, AttributeError, TypeError)


class OpenAIBackend:
    """One model behind an OpenAI-compatible server (see the module docstring)."""

    kind = "openai"
    role = "chat"

    def __init__(self, settings: OpenAIBackendSettings, env: dict[str, str] | None = None) -> None:
        self.name = settings.name
        self.context_length = settings.context_length
        self.admission = Admission(settings.name, settings.slots, settings.queue)
        self.running = 0
        self._settings = settings
        self._url = f"{settings.base_url}/chat/completions"
        self._wire = ChatCompletions(settings)
        self._headers = _headers(settings, env)
        self._session: Any = None

    async def start(self) -> None:
        self._session = _session(self._settings, self._headers)

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
            async with self._session.post(self._url, data=self._wire.payload(request)) as response:
                if response.status != 200:
                    raise await http_error(response, self.name)
                async for item in self._answer(response, request):
                    yield item
        except (aiohttp.ClientError, asyncio.TimeoutError, *_MALFORMED) as exc:
            raise _upstream_failure(exc, self.name, self._settings) from None
        finally:
            self.running -= 1

    def _answer(
        self, response: Any, request: BackendRequest
    ) -> AsyncGenerator[str | Outcome, None]:
        return answer_of(response, request, self._wire, self.name, self._settings.base_url)

    async def next_token_probs(
        self, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
    ) -> Probe:
        """One token asked for with its top logprobs (the upstream runs one forward pass
        and samples one token); each candidate's probability is the mass of the top tokens
        that spell its start."""
        return await _probe(self, messages, candidates)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _probe(
    backend: OpenAIBackend, messages: tuple[ChatMessage, ...], candidates: Sequence[str]
) -> Probe:
    import aiohttp

    if backend._session is None:
        raise RuntimeError(f"backend {backend.name} is not started")
    payload = probe_payload(backend._wire.model, messages)
    backend.running += 1
    try:
        async with backend._session.post(backend._url, data=payload) as response:
            if response.status != 200:
                raise await http_error(response, backend.name)
            body = await response.json(content_type=None)
        return probe_of(body, candidates, backend.name, messages)
    except (aiohttp.ClientError, asyncio.TimeoutError, *_MALFORMED) as exc:
        raise _upstream_failure(exc, backend.name, backend._settings) from None
    finally:
        backend.running -= 1


def _upstream_failure(
    exc: BaseException, name: str, settings: OpenAIBackendSettings
) -> UnavailableError:
    """Not reaching the upstream, its timeout, or a stream we cannot read, as ours."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientError):  # refused, reset, or a broken response body
        return UnavailableError(f"model {name!r}: cannot reach {settings.base_url}: {exc}")
    if isinstance(exc, asyncio.TimeoutError):
        return UnavailableError(
            f"model {name!r}: {settings.base_url} did not answer within {settings.timeout_s:g} s"
        )
    # one of _MALFORMED: bad JSON, UTF-8 or shapes
    return UnavailableError(f"model {name!r}: {settings.base_url} sent a malformed stream: {exc}")


def _headers(settings: OpenAIBackendSettings, env: dict[str, str] | None) -> dict[str, str]:
    """The request headers, with the API key from the settings or its environment variable."""
    key = settings.api_key.get_secret_value()
    if not key and settings.api_key_env:
        key = (env if env is not None else dict(os.environ)).get(settings.api_key_env, "")
        if not key:
            raise ConfigError(
                f"openai backend {settings.name!r}: environment variable "
                f"{settings.api_key_env} is not set"
            )
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _session(settings: OpenAIBackendSettings, headers: dict[str, str]) -> Any:
    """A pooled aiohttp session with the backend's limits and timeouts."""
    try:
        import aiohttp
    except ImportError:
        raise MissingDependencyError.for_module("aiohttp", "broker") from None
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections, keepalive_timeout=30, ttl_dns_cache=300
    )
    timeout = aiohttp.ClientTimeout(
        total=settings.timeout_s, sock_connect=settings.connect_timeout_s
    )
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers, raise_for_status=False
    )


async def answer_of(
    response: Any, request: BackendRequest, wire: ChatCompletions, name: str, base_url: str
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
            f"model {name!r}: {base_url} ended the stream before the answer was complete"
        )
    finish = events.finish
    if choices:
        yield wire.chosen("".join(held), choices)
        finish = FinishReason.STOP
    prompt_tokens = events.prompt_tokens
    if not prompt_tokens:  # not reported: estimate, so token limits still hold
        prompt_tokens = (sum(len(m.content) for m in request.messages) + 3) // 4
    signals = None
    if events.logprobs:
        found = events.logprobs
        signals = AnswerSignals(sum(found) / len(found), min(found), len(found))
    yield Outcome(finish, prompt_tokens, events.completion_tokens or events.pieces, signals)
