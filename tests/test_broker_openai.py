"""The broker's OpenAI-compatible backend against a real upstream: llama-cpp-python's own
server with SmolLM2, started by the test, behind a real broker process in dev mode,
called through the project's client.

The upstream runs with ``--interrupt_requests False`` so that a new request does not
cut off a running one: only then does a prompt follow-up after a cancelled stream
show that the broker closed the upstream connection.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from brokerproc import BrokerProcess
from llamaserver import API_KEY, UPSTREAM_ALIAS, Upstream, _clean_env, running_upstream

from ridgeline.v1 import broker_pb2
from ridgeline_core import errors
from ridgeline_core.client import BrokerClient

pytestmark = [pytest.mark.model, pytest.mark.timeout(300)]

API_KEY_ENV = "RIDGELINE_TEST_UPSTREAM_KEY"
PROMPT = "What is the capital of France?"
LONG_PROMPT = "Write a long story about a lighthouse keeper and a storm."


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


# -- the upstream -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    with running_upstream(smollm2_path, tmp_path_factory.mktemp("upstream")) as server:
        yield server


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port bound but never listening: connections to it are refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


# -- the broker -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(
    upstream: Upstream, closed_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """Dev mode, no local models: "upstream" in front of llama_cpp.server, "upstream-gbnf"
    too but with choices sent as a GBNF grammar, "down" in front of a closed port."""
    root = tmp_path_factory.mktemp("openai-broker")
    env = _clean_env(root)
    env.update(
        RIDGELINE_BROKER_MODELS__STORE_DIR=str(root / "empty-store"),
        RIDGELINE_BROKER_METRICS__LISTEN="127.0.0.1:0",
        **{API_KEY_ENV: API_KEY},
    )
    config = f"""
[models]
serve = []
default = "upstream"
[limits]
requests_per_minute = 0
tokens_per_minute = 0

[[openai]]
name = "upstream"
base_url = "{upstream.base_url}"
model = "{UPSTREAM_ALIAS}"
api_key_env = "{API_KEY_ENV}"
timeout_s = 120

[[openai]]
name = "upstream-gbnf"
base_url = "{upstream.base_url}"
model = "{UPSTREAM_ALIAS}"
api_key_env = "{API_KEY_ENV}"
timeout_s = 120
choices = "grammar"

[[openai]]
name = "down"
base_url = "http://127.0.0.1:{closed_port}/v1"
api_key = "none"
connect_timeout_s = 5
"""
    process = BrokerProcess(
        ["serve", "--dev", "--listen", "127.0.0.1:0"], env, config=config, tmp_path=root
    )
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[BrokerClient]:
    with BrokerClient(broker.address, plaintext=True, timeout_s=120) as broker_client:
        yield broker_client


def running(broker: BrokerProcess, model: str) -> float:
    return broker.metrics()[f'ridgeline_broker_backend_running{{model="{model}"}}']


# -- tests ------------------------------------------------------------------------------------


def test_list_models_shows_the_openai_backends(client: BrokerClient) -> None:
    listing = client.list_models()
    assert listing.default_model == "upstream"
    by_name = {model.name: model for model in listing.models}
    assert set(by_name) == {"upstream", "upstream-gbnf", "down"}
    assert by_name["upstream"].backend == "openai"
    assert by_name["upstream"].role == "chat"
    assert by_name["down"].backend == "openai"


def test_streams_an_answer_from_the_upstream(client: BrokerClient) -> None:
    deltas: list[str] = []
    results: list[broker_pb2.GenerateResult] = []
    for event in client.generate(PROMPT, max_tokens=16, temperature=0.0):  # the default model
        if event.HasField("delta"):
            assert event.delta.model == "upstream"
            deltas.append(event.delta.text)
        else:
            results.append(event.result)
    assert len(deltas) >= 2, deltas
    assert "".join(deltas).strip()
    assert len(results) == 1
    result = results[0]
    assert result.answer_model == "upstream"
    assert list(result.models_used) == ["upstream"]
    assert result.usage.completion_tokens > 0
    assert result.finish_reason in (
        broker_pb2.FINISH_REASON_STOP,
        broker_pb2.FINISH_REASON_LENGTH,
    )
    timings = result.timings
    assert 0 <= timings.queue_ms <= timings.time_to_first_token_ms <= timings.total_ms


def test_greedy_answer_equals_the_upstream_answer(client: BrokerClient, upstream: Upstream) -> None:
    messages = [
        {"role": "system", "content": "You are a concise geography tutor."},
        {"role": "user", "content": PROMPT},
    ]
    through_broker = client.ask(messages, model="upstream", max_tokens=16, temperature=0.0)
    direct = upstream.request(
        "/chat/completions",
        {
            "model": UPSTREAM_ALIAS,
            "messages": messages,
            "max_tokens": 16,
            "temperature": 0.0,
            "top_p": 1.0,
        },
    )
    choice = direct["choices"][0]  # type: ignore[index]
    direct_text: str = choice["message"]["content"]
    assert through_broker.text.strip()
    assert through_broker.text == direct_text
    finish = {"stop": broker_pb2.FINISH_REASON_STOP, "length": broker_pb2.FINISH_REASON_LENGTH}
    assert through_broker.result.finish_reason == finish[choice["finish_reason"]]


def test_max_tokens_is_honoured(client: BrokerClient) -> None:
    answer = client.ask(LONG_PROMPT, model="upstream", max_tokens=5, temperature=0.0)
    assert answer.result.finish_reason == broker_pb2.FINISH_REASON_LENGTH
    assert 1 <= answer.result.usage.completion_tokens <= 5
    assert answer.text.strip()


def test_unreachable_upstream_is_unavailable(client: BrokerClient, closed_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(errors.UnavailableError) as excinfo:
        client.ask(PROMPT, model="down", max_tokens=4)
    assert time.monotonic() - started < 10, "a refused connection fails at once"
    assert excinfo.value.status == "UNAVAILABLE"
    assert f"http://127.0.0.1:{closed_port}/v1" in str(excinfo.value)
    assert "'down'" in str(excinfo.value)
    # the other model is unaffected
    answer = client.ask(PROMPT, model="upstream", max_tokens=4, temperature=0.0)
    assert answer.result.usage.completion_tokens > 0


def test_client_cancel_stops_the_upstream(
    broker: BrokerProcess, client: BrokerClient, upstream: Upstream
) -> None:
    cancelled = 'ridgeline_broker_requests_total{code="CANCELLED",model="upstream"}'
    before = broker.metrics().get(cancelled, 0.0)
    disconnects = upstream.log().count("Disconnected from client")
    stream = client.generate(LONG_PROMPT, model="upstream", max_tokens=400, temperature=0.0)
    for _ in range(2):
        event = next(stream)
        assert event.HasField("delta")
    assert running(broker, "upstream") == 1
    stream.cancel()
    wait_for(lambda: running(broker, "upstream") == 0, 5, "the broker's upstream call ended")
    with pytest.raises(errors.RidgelineError) as excinfo:
        next(stream)
    assert excinfo.value.status == "CANCELLED"
    wait_for(
        lambda: upstream.log().count("Disconnected from client") > disconnects,
        10,
        "llama_cpp.server saw the client leave",
    )
    wait_for(lambda: broker.metrics().get(cancelled, 0.0) == before + 1, 5, "counted CANCELLED")
    # the upstream serves one request at a time: had it kept generating the ~400 tokens
    # (about 20 s on two shared cores), this would wait for them
    started = time.monotonic()
    answer = client.ask(PROMPT, model="upstream", max_tokens=4, temperature=0.0)
    took = time.monotonic() - started
    assert answer.result.usage.completion_tokens > 0
    assert took < 8, f"the follow-up took {took:.1f} s: the upstream was still busy"


LABELS = ["lights_on", "lights_off", "set_timer", "weather"]
AWKWARD = ['say "hi"', "back\\slash", "café", "日本語", "🙂 ok"]


def test_choices_through_a_grammar_upstream(client: BrokerClient) -> None:
    """llama_cpp.server takes llama.cpp's `grammar` extension: the answer is a choice."""
    for request in ("Turn the lights off", "Set a timer for 5 minutes", "Is it sunny?"):
        prompt = f"Classify into one of {', '.join(LABELS)}.\nRequest: {request}\nLabel:"
        deltas: list[str] = []
        results: list[broker_pb2.GenerateResult] = []
        for event in client.generate(prompt, model="upstream-gbnf", choices=LABELS, max_tokens=1):
            if event.HasField("delta"):
                deltas.append(event.delta.text)
            else:
                results.append(event.result)
        assert len(deltas) == 1 and deltas[0] in LABELS, deltas
        assert results[0].finish_reason == broker_pb2.FINISH_REASON_STOP
    for choice in AWKWARD:  # alone, each is the only answer the grammar allows
        answer = client.ask(f"Say {choice}", model="upstream-gbnf", choices=[choice])
        assert answer.text == choice


def test_json_schema_choices_are_refused_by_llama_cpp_server(client: BrokerClient) -> None:
    """llama_cpp.server knows only response_format types "text" and "json_object", so a
    backend left at choices = "json_schema" in front of it fails the request (its HTTP 500
    is UNAVAILABLE) instead of answering unconstrained."""
    with pytest.raises(errors.UnavailableError) as excinfo:
        client.ask("Turn the lights off", model="upstream", choices=LABELS)
    assert excinfo.value.status == "UNAVAILABLE"
    assert "json_object" in str(excinfo.value)
