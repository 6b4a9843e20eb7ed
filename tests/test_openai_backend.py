"""The openai backend against a real HTTP server that misbehaves on purpose.

llama-cpp-python's server (tests/test_broker_openai.py) shows the happy path; here an
aiohttp server sends what broken or hostile upstreams send, and every case must end as
a precise domain error, never an exception the broker would answer INTERNAL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from cloud_broker.backends import BackendRequest, Outcome
from cloud_broker.backends.openai import OpenAIBackend
from cloud_broker.settings import OpenAIBackendSettings
from ridgeline_core import errors
from ridgeline_core.runtime import ChatMessage, FinishReason, SamplingParams

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST = BackendRequest("r1", (ChatMessage("user", "x" * 40),), SamplingParams(max_tokens=8))


def sse(*events: bytes) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(event)
        return response

    return handler


async def _run(
    handler: Handler, request: BackendRequest = REQUEST, **settings: Any
) -> list[str | Outcome]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    backend = OpenAIBackend(
        OpenAIBackendSettings(
            name="up", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5, **settings
        )
    )
    await backend.start()
    try:
        return [item async for item in backend.stream(request)]
    finally:
        await backend.close()
        await runner.cleanup()


def run(handler: Handler) -> list[str | Outcome]:
    return asyncio.run(_run(handler))


CHUNK = b'data: {"choices": [{"delta": {"content": "Hi"}}]}\n\n'
DONE = b'data: {"choices": [{"delta": {}, "finish_reason": "length"}]}\n\ndata: [DONE]\n\n'


def test_a_good_stream_without_usage_estimates_prompt_tokens() -> None:
    items = run(sse(CHUNK, CHUNK, DONE))
    assert "".join(i for i in items if isinstance(i, str)) == "HiHi"
    outcome = items[-1]
    assert isinstance(outcome, Outcome)
    assert outcome.finish_reason == FinishReason.LENGTH
    assert outcome.prompt_tokens == 10  # 40 characters / 4
    assert outcome.completion_tokens == 2


def test_malformed_usage_counts_as_unknown() -> None:
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": "7", "completion_tokens": -3}}\n\n'
    outcome = run(sse(CHUNK, usage, DONE))[-1]
    assert isinstance(outcome, Outcome)
    assert outcome.prompt_tokens == 10 and outcome.completion_tokens == 1


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ((CHUNK,), "ended the stream before the answer was complete"),
        ((b"data: \xff\xfe{}\n\n",), "malformed stream"),
        ((b"data: {not json\n\n",), "malformed stream"),
        ((b'data: {"choices": 5}\n\n',), "malformed stream"),
    ],
)
def test_broken_streams_are_unavailable(events: tuple[bytes, ...], message: str) -> None:
    with pytest.raises(errors.UnavailableError, match=message):
        run(sse(*events))


def test_upstream_dying_midway_is_unavailable() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(CHUNK)
        assert request.transport is not None
        request.transport.close()  # chunked body cut off
        return response

    with pytest.raises(errors.UnavailableError):
        run(handler)


@pytest.mark.parametrize(
    ("status", "body", "error", "extra"),
    [
        (400, b'{"error": {"message": "bad stop"}}', errors.InvalidRequestError, {}),
        (401, b"\xff\xfe not utf-8", errors.UnavailableError, {}),
        (429, b"slow down", errors.OverloadedError, {"Retry-After": "7"}),
        (503, b"x" * 100_000, errors.UnavailableError, {}),
    ],
)
def test_http_errors_map_to_domain_errors(
    status: int, body: bytes, error: type[errors.RidgelineError], extra: dict[str, Any]
) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=extra)

    with pytest.raises(error) as excinfo:
        run(handler)
    assert f"HTTP {status}" in str(excinfo.value)
    assert len(str(excinfo.value)) < 500
    if isinstance(excinfo.value, errors.OverloadedError):
        assert excinfo.value.retry_after_s == 7.0


# -- answers limited to choices ---------------------------------------------------------------

LABELS = ("lights_on", "lights_off", 'say "hi"')


def content(*texts: str) -> bytes:
    chunks = b"".join(
        f"data: {json.dumps({'choices': [{'delta': {'content': text}}]})}\n\n".encode()
        for text in texts
    )
    return (
        chunks + b'data: {"choices": [{"delta": {}, "finish_reason": "stop"}]}\n\ndata: [DONE]\n\n'
    )


def run_choices(
    *events: bytes, mode: str = "json_schema", stop: tuple[str, ...] = ()
) -> tuple[list[str | Outcome], dict[str, Any]]:
    """Stream a choices request through a backend set to ``mode``; the items and the body
    the upstream received."""
    bodies: list[dict[str, Any]] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        bodies.append(await request.json())
        return await sse(*events)(request)

    params = SamplingParams(max_tokens=2, choices=LABELS, stop=stop)
    request = BackendRequest("r1", (ChatMessage("user", "Classify"),), params)
    items = asyncio.run(_run(handler, request=request, choices=mode))
    return items, bodies[0]


def test_json_schema_choices_send_an_enum_and_take_the_value_out() -> None:
    items, body = run_choices(content('{"choice": ', '"say \\"hi\\""', "}"), stop=("x",))
    assert items[:-1] == ['say "hi"']  # one delta, the bare choice
    outcome = items[-1]
    assert isinstance(outcome, Outcome) and outcome.finish_reason == FinishReason.STOP
    schema = body["response_format"]["json_schema"]["schema"]
    assert body["response_format"]["type"] == "json_schema"
    assert schema["properties"]["choice"] == {"type": "string", "enum": list(LABELS)}
    assert schema["required"] == ["choice"] and schema["additionalProperties"] is False
    assert "stop" not in body and "grammar" not in body
    assert body["max_tokens"] > len(json.dumps('say "hi"'))  # max_tokens cuts no choice


def test_grammar_choices_send_gbnf_and_take_the_text_as_it_is() -> None:
    items, body = run_choices(content("lights", "_off"), mode="grammar")
    assert items[:-1] == ["lights_off"]
    assert body["grammar"] == 'root ::= "lights_on" | "lights_off" | "say \\"hi\\""\n'
    assert "response_format" not in body


@pytest.mark.parametrize(
    ("mode", "texts"),
    [
        ("json_schema", ('{"choice": "lights_dim"}',)),
        ("json_schema", ('{"label": "lights_on"}',)),
        ("json_schema", ('{"choice": "lights_on"',)),  # cut off
        ("json_schema", ("lights_on",)),  # the upstream ignored response_format
        ("grammar", (" lights_on",)),
        ("grammar", ("Sure! lights_on",)),
    ],
)
def test_an_answer_outside_the_choices_fails_the_request(mode: str, texts: tuple[str]) -> None:
    with pytest.raises(errors.UnavailableError, match="which is not one of the 3 choices"):
        run_choices(content(*texts), mode=mode)


def test_a_backend_set_to_off_refuses_choices() -> None:
    with pytest.raises(errors.UnsupportedError, match="cannot limit its answer to choices"):
        run_choices(content("lights_on"), mode="off")
