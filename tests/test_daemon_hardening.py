"""The daemon against hostile and unusual clients (issue 16): who may call (Host check),
bodies that used to crash a handler, clients that leave or never read, real OpenAI
request fields, OpenAI's error wording.

Most checks run against an in-process daemon over the scripted model
(:mod:`daemonthread`: the real listeners, middleware and pipeline, real clients); each
user-facing fix is also checked once against a real ``edge-agent serve`` with SmolLM2.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import struct
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import GEMMA, SMOLLM2, isolated_env, without_proxies
from daemonproc import DaemonProcess
from daemonthread import ThreadDaemon
from fastlane import EASY, SCRIPT, SCRIPTED, fast_settings
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, StreamReset, TrailersReceived
from h2.settings import SettingCodes
from hypothesis import given
from hypothesis import strategies as st

from edge_agent import EdgeClient
from ridgeline_core import errors

# 6,000 tokens of 2 KB at 2 ms each: 12 s of answer, ~1 MB/s of SSE (a loopback socket
# buffers up to 4 MB, so a client that does not read stalls the writes within seconds)
LONG = " ".join(f"{i:05d}" + "x" * 2000 for i in range(6000))
HARDENING_SCRIPT: dict[str, Any] = {
    **SCRIPT,
    "answers": [*SCRIPT["answers"], {"when": "go on forever", "text": LONG, "prob": 0.95}],
    "token_delay_s": 0.002,
}
LOCAL = {"mode": "local"}


def settings(root: Path, **daemon: Any) -> Any:
    """The scripted model, pulled; HTTP and gRPC on loopback ports; one slot, no queue."""
    pulled = fast_settings(
        root,
        HARDENING_SCRIPT,
        daemon={"http": "127.0.0.1:0", "grpc": "127.0.0.1:0", "slots": 1, "queue": 0, **daemon},
        runtime={"n_ctx": 384},  # under the scripted model's trained 512
    )
    pulled.models.store().pull(pulled.models.catalog().get(SCRIPTED))
    return pulled


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadDaemon]:
    daemon = ThreadDaemon(settings(tmp_path_factory.mktemp("hardening"), write_stall_s=1.0))
    yield daemon
    daemon.stop()


@pytest.fixture
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The test's requests log no error and no traceback (a refusal is not a bug)."""
    with caplog.at_level(logging.WARNING):
        yield
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


def chat(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


def openai_error(body: Any) -> dict[str, Any]:
    """The error object of an OpenAI error body (asserting its shape)."""
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert {"message", "type", "param", "code"} <= set(error), body
    assert isinstance(error["message"], str) and error["message"], body
    return error


# -- who may call: the loopback Host check (DNS rebinding) -------------------------------


def host_status(port: int, host: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", "/v1/models", skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


def test_only_literal_loopback_hosts_pass_the_rebinding_check(edge: ThreadDaemon) -> None:
    port = edge.port
    refused = [
        "127.0.0.1.attacker.example",
        f"127.0.0.1.nip.io:{port}",
        "127.attacker",
        "127.0.0.1.attacker.example:80",
        "localhost.attacker.example",
        "attacker.example",
        "[::1].attacker.example",
        "[::2]",
        "0.0.0.0",
        "10.0.0.1",
        "127.0.0.1:notaport",
        "",
    ]
    accepted = [
        "127.0.0.1",
        f"127.0.0.1:{port}",
        "127.1.2.3",
        f"localhost:{port}",
        "LOCALHOST",
        "[::1]",
        f"[::1]:{port}",
        "localhost.",
    ]
    assert {host: host_status(port, host) for host in refused} == dict.fromkeys(refused, 403)
    assert {host: host_status(port, host) for host in accepted} == dict.fromkeys(accepted, 200)


# -- bodies that used to answer 500 with a traceback -------------------------------------


HUGE = 10**400  # an integer no float holds


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", chat("hi", temperature=HUGE)),
        ("/v1/chat/completions", chat("hi", top_p=-HUGE)),
        ("/v1/chat/completions", chat("hi", max_tokens=HUGE)),
        ("/v1/chat/completions", chat("hi", seed=HUGE)),
        ("/v1/chat/completions", chat("hi", n=HUGE)),
        ("/v1/chat/completions", chat("hi", ridgeline={"threshold": HUGE})),
        ("/v1/chat/completions", chat("hi", ridgeline={"deadline_s": HUGE})),
        ("/v1/completions", {"prompt": "hi", "max_completion_tokens": HUGE}),
        ("/v1/classify", {"specialist": "x", "text": "y", "threshold": HUGE}),
        ("/v1/classify", {"specialist": "x", "text": "y", "deadline_s": HUGE}),
    ],
)
def test_numbers_beyond_float_range_are_a_bad_request(
    edge: ThreadDaemon, no_errors_logged: None, path: str, body: dict[str, Any]
) -> None:
    status, answer = edge.request("POST", path, body)
    assert status == 400, answer
    assert openai_error(answer)["type"] == "invalid_request_error"


def test_deep_nesting_and_lone_surrogates_are_a_bad_request(
    edge: ThreadDaemon, no_errors_logged: None
) -> None:
    deep = b'{"messages": [{"role": "user", "content": "hi"}], "metadata": ' + b"[" * 50_000
    deep += b"]" * 50_000 + b"}"
    status, body = edge.request("POST", "/v1/chat/completions", raw=deep)
    assert status == 400 and "nest" in openai_error(body)["message"], body
    lone = '{"role": "user", "content": "caf\\udce9 au lait"}'
    cases = {
        "/v1/chat/completions": '{"messages": [' + lone + "]}",
        "/v1/completions": '{"prompt": "\\ud800"}',
        "/v1/embeddings": '{"input": ["ok", "\\udfff"]}',
        "/v1/classify": '{"specialist": "x", "text": "\\ud83d"}',
    }
    for path, text in cases.items():
        status, body = edge.request("POST", path, raw=text.encode())
        assert status == 400, (path, body)
        assert "surrogate" in openai_error(body)["message"], body
    a_pair = '{"messages": [{"role": "user", "content": "\\ud83d\\ude00 capital of France?"}]}'
    status, body = edge.request("POST", "/v1/chat/completions", raw=a_pair.encode())
    assert status == 200, body  # a surrogate *pair* is one real character


def test_non_utf8_authorization_is_unauthenticated(tmp_path: Path, no_errors_logged: None) -> None:
    keyed = ThreadDaemon(settings(tmp_path, api_key="secret"))
    try:
        for header in (b"Bearer \xff\xfe", b"\xc3\x28 secret", b"Bearer secret\x80"):
            with socket.create_connection(("127.0.0.1", keyed.port), timeout=30) as s:
                s.sendall(
                    b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: "
                    + header
                    + b"\r\nConnection: close\r\n\r\n"
                )
                reply = b""
                while chunk := s.recv(65536):
                    reply += chunk
            assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
            assert b'"invalid_api_key"' in reply
        status, _ = keyed.request("GET", "/v1/models", headers={"Authorization": "Bearer secret"})
        assert status == 200
    finally:
        keyed.stop()


# -- the gRPC API: a path-like model name ------------------------------------------------


def test_grpc_path_like_model_is_invalid_argument_not_internal(
    edge: ThreadDaemon, no_errors_logged: None
) -> None:
    with EdgeClient(edge.grpc) as client:
        for name in ("../x", "a/b", "..", "x\\y"):
            with pytest.raises(errors.InvalidModelNameError) as raised:
                client.ask("capital of France?", model=name)
            assert raised.value.status == "INVALID_ARGUMENT"
    status, body = edge.request("POST", "/v1/chat/completions", chat("hi", model="../x"))
    assert status in (400, 404), body
    assert edge.metric("ridgeline_edge_request_errors_total", kind="internal") == 0


# -- OpenAI's wording for a prompt over the context --------------------------------------


def test_context_overflow_uses_openais_wording(edge: ThreadDaemon) -> None:
    words = "capital of France " * 400  # the scripted model holds 384 words here
    status, body = edge.request("POST", "/v1/chat/completions", chat(words, ridgeline=LOCAL))
    error = openai_error(body)
    assert status == 400 and error["code"] == "context_length_exceeded", body
    assert error["message"].startswith(
        "This model's maximum context length is 384 tokens. However, your messages resulted in "
    ), error
    status, body = edge.request("POST", "/v1/completions", {"prompt": words, "ridgeline": LOCAL})
    error = openai_error(body)
    assert status == 400 and error["code"] == "context_length_exceeded", body
    assert error["message"].startswith(
        "This model's maximum context length is 384 tokens. However, your prompt resulted in "
    ), error


# -- clients that never read, clients that reset -----------------------------------------


FOREVER = {
    "messages": [{"role": "user", "content": "go on forever"}],
    "max_tokens": 30_000,  # all of LONG: only a cancel ends it sooner
    "stream": True,
    "ridgeline": LOCAL,
}


# the same endless answer from each streaming endpoint, and what only its end would say
STREAMS = {
    "/v1/chat/completions": (FOREVER, b"[DONE]"),
    "/v1/responses": (
        {"input": "go on forever", "max_output_tokens": 30_000, "stream": True, "ridgeline": LOCAL},
        b"response.completed",
    ),
}


def raw_stream(
    port: int,
    body: dict[str, Any],
    receive_buffer: int | None = None,
    path: str = "/v1/chat/completions",
) -> socket.socket:
    """A streaming request on a raw socket, nothing read yet (``receive_buffer``:
    SO_RCVBUF, set before connecting so the window it advertises stays small)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    data = json.dumps(body).encode()
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data)
        + data
    )
    return s


def reset(s: socket.socket) -> None:
    """Close with a TCP RST, as a killed client does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def wait_until(check: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return bool(check())


@pytest.mark.parametrize("path", sorted(STREAMS))
def test_a_client_that_never_reads_is_cut_off_and_frees_its_slot(
    edge: ThreadDaemon, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    body, end = STREAMS[path]
    cancelled = edge.metric("ridgeline_edge_request_errors_total", kind="cancelled")
    stalled = raw_stream(edge.port, body, receive_buffer=4096, path=path)
    try:
        assert wait_until(lambda: edge.running() == 1, 10.0)
        # the generation would run for 12 s; write_stall_s = 1 s ends it sooner
        with caplog.at_level(logging.WARNING):
            assert wait_until(lambda: edge.running() == 0, 30.0)
        assert edge.metric("ridgeline_edge_request_errors_total", kind="cancelled") == (
            cancelled + 1
        )
        assert edge.metric("ridgeline_edge_request_errors_total", kind="internal") == 0
        assert any("took no data" in r.getMessage() for r in caplog.records)
        status, body = edge.request("POST", "/v1/chat/completions", chat("capital of France?"))
        assert status == 200 and "Paris" in body["choices"][0]["message"]["content"]
        received = b""
        while chunk := stalled.recv(1 << 16):  # what was buffered, then the end
            received += chunk
        assert received.startswith(b"HTTP/1.1 200") and end not in received
    finally:
        stalled.close()


@pytest.mark.parametrize("path", sorted(STREAMS))
def test_a_reset_right_after_the_first_bytes_is_one_cancel_not_an_error(
    edge: ThreadDaemon, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    cancelled = edge.metric("ridgeline_edge_request_errors_total", kind="cancelled")
    resets = 20
    with caplog.at_level(logging.WARNING):
        for _ in range(resets):
            s = raw_stream(edge.port, STREAMS[path][0], path=path)
            assert s.recv(64).startswith(b"HTTP/1.1 200")
            reset(s)
            assert wait_until(lambda: edge.running() == 0, 10.0)
    assert edge.metric("ridgeline_edge_request_errors_total", kind="internal") == 0
    assert edge.metric("ridgeline_edge_request_errors_total", kind="cancelled") == (
        cancelled + resets
    )
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]


class StalledGrpc:
    """A raw HTTP/2 gRPC call to ``Edge/Ask`` from a client whose stream window is 0 (it
    never takes a byte of the answer) and that answers pings, as issue 16 found it."""

    def __init__(self, target: str, request: bytes) -> None:
        host, port = target.rsplit(":", 1)
        self.socket = socket.create_connection((host, int(port)), timeout=1)
        self.h2 = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/ridgeline.v1.Edge/Ask"),
            (":authority", target),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        self.h2.send_headers(1, headers)
        self.h2.send_data(1, b"\0" + struct.pack(">I", len(request)) + request, end_stream=True)
        self.socket.sendall(self.h2.data_to_send())
        self.status: str | None = None  # grpc-status of the trailers, once they come
        self.reset = False

    def pump(self, seconds: float) -> None:
        """Read frames for ``seconds`` (pings are answered; no window is ever opened)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.status is None and not self.reset:
            try:
                data = self.socket.recv(65536)
            except TimeoutError:
                continue
            if not data:
                self.reset = True
                break
            for event in self.h2.receive_data(data):
                if isinstance(event, DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length, 1)
                if isinstance(event, TrailersReceived):
                    self.status = dict(event.headers).get("grpc-status")
                elif isinstance(event, StreamReset):
                    self.reset = True
            self.socket.sendall(self.h2.data_to_send())

    def open_window(self) -> None:
        self.h2.increment_flow_control_window(1 << 30)
        self.h2.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
        self.socket.sendall(self.h2.data_to_send())

    def close(self) -> None:
        self.socket.close()


def test_a_grpc_client_that_never_reads_is_cut_off_and_frees_its_slot(
    edge: ThreadDaemon,
) -> None:
    from edge_agent import RequestOptions
    from edge_agent.sdk import wire

    options = RequestOptions(max_tokens=30_000, mode="local")
    request = wire.ask_request("go on forever", options).SerializeToString()
    cancelled = edge.metric("ridgeline_edge_request_errors_total", kind="cancelled")
    stalled = StalledGrpc(edge.grpc, request)
    try:
        assert wait_until(lambda: edge.running() == 1, 10.0)
        # the generation would run for 12 s; write_stall_s = 1 s ends it sooner
        assert wait_until(lambda: edge.running() == 0, 30.0)
        assert edge.metric("ridgeline_edge_request_errors_total", kind="cancelled") == (
            cancelled + 1
        )
        with EdgeClient(edge.grpc) as client:  # the slot is free for others
            assert "Paris" in client.ask("capital of France?").text
        # HTTP/2 sends a status after the data queued before it: a client that reads
        # again gets what was queued, then CANCELLED (the answer was cut short)
        stalled.open_window()
        stalled.pump(30.0)
        assert stalled.status == "1", stalled.status
    finally:
        stalled.close()


# -- real OpenAI request fields ----------------------------------------------------------


def openai_client(daemon: ThreadDaemon) -> Any:
    import openai

    return openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0, timeout=30)


IGNORED_CHAT_FIELDS: dict[str, Any] = {
    "safety_identifier": "user-1234",
    "prompt_cache_key": "conversation-1",
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "verbosity": "low",
    "modalities": ["text"],
    "prediction": {"type": "content", "content": "The capital of France is Paris."},
    "user": "someone",
    "metadata": {"app": "test"},
    "store": False,
    "service_tier": "auto",
    "frequency_penalty": 0.5,
    "presence_penalty": 0.1,
    "parallel_tool_calls": False,
    "tool_choice": "none",
    "logprobs": False,
    "logit_bias": {},
    "n": 1,
    "response_format": {"type": "text"},
}


def test_the_openai_client_may_send_every_field_openai_defines(
    edge: ThreadDaemon, no_errors_logged: None
) -> None:

    client = openai_client(edge)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(
        model="default", messages=question, **IGNORED_CHAT_FIELDS
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    chunks = list(
        client.chat.completions.create(
            model="default",
            messages=question,
            stream=True,
            stream_options={"include_usage": True},
            **IGNORED_CHAT_FIELDS,
        )
    )
    assert "Paris" in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    completion = client.completions.create(
        model="default",
        prompt="What is the capital of France?",
        best_of=1,
        echo=False,
        suffix=None,
        logprobs=None,
        user="someone",
        frequency_penalty=0.0,
        presence_penalty=0.0,
        logit_bias=None,
        seed=1,
    )
    assert "Paris" in completion.choices[0].text
    status, body = edge.request("POST", "/v1/chat/completions", chat(EASY, stream=None))
    assert status == 200 and body["object"] == "chat.completion", body  # null: not streamed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "required"),
        ("logit_bias", {"50256": -100}),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("modalities", ["text", "audio"]),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("web_search_options", {}),
    ],
)
def test_fields_that_would_change_the_answers_meaning_are_refused(
    edge: ThreadDaemon, field: str, value: Any
) -> None:
    status, body = edge.request("POST", "/v1/chat/completions", chat(EASY, **{field: value}))
    assert status == 400, body
    error = openai_error(body)
    assert error["param"] == field and error["code"] == "unsupported", body


def test_a_field_openai_does_not_define_is_still_refused(edge: ThreadDaemon) -> None:
    status, body = edge.request("POST", "/v1/chat/completions", chat(EASY, frobnicate=1))
    assert status == 400 and "unknown field 'frobnicate'" in openai_error(body)["message"]


# -- conversations that end with the assistant, or carry one without content -------------


def test_an_assistant_turn_may_end_the_conversation_or_have_null_content(
    edge: ThreadDaemon, no_errors_logged: None
) -> None:
    continued = chat(EASY)["messages"] + [{"role": "assistant", "content": "The capital"}]
    status, body = edge.request("POST", "/v1/chat/completions", {"messages": continued})
    assert status == 200, body
    assert body["choices"][0]["message"]["role"] == "assistant"
    earlier = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": None},
        {"role": "user", "content": EASY},
    ]
    status, body = edge.request("POST", "/v1/chat/completions", {"messages": earlier})
    assert status == 200 and "Paris" in body["choices"][0]["message"]["content"], body
    only_assistant = [{"role": "assistant", "content": "Hello"}]
    status, body = edge.request("POST", "/v1/chat/completions", {"messages": only_assistant})
    assert status == 400 and "user" in openai_error(body)["message"], body


# -- minor: usage null on chunks, the enforced context, telemetry gauges in base units ----


def sse_chunks(daemon: ThreadDaemon, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        daemon.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        lines = [line.decode().strip() for line in response]
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_stream_chunks_carry_usage_null_until_the_usage_chunk(edge: ThreadDaemon) -> None:
    usage = {"stream": True, "stream_options": {"include_usage": True}, "ridgeline": LOCAL}
    for path, body in [
        ("/v1/chat/completions", chat(EASY, **usage)),
        ("/v1/completions", {"prompt": EASY, **usage}),
    ]:
        *chunks, last = sse_chunks(edge, path, body)
        assert len(chunks) >= 2 and all("usage" in c and c["usage"] is None for c in chunks)
        assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
        assert {c["model"] for c in [*chunks, last]} == {SCRIPTED}
        without = sse_chunks(edge, path, {**body, "stream_options": None})
        assert all("usage" not in c for c in without)


def test_models_report_the_context_that_is_enforced(edge: ThreadDaemon) -> None:
    status, body = edge.request("GET", "/v1/models")
    assert status == 200
    (model,) = [m for m in body["data"] if m["id"] == SCRIPTED]
    assert model["ridgeline"]["context_length"] == 384  # runtime.n_ctx, not the trained 512


def test_telemetry_gauges_have_one_unit_each() -> None:

    from prometheus_client.core import GaugeMetricFamily

    from edge_agent.daemon.admission import Admission
    from edge_agent.daemon.metrics import _Live
    from edge_agent.telemetry import Telemetry

    reading = Telemetry(
        battery_percent=40.0, temperature_c=61.5, throttled=True, power_w=7.5, cpu_load=0.25
    )
    agent = SimpleNamespace(
        decide_threshold=lambda: SimpleNamespace(value=0.6),
        pool=SimpleNamespace(loaded=lambda: []),
        local_speed=SimpleNamespace(read=lambda: {}),
        sampler=SimpleNamespace(snapshot=lambda: reading),
    )
    families = {
        f.name: f for f in _Live(lambda: agent, Admission(1, 0), GaugeMetricFamily).collect()
    }
    values = {name: f.samples[0].value for name, f in families.items() if len(f.samples) == 1}
    assert "ridgeline_edge_telemetry" not in families
    assert values["ridgeline_edge_battery_ratio"] == pytest.approx(0.4)
    assert values["ridgeline_edge_temperature_celsius"] == 61.5
    assert values["ridgeline_edge_throttled"] == 1.0
    assert values["ridgeline_edge_power_watts"] == 7.5
    assert values["ridgeline_edge_cpu_load_ratio"] == 0.25
    assert all(len(f.samples) == 1 and not f.samples[0].labels for f in families.values())


# -- property-based: no body makes the HTTP API fail -------------------------------------

ODD = st.sampled_from(
    [10**400, -(10**400), 1e308, -0.0, 2**63, "\ud800", "a\udfffb", "", " ", "<|im_end|>", {}, []]
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | ODD,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
ROLE = st.sampled_from(["system", "developer", "user", "assistant", "tool", "wizard"]) | JSON
TEXT = st.text(max_size=40) | ODD | JSON
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE},
    optional={
        "content": TEXT
        | st.lists(
            st.fixed_dictionaries({"type": st.just("text") | JSON, "text": TEXT}), max_size=2
        ),
        "name": JSON,
        "tool_calls": JSON,
    },
)
SMALL = st.integers(min_value=-2, max_value=4) | JSON  # max_tokens: cheap generations only
OPTIONS = {
    "model": st.sampled_from(["", "default", SCRIPTED, "../x", "nope"]) | JSON,
    "max_tokens": SMALL,
    "max_completion_tokens": SMALL,
    "temperature": st.floats(min_value=-1, max_value=3) | JSON,
    "top_p": st.floats(min_value=-1, max_value=2) | JSON,
    "seed": st.integers() | JSON,
    "stop": st.text(max_size=4) | st.lists(st.text(max_size=4), max_size=3) | JSON,
    "n": SMALL,
    "stream": st.booleans() | JSON,
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans() | JSON}) | JSON,
    "ridgeline": st.fixed_dictionaries(
        {},
        optional={
            "mode": st.sampled_from(["local", "auto", "cloud"]) | JSON,
            "threshold": st.floats(min_value=-1, max_value=2) | JSON,
            "deadline_s": st.floats(min_value=-1, max_value=1e12) | JSON,
            "private": st.booleans() | JSON,
        },
    )
    | JSON,
    "response_format": JSON,
    "logit_bias": JSON,
    "tools": JSON,
    "reasoning_effort": JSON,
    "unknown_field": JSON,
}
BODIES = st.one_of(
    st.tuples(
        st.just("/v1/chat/completions"),
        st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=3) | JSON}, optional=OPTIONS),
    ),
    st.tuples(
        st.just("/v1/completions"),
        st.fixed_dictionaries({"prompt": TEXT | st.lists(TEXT, max_size=2)}, optional=OPTIONS),
    ),
    st.tuples(
        st.just("/v1/embeddings"),
        st.fixed_dictionaries(
            {"input": TEXT | st.lists(TEXT, max_size=3)},
            optional={
                "model": JSON | st.just("all-minilm-l6-v2"),
                "encoding_format": st.sampled_from(["float", "base64"]) | JSON,
                "dimensions": JSON,
                "user": JSON,
            },
        ),
    ),
    st.tuples(
        st.just("/v1/classify"),
        st.fixed_dictionaries(
            {"specialist": TEXT, "text": TEXT},
            optional={"threshold": JSON, "mode": JSON, "deadline_s": JSON},
        ),
    ),
    st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), JSON),
)


def post_anything(daemon: ThreadDaemon, path: str, body: Any) -> tuple[int, str, bytes]:
    data = json.dumps(body).encode()  # lone surrogates go out as JSON's \\ud800 escapes
    request = urllib.request.Request(daemon.url + path, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read()


@given(BODIES)
def test_no_request_body_makes_the_api_fail(edge: ThreadDaemon, case: tuple[str, Any]) -> None:
    path, body = case
    status, content_type, raw = post_anything(edge, path, body)
    assert status < 500 or status == 503, (status, raw[:300])
    if content_type == "text/event-stream":
        events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]", raw[-300:]
        assert all(json.loads(e).get("error", {}).get("code") != "internal" for e in events[:-1])
    elif status != 200:
        error = openai_error(json.loads(raw))
        assert error["type"] in ("invalid_request_error", "permission_error", "server_error")
    assert edge.metric("ridgeline_edge_request_errors_total", kind="internal") == 0


# -- the same fixes through a real `edge-agent serve` with SmolLM2 -----------------------


@pytest.fixture(scope="module")
def served(
    smollm2_path: Path, model_store: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("served")
    config = (
        f'[models]\ndefault = "{SMOLLM2}"\n[runtime]\nthreads = 2\n'
        "[generation]\nmax_tokens = 16\n[telemetry]\nsources = []\n"
        f'[budget]\nstate_file = "{root / "budget.json"}"\n[daemon]\nwrite_stall_s = 2.0\n'
    )
    env = without_proxies(isolated_env(model_store, root))
    process = DaemonProcess(env, root, config=config)
    yield process
    process.stop()


@pytest.mark.model
def test_a_real_daemon_refuses_rebinding_and_bad_bodies_with_400(served: DaemonProcess) -> None:
    port = int(served.url.rsplit(":", 1)[1])
    assert host_status(port, f"127.0.0.1.nip.io:{port}") == 403
    assert host_status(port, "127.attacker") == 403
    assert host_status(port, f"localhost:{port}") == 200
    deep = b'{"messages": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    for raw in (
        json.dumps(chat("hi", temperature=HUGE)).encode(),
        deep,
        b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    ):
        status, _, body = served.post("/v1/chat/completions", None, raw=raw)
        assert status == 400, body
        openai_error(body)
    words = "Paris is the capital of France. " * 400
    status, _, body = served.post("/v1/completions", {"prompt": words})
    assert status == 400 and openai_error(body)["code"] == "context_length_exceeded"
    assert openai_error(body)["message"].startswith(
        "This model's maximum context length is 2048 tokens. However, your prompt resulted in"
    )
    with EdgeClient(served.grpc) as client, pytest.raises(errors.InvalidModelNameError):
        client.ask("hi", model="../x")
    assert "Traceback" not in served.stderr()


@pytest.mark.model
def test_a_real_daemon_takes_openai_fields_continuations_and_resets(
    served: DaemonProcess,
) -> None:
    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    question = [{"role": "user", "content": EASY}]
    reply = client.chat.completions.create(
        model="default", messages=question, max_tokens=8, **IGNORED_CHAT_FIELDS
    )
    assert reply.choices[0].message.content
    continued = [*question, {"role": "assistant", "content": "The capital of France is"}]
    reply = client.chat.completions.create(model="default", messages=continued, max_tokens=6)  # type: ignore[arg-type]
    assert "Paris" in (reply.choices[0].message.content or "")
    models = client.models.list().data
    assert {m.model_extra["ridgeline"]["context_length"] for m in models} == {2048}
    port = int(served.url.rsplit(":", 1)[1])
    body = {**FOREVER, "messages": [{"role": "user", "content": "Count from 1 to 1000."}]}
    for _ in range(5):
        s = raw_stream(port, {**body, "max_tokens": 200})
        assert s.recv(64).startswith(b"HTTP/1.1 200")
        reset(s)
        assert wait_until(lambda: served.get("/health")[1]["running"] == 0, 20.0)
    _, metrics = served.get("/metrics")
    assert 'ridgeline_edge_request_errors_total{kind="internal"}' not in metrics
    assert "Traceback" not in served.stderr()


@pytest.mark.model
def test_an_escalated_streams_chunks_name_the_broker_model(
    shared_broker: Any, tmp_path: Path
) -> None:
    base = settings(tmp_path)
    escalating = base.model_copy(
        update={
            "broker": base.broker.model_copy(
                update={"address": shared_broker.address, "plaintext": True, "model": GEMMA}
            )
        }
    )
    daemon = ThreadDaemon(escalating)
    try:
        body = chat(EASY, max_tokens=8, stream=True, ridgeline={"mode": "cloud"})
        chunks = sse_chunks(daemon, "/v1/chat/completions", body)
        assert chunks[-1]["ridgeline"]["source"] == "cloud", chunks[-1]
        assert {c["model"] for c in chunks} == {GEMMA}  # from the first chunk to the last
    finally:
        daemon.stop()


def test_a_grpc_client_that_leaves_mid_answer_is_one_cancel(
    edge: ThreadDaemon, no_errors_logged: None
) -> None:
    from edge_agent import TextChunk

    cancelled = edge.metric("ridgeline_edge_request_errors_total", kind="cancelled")
    with EdgeClient(edge.grpc) as client:
        events = client.stream("go on forever", max_tokens=30_000, mode="local")
        assert isinstance(next(e for e in events if isinstance(e, TextChunk)), TextChunk)
        events.close()  # type: ignore[attr-defined]
        assert wait_until(lambda: edge.running() == 0, 10.0)
    assert edge.metric("ridgeline_edge_request_errors_total", kind="cancelled") == cancelled + 1
    assert edge.metric("ridgeline_edge_request_errors_total", kind="internal") == 0
