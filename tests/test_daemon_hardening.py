"""The daemon against hostile and unusual clients (issue 16): who may call (Host check),
bodies that used to crash a handler, clients that leave or never read, real OpenAI
request fields, OpenAI's error wording.

Most checks run against an in-process daemon over the scripted model
(:mod:`daemonthread`: the real listeners, middleware and pipeline, real clients); each
user-facing fix is also checked once against a real ``edge-agent serve`` with SmolLM2.
"""

from __future__ import annotations

import http.client
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemonthread import ThreadDaemon
from fastlane import SCRIPT, SCRIPTED, fast_settings

from edge_agent import EdgeClient
from ridgeline_core import errors

LONG = " ".join(f"word{i}," for i in range(40_000))  # ~400 KB of SSE: fills any buffer
HARDENING_SCRIPT: dict[str, Any] = {
    **SCRIPT,
    "answers": [*SCRIPT["answers"], {"when": "go on forever", "text": LONG, "prob": 0.95}],
}
LOCAL = {"mode": "local"}


def settings(root: Path, **daemon: Any) -> Any:
    """The scripted model, pulled; HTTP and gRPC on loopback ports; one slot, no queue."""
    pulled = fast_settings(
        root,
        HARDENING_SCRIPT,
        daemon={"http": "127.0.0.1:0", "grpc": "127.0.0.1:0", "slots": 1, "queue": 0, **daemon},
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


def host_status(daemon: ThreadDaemon, host: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
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
    assert {host: host_status(edge, host) for host in refused} == dict.fromkeys(refused, 403)
    assert {host: host_status(edge, host) for host in accepted} == dict.fromkeys(accepted, 200)


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
    words = "capital of France " * 400  # the scripted model holds 512 words
    status, body = edge.request("POST", "/v1/chat/completions", chat(words, ridgeline=LOCAL))
    error = openai_error(body)
    assert status == 400 and error["code"] == "context_length_exceeded", body
    assert error["message"].startswith(
        "This model's maximum context length is 512 tokens. However, your messages resulted in "
    ), error
    status, body = edge.request("POST", "/v1/completions", {"prompt": words, "ridgeline": LOCAL})
    error = openai_error(body)
    assert status == 400 and error["code"] == "context_length_exceeded", body
    assert error["message"].startswith(
        "This model's maximum context length is 512 tokens. However, your prompt resulted in "
    ), error
