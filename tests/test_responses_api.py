"""``POST /v1/responses``, OpenAI's Responses API (text subset): the official ``openai``
client against a real daemon with SmolLM2 (whole and streamed answers, the event
sequence, limits, errors), and the body's validation in process (the parser, and the
aiohttp application with its guard, without a model)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from conftest import SMOLLM2, isolated_env, without_proxies
from daemonproc import DaemonProcess
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming
from support import EASY

from edge_agent import RequestOptions
from edge_agent.daemon.http_api import build_app
from edge_agent.daemon.responses_api import IGNORED_FIELDS, ResponsesBody, parse_responses
from ridgeline_core import errors
from ridgeline_core.store import ModelStore

MODELS = {"smol": "chat", "minilm": "embedding"}


def parse(**body: Any) -> Any:
    body.setdefault("input", "hi")
    return parse_responses(body, {}, MODELS)


# -- the body, in process ----------------------------------------------------------------


def test_input_and_instructions_become_the_chat_request() -> None:
    call = parse(
        model="smol",
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
            {
                "id": "msg_1",
                "type": "message",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "b", "annotations": []}],
            },
            {"role": "user", "content": "c"},
        ],
        max_output_tokens=12,
        temperature=0.5,
        top_p=0.9,
        ridgeline={"mode": "local", "threshold": 0.3},
    )
    assert call.chat.prompt == [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert call.chat.options == RequestOptions(
        model="smol", max_tokens=12, temperature=0.5, top_p=0.9, mode="local", threshold=0.3
    )
    assert call.chat.id.startswith("resp_") and call.message_id.startswith("msg_")
    assert not call.stream
    text = parse_responses({"input": "hi", "stream": True}, {"x-ridgeline-mode": "cloud"}, MODELS)
    assert text.chat.prompt == [{"role": "user", "content": "hi"}]
    assert text.chat.options.mode == "cloud" and text.stream


def test_every_field_of_the_api_is_known() -> None:
    """Each request field the installed openai client can send is accepted (used or
    ignored) or refused by name, never "unknown field"."""
    fields = set(ResponseCreateParamsStreaming.__annotations__)
    new = fields - set(ResponsesBody.model_fields)
    assert not new, f"the openai client sends fields ResponsesBody does not know: {new}"
    ignored = {
        "user": "u1",
        "safety_identifier": "s1",
        "prompt_cache_key": "k",
        "prompt_cache_retention": "24h",
        "prompt_cache_options": {"mode": "implicit"},
        "service_tier": "auto",
        "store": True,
        "truncation": "auto",
        "parallel_tool_calls": True,
        "max_tool_calls": 3,
        "reasoning": {"effort": "low"},
        "stream_options": {"include_obfuscation": False},
        "context_management": [{"type": "compaction"}],
        "access_programs": {"cyber": "standard"},
        "image": {"context_compression": "auto"},
        "background_options": {"completion_window": "soonest"},
    }
    assert set(ignored) == set(IGNORED_FIELDS)
    plain = parse()
    call = parse(
        **ignored,
        metadata={"app": "x"},
        tools=[],
        tool_choice="auto",
        text={"format": {"type": "text"}, "verbosity": "low"},
        include=["reasoning.encrypted_content"],
        top_logprobs=0,
        background=False,
        stream=None,
    )
    assert call.chat.options == plain.chat.options and call.chat.prompt == plain.chat.prompt


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"tools": [{"type": "function", "name": "f"}]}, "tools are not supported"),
        ({"tool_choice": "required"}, "tool_choice needs tools"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"include": ["message.output_text.logprobs"]}, "log probabilities"),
        ({"top_logprobs": 5}, "log probabilities"),
        ({"previous_response_id": "resp_1"}, "stores no responses"),
        ({"conversation": "conv_1"}, "stores no responses"),
        ({"prompt": {"id": "pmpt_1"}}, "stores no responses"),
        ({"background": True}, "stores no responses"),
        ({"moderation": {"model": "omni-moderation-latest"}}, "moderation"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "text only"),
        ({"input": [{"type": "function_call_output", "output": "x"}]}, "only messages"),
    ],
)
def test_what_would_change_the_answer_is_refused(body: dict[str, Any], words: str) -> None:
    with pytest.raises(errors.UnsupportedError, match=words):
        parse(**body)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": []}, "input"),
        ({"input": 5}, "input"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"input": [{"role": "user"}]}, "input[0].content"),
        ({"input": ["hi"]}, "input"),
        ({"input": [{"role": "user", "content": "a", "name": "x"}]}, "input[0].name"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 1.5}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stream": "yes"}, "stream"),
        ({"metadata": {"k": 1}}, "metadata.k"),
        ({"ridgeline": {"mode": "never"}}, "ridgeline.mode"),
        ({"frequency_penalty": 1}, "frequency_penalty"),  # not a Responses API field
    ],
)
def test_bad_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.InvalidRequestError) as caught:
        parse(**body)
    assert caught.value.param == param, str(caught.value)


def test_the_guard_answers_in_openai_error_shape() -> None:
    """The application in process (no model: every request here fails before it would
    run): statuses and bodies come from the same guard as the other endpoints."""
    catalog = [SimpleNamespace(name="smol", role="chat")]
    agent = SimpleNamespace(catalog=catalog)
    metrics = SimpleNamespace(errors=[], record_error=lambda kind: metrics.errors.append(kind))

    async def run(key: str | None) -> list[tuple[int, Any]]:
        from aiohttp.test_utils import TestClient, TestServer

        app = build_app(lambda: agent, Any, metrics, lambda: key, 1 << 16, True)  # type: ignore[arg-type]
        answers = []
        async with TestClient(TestServer(app)) as client:
            for body in (
                {"input": "hi", "model": "gpt-9"},
                {"input": "hi", "tools": [{"type": "web_search"}]},
                {"input": [], "stream": True},
                {"input": "x" * (1 << 17)},
            ):
                response = await client.post("/v1/responses", json=body)
                answers.append((response.status, await response.json()))
            response = await client.post("/v1/responses", data="{}")  # not JSON's type
            answers.append((response.status, await response.json()))
        return answers

    unknown, tools, empty, huge, form = asyncio.run(run(None))
    assert unknown[0] == 404 and unknown[1]["error"]["code"] == "model_not_found"
    assert tools[0] == 400 and tools[1]["error"]["code"] == "unsupported"
    assert empty[0] == 400 and empty[1]["error"]["param"] == "input"
    assert huge[0] == 413 and "max_request_bytes" in huge[1]["error"]["message"]
    assert form[0] == 400 and "Content-Type" in form[1]["error"]["message"]
    for _, body in (unknown, tools, empty, huge, form):
        assert set(body["error"]) == {"message", "type", "param", "code"}
    [(status, body), *_] = asyncio.run(run("secret"))
    assert status == 401 and body["error"]["code"] == "invalid_api_key"


class _FailingJob:
    """A job that streams ``events`` and then raises ``error`` (a broker lost mid-answer)."""

    def __init__(self, events: list[Any], error: BaseException) -> None:
        self.events, self.error, self.closed = events, error, False

    async def __aiter__(self) -> Any:
        for event in self.events:
            yield event
        raise self.error

    def close(self) -> None:
        self.closed = True


def test_an_error_mid_stream_ends_it_with_response_failed() -> None:
    """After the first event the status is sent: the failure is said in the stream, as
    ``error`` then ``response.failed``; before it, the error keeps its own status."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from edge_agent.daemon.http_guard import guard
    from edge_agent.daemon.responses_http import stream_response
    from edge_agent.request.events import TextChunk

    metrics = SimpleNamespace(errors=[], record_error=lambda kind: metrics.errors.append(kind))
    jobs: list[_FailingJob] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        call = parse_responses({"input": "hi", "stream": True}, {}, MODELS)
        return await stream_response(request, call, "smol", jobs[-1], metrics)  # type: ignore[arg-type]

    async def run(job: _FailingJob) -> tuple[int, str]:
        jobs.append(job)
        app = web.Application(middlewares=[guard(metrics, lambda: None, 1 << 16, True)])  # type: ignore[arg-type]
        app.router.add_post("/", handler)
        async with TestClient(TestServer(app)) as client:
            response = await client.post("/", json={})
            return response.status, await response.text()

    lost = errors.UnavailableError("the broker went away")
    status, text = asyncio.run(run(_FailingJob([TextChunk("Hel")], lost)))
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    names = [line[7:] for line in text.splitlines() if line.startswith("event: ")]
    assert status == 200 and names == [event["type"] for event in events]
    assert names[-3:] == ["response.output_text.delta", "error", "response.failed"]
    assert events[-2]["code"] == "unavailable" and "went away" in events[-2]["message"]
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "unavailable"
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert jobs[-1].closed and metrics.errors == ["unavailable"]
    status, text = asyncio.run(run(_FailingJob([TextChunk("Hel")], RuntimeError("bug"))))
    *_, last = (json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: "))
    assert last["response"]["error"]["code"] == "internal"
    status, text = asyncio.run(run(_FailingJob([], lost)))  # nothing sent yet
    assert status == 503 and json.loads(text)["error"]["code"] == "unavailable"


# -- the official client against a real daemon -------------------------------------------


@pytest.fixture(scope="module")
def daemon(
    smollm2_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    """SmolLM2, no broker: every answer is local."""
    root = tmp_path_factory.mktemp("responses")
    config = (
        f'[models]\ndefault = "{SMOLLM2}"\n[runtime]\nthreads = 2\n'
        "[generation]\nmax_tokens = 32\n[telemetry]\nsources = []\n"
        f'[budget]\nstate_file = "{root / "budget.json"}"\n'
    )
    process = DaemonProcess(without_proxies(isolated_env(model_store, root)), root, config=config)
    yield process
    process.stop()


def client(daemon: DaemonProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.mark.model
def test_responses_create_answers_with_the_decision(daemon: DaemonProcess) -> None:
    raw = client(daemon).responses.with_raw_response.create(
        model=SMOLLM2,
        instructions="Answer in one short sentence.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": EASY}]}],
        max_output_tokens=24,
        temperature=0,
        metadata={"app": "test"},
    )
    response = raw.parse()
    assert "Paris" in response.output_text
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.model == SMOLLM2
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text"
    assert response.instructions == "Answer in one short sentence."
    assert response.metadata == {"app": "test"}
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    decision = (response.model_extra or {})["ridgeline"]["decision"]
    assert decision["path"] == "local" and "no broker is configured" in decision["reason"]
    assert raw.headers["x-ridgeline-path"] == "local"


@pytest.mark.model
def test_responses_stream_sends_openais_events_in_order(daemon: DaemonProcess) -> None:
    api = client(daemon)
    events = list(
        api.responses.create(
            model="default", input=EASY, max_output_tokens=24, temperature=0, stream=True
        )
    )
    kinds = [event.type for event in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response  # type: ignore[union-attr]
    assert "Paris" in text and done.output_text == text
    assert events[-4].text == text  # type: ignore[union-attr]
    assert events[0].response.status == "in_progress"  # type: ignore[union-attr]
    assert done.status == "completed" and done.usage is not None
    assert (done.model_extra or {})["ridgeline"]["decision"]["path"] == "local"
    # the SDK's stream helper accumulates the same events into the same answer
    with api.responses.stream(model="default", input=EASY, max_output_tokens=24) as stream:
        final = stream.get_final_response()
    assert final.output_text and final.status == "completed"


@pytest.mark.model
def test_a_cut_answer_is_incomplete(daemon: DaemonProcess) -> None:
    api = client(daemon)
    response = api.responses.create(model="default", input=EASY, max_output_tokens=2)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens == 2
    events = list(
        api.responses.create(model="default", input=EASY, max_output_tokens=2, stream=True)
    )
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.status == "incomplete"  # type: ignore[union-attr]
    assert events[-2].item.status == "incomplete"  # type: ignore[union-attr]


@pytest.mark.model
def test_responses_errors_through_the_client(daemon: DaemonProcess) -> None:
    api = client(daemon)
    with pytest.raises(openai.NotFoundError) as unknown:
        api.responses.create(model="gpt-9", input=EASY)
    assert unknown.value.code == "model_not_found" and SMOLLM2 in str(unknown.value)
    with pytest.raises(openai.BadRequestError) as hot:  # checked before the stream starts
        api.responses.create(model="default", input=EASY, temperature=5, stream=True)
    assert hot.value.code == "invalid_request" and "temperature" in str(hot.value)
    with pytest.raises(openai.BadRequestError) as chained:
        api.responses.create(model="default", input=EASY, previous_response_id="resp_1")
    assert "previous_response_id" in str(chained.value)
    with pytest.raises(openai.BadRequestError) as empty:
        api.responses.create(model="default", input="   ")
    assert empty.value.code == "empty_prompt"
    status, _, body = daemon.post("/v1/responses", None, raw=b'{"input": "hi", "top_p": NaN}')
    assert status == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    assert json.loads(json.dumps(body))["error"]["type"] == "invalid_request_error"


@pytest.mark.model
def test_the_readme_example_runs_against_the_daemon(daemon: DaemonProcess) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("### The Responses API")
    [code] = re.findall(r"```py\n(.*?)```", readme[start : readme.index("\n### ", start + 1)], re.S)
    code = code.replace("http://127.0.0.1:8177", daemon.url)
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=without_proxies(dict(os.environ)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout and "no broker is configured" in result.stdout
