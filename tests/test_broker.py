"""The broker as a real process on loopback, with the real SmolLM2 and Gemma models,
called through the project's gRPC client (and raw gRPC where the client would
refuse to send what is being tested)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from brokerproc import BrokerProcess
from conftest import GEMMA, SMOLLM2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support import broker_env

from cloud_broker.auth import TokenFile
from edge_agent.link.escalation import EscalationFailed, Escalator
from edge_agent.settings import EscalationSettings
from edge_agent.telemetry.meters import BrokerHealth
from ridgeline.v1 import broker_pb2
from ridgeline_core import errors
from ridgeline_core.client import BrokerClient, build_request
from ridgeline_core.runtime import ChatMessage, SamplingParams
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

LONG_PROMPT = "Write a long story about a lighthouse keeper and a storm."
STORY = {"max_tokens": 400, "temperature": 0.0}


_env = broker_env  # the name the tests below use


def smollm2_dev_broker(
    model_store: ModelStore, root: Path, extra_config: str = ""
) -> BrokerProcess:
    """A dev-mode broker serving only SmolLM2, with ``extra_config`` TOML on top."""
    config = f'{extra_config}\n[models]\nserve = ["{SMOLLM2}"]\ndefault = "{SMOLLM2}"\n'
    return BrokerProcess(
        ["serve", "--dev", "--listen", "127.0.0.1:0"],
        _env(model_store, root),
        config=config,
        tmp_path=root,
    )


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until true; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def models_ready(smollm2_path: Path, gemma_path: Path) -> None:
    """Both models are in the session store before any broker starts."""


@pytest.fixture(scope="module")
def dev_broker(
    models_ready: None, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """Dev mode, both models, two slots each and a queue of one, reflection on."""
    root = tmp_path_factory.mktemp("dev-broker")
    config = """
[server]
reflection = true
[llama_cpp]
slots = 2
queue = 1
[limits]
requests_per_minute = 0
tokens_per_minute = 0
"""
    broker = BrokerProcess(
        ["serve", "--dev", "--listen", "127.0.0.1:0"],
        _env(model_store, root),
        config=config,
        tmp_path=root,
    )
    yield broker
    broker.kill()


@pytest.fixture
def client(dev_broker: BrokerProcess) -> Iterator[BrokerClient]:
    with BrokerClient(dev_broker.address, plaintext=True, timeout_s=120) as broker_client:
        yield broker_client


def running(broker: BrokerProcess, model: str) -> float:
    return broker.metrics()[f'ridgeline_broker_backend_running{{model="{model}"}}']


# -- answers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [SMOLLM2, GEMMA])
def test_streams_an_answer_from_each_model(client: BrokerClient, model: str) -> None:
    deltas: list[str] = []
    results: list[broker_pb2.GenerateResult] = []
    for event in client.generate("What is the capital of France?", model=model, max_tokens=24):
        if event.HasField("delta"):
            assert event.delta.model == model
            deltas.append(event.delta.text)
        else:
            results.append(event.result)
    assert len(results) == 1, "exactly one result, last"
    result = results[0]
    assert len(deltas) >= 1
    assert "Paris" in "".join(deltas)
    assert result.answer_model == model
    assert list(result.models_used) == [model]
    assert result.usage.prompt_tokens > 0
    assert result.usage.completion_tokens >= len(deltas) - 1
    assert result.finish_reason in (
        broker_pb2.FINISH_REASON_STOP,
        broker_pb2.FINISH_REASON_STOP_SEQUENCE,
        broker_pb2.FINISH_REASON_LENGTH,
    )
    timings = result.timings
    assert 0 <= timings.queue_ms <= timings.time_to_first_token_ms <= timings.total_ms


def test_default_model_and_list_models(client: BrokerClient) -> None:
    listing = client.list_models()
    assert listing.default_model == GEMMA
    by_name = {m.name: m for m in listing.models}
    assert set(by_name) == {GEMMA, SMOLLM2}
    assert by_name[SMOLLM2].backend == "llama.cpp"
    assert by_name[SMOLLM2].role == "chat"
    assert by_name[GEMMA].context_length == 2048
    assert set(listing.strategies) == {
        broker_pb2.Strategy.KIND_SINGLE,
        broker_pb2.Strategy.KIND_ROUTE,
        broker_pb2.Strategy.KIND_CASCADE,
        broker_pb2.Strategy.KIND_ENSEMBLE,
    }
    answer = client.ask("What is the capital of France?", max_tokens=8)
    assert answer.model == GEMMA


def test_max_tokens_is_clamped_and_honoured(client: BrokerClient) -> None:
    answer = client.ask(LONG_PROMPT, model=SMOLLM2, max_tokens=5)
    assert answer.result.finish_reason == broker_pb2.FINISH_REASON_LENGTH
    assert answer.result.usage.completion_tokens == 5


def test_concurrent_clients_progress_at_once(client: BrokerClient) -> None:
    """Two streams on SmolLM2's two slots and one on Gemma: each has its first text
    before any of them ends, so they run at the same time rather than in turn."""
    first: dict[int, float] = {}
    ended: dict[int, float] = {}
    failures: list[BaseException] = []
    targets = [SMOLLM2, SMOLLM2, GEMMA]

    def run(index: int) -> None:
        try:
            for event in client.generate(LONG_PROMPT, model=targets[index], max_tokens=40):
                if event.HasField("delta") and index not in first:
                    first[index] = time.monotonic()
            ended[index] = time.monotonic()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert len(ended) == len(targets)
    assert max(first.values()) < min(ended.values()), (first, ended)


# -- limits and errors ------------------------------------------------------------------------


def _status(excinfo: pytest.ExceptionInfo[errors.RidgelineError]) -> str | None:
    return excinfo.value.status


@pytest.mark.parametrize(
    ("kwargs", "message", "status"),
    [
        ({"messages": []}, "messages is empty", "INVALID_ARGUMENT"),
        ({"messages": "   "}, "no user message with text", "INVALID_ARGUMENT"),
        ({"messages": [{"role": "user", "content": "hi"}] * 65}, "65 messages", "INVALID_ARGUMENT"),
        ({"messages": "x" * 32_001}, "32001 characters", "INVALID_ARGUMENT"),
        ({"max_tokens": 0}, "max_tokens must be at least 1", "INVALID_ARGUMENT"),
        ({"temperature": 7.0}, "temperature", "INVALID_ARGUMENT"),
        ({"top_p": 0.0}, "top_p", "INVALID_ARGUMENT"),
        ({"seed": 2**40}, "seed", "INVALID_ARGUMENT"),
        ({"stop": [""]}, "stop sequences", "INVALID_ARGUMENT"),
        ({"choices": [f"c{i}" for i in range(65)]}, "65 strings; at most 64", "INVALID_ARGUMENT"),
        ({"choices": ["yes", ""]}, "choices[1] is 0 characters", "INVALID_ARGUMENT"),
        ({"choices": ["yes", "no", "yes"]}, "choices[2] 'yes' is a duplicate", "INVALID_ARGUMENT"),
        ({"choices": ["yes", "n" * 65]}, "choices[1] is 65 characters", "INVALID_ARGUMENT"),
        ({"choices": ["new\nline"]}, "control character", "INVALID_ARGUMENT"),
        ({"request_id": "r" * 129}, "request_id", "INVALID_ARGUMENT"),
        ({"device_id": "../etc/passwd"}, "invalid device id", "INVALID_ARGUMENT"),
        ({"model": "gpt-9"}, "unknown model 'gpt-9'", "NOT_FOUND"),
        ({"model": "../../etc/passwd"}, "unknown model", "NOT_FOUND"),
    ],
)
def test_bad_requests_get_precise_errors(
    client: BrokerClient, kwargs: dict[str, object], message: str, status: str
) -> None:
    arguments: dict[str, object] = {"messages": "Hello", "model": SMOLLM2, **kwargs}
    messages = arguments.pop("messages")
    request = build_request(messages, **arguments)  # type: ignore[arg-type]
    with pytest.raises(errors.RidgelineError) as excinfo:
        list(client.generate_request(request))
    assert excinfo.value.status == status
    assert message in str(excinfo.value)


# -- answers limited to choices ---------------------------------------------------------------

LABELS = ["lights_on", "lights_off", "set_timer", "play_music", "weather"]


def _classify(request: str) -> str:
    return (
        f"Classify the request into exactly one of: {', '.join(LABELS)}.\n"
        f"Request: {request}\nLabel:"
    )


@pytest.mark.parametrize("model", [GEMMA, SMOLLM2])
def test_choices_answer_is_exactly_one_of_them(client: BrokerClient, model: str) -> None:
    for request in (
        "Turn on the lights in the kitchen",
        "Set a timer for ten minutes",
        "Will it rain tomorrow?",
        "Play some jazz",
    ):
        deltas: list[str] = []
        results: list[broker_pb2.GenerateResult] = []
        # max_tokens does not cut a choice short; stop does not apply
        events = client.generate(
            _classify(request), model=model, choices=LABELS, max_tokens=1, stop=["_"]
        )
        for event in events:
            if event.HasField("delta"):
                deltas.append(event.delta.text)
            else:
                results.append(event.result)
        assert "".join(deltas) in LABELS, (request, deltas)
        assert len(results) == 1
        assert results[0].finish_reason == broker_pb2.FINISH_REASON_STOP
        assert results[0].usage.completion_tokens >= 1


def test_choices_at_temperature_zero_repeat(client: BrokerClient) -> None:
    answers = {
        client.ask(_classify("Switch the lamp off"), choices=LABELS, temperature=0.0).text
        for _ in range(3)
    }
    assert len(answers) == 1 and answers <= set(LABELS), answers
    sampled = {
        client.ask(_classify("Dim the lights"), choices=LABELS, temperature=1.5, seed=seed).text
        for seed in range(4)
    }
    assert sampled <= set(LABELS), sampled


AWKWARD = ['say "hi"', "back\\slash", "a b.c", "café", "日本語", "🙂 ok", "[x]|y*"]


def test_choices_that_need_escaping_come_back_exactly(client: BrokerClient) -> None:
    """Alone, each choice is the only answer the grammar allows; together, the answer is
    still one of them, character for character."""
    for choice in AWKWARD:
        answer = client.ask(f"Repeat: {choice}", choices=[choice], temperature=0.0)
        assert answer.text == choice
    for choice in AWKWARD:
        answer = client.ask(f"Answer with exactly this text: {choice}", choices=AWKWARD)
        assert answer.text in AWKWARD


def test_choices_through_the_edge_escalator(dev_broker: BrokerProcess) -> None:
    """The edge's escalation path carries choices to the broker, and reports a bad set
    as the request's fault, not an outage."""
    with BrokerClient(dev_broker.address, plaintext=True) as broker_client:
        escalator = Escalator(
            broker_client,
            EscalationSettings(deadline_s=120),
            BrokerHealth(alpha=0.5),
            address=dev_broker.address,
            model=GEMMA,
        )
        messages = [ChatMessage("user", _classify("Start a five minute timer"))]
        params = SamplingParams(max_tokens=64, choices=tuple(LABELS))
        answer = escalator.escalate(messages, params, draft=None, deadline_s=120)
        assert answer.text in LABELS
        assert answer.model == GEMMA and answer.finish_reason == "stop"
        bad = SamplingParams(choices=("a", "a"))
        with pytest.raises(EscalationFailed, match="duplicate") as excinfo:
            escalator.escalate(messages, bad, draft=None, deadline_s=120)
        assert not excinfo.value.outage
        assert escalator.circuit.state == "closed"


def test_prompt_longer_than_the_context_is_invalid(client: BrokerClient) -> None:
    prompt = "lighthouse " * 2500  # within the character limit, over n_ctx 2048
    with pytest.raises(errors.PromptTooLongError) as excinfo:
        client.ask(prompt, model=SMOLLM2)
    assert excinfo.value.status == "INVALID_ARGUMENT"
    assert "context holds 2048" in str(excinfo.value)


def test_unset_role_and_unknown_strategy(client: BrokerClient) -> None:
    request = broker_pb2.GenerateRequest(messages=[broker_pb2.ChatMessage(content="hi")])
    with pytest.raises(errors.InvalidRequestError, match=r"messages\[0\].role is not set"):
        list(client.generate_request(request))
    request = build_request("hi")
    request.strategy.kind = broker_pb2.Strategy.KIND_ENSEMBLE  # no models, none configured
    with pytest.raises(errors.InvalidRequestError, match="needs models") as excinfo:
        list(client.generate_request(request))
    assert excinfo.value.status == "INVALID_ARGUMENT"
    request = build_request("hi")
    request.strategy.name = "no-such-strategy"
    with pytest.raises(errors.UnknownStrategyError, match="no-such-strategy") as excinfo:
        list(client.generate_request(request))
    assert excinfo.value.status == "NOT_FOUND"


def test_malformed_bytes_are_invalid_argument(dev_broker: BrokerProcess) -> None:
    with grpc.insecure_channel(dev_broker.address) as channel:
        call = channel.unary_stream(
            "/ridgeline.v1.Broker/Generate",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.RpcError) as excinfo:
            list(call(b"\xff\xff\xff\xff", timeout=10))
    assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed Generate request" in (excinfo.value.details() or "")


def test_full_queue_is_refused_at_once(dev_broker: BrokerProcess, client: BrokerClient) -> None:
    """Two slots busy and one request queued: the next is RESOURCE_EXHAUSTED without waiting."""
    streams = [client.generate(LONG_PROMPT, model=SMOLLM2, **STORY) for _ in range(2)]
    try:
        for stream in streams:
            next(stream)  # both slots are generating
        queued = client.generate(LONG_PROMPT, model=SMOLLM2, max_tokens=4)
        waiter = threading.Thread(target=lambda: list(queued), daemon=True)
        waiter.start()
        depth = f'ridgeline_broker_queue_depth{{model="{SMOLLM2}"}}'
        wait_for(lambda: dev_broker.metrics()[depth] == 1, 30, "a request queued")
        started = time.monotonic()
        with pytest.raises(errors.QueueFullError) as excinfo:
            client.ask("Hello", model=SMOLLM2, max_tokens=4)
        refused_after = time.monotonic() - started
        assert excinfo.value.status == "RESOURCE_EXHAUSTED"
        assert excinfo.value.retry_after_s > 0
        assert "busy" in str(excinfo.value)
        assert refused_after < 2.0, f"refusal took {refused_after:.2f} s"
        # another model is unaffected
        assert client.ask("Hello", model=GEMMA, max_tokens=2).text is not None
    finally:
        for stream in streams:
            stream.cancel()
    waiter.join(timeout=60)
    assert not waiter.is_alive(), "the queued request ran once the slots were free"


def test_deadline_stops_the_generation(dev_broker: BrokerProcess, client: BrokerClient) -> None:
    before = dev_broker.metrics()
    with pytest.raises(errors.RidgelineError) as excinfo:
        client.ask(LONG_PROMPT, model=SMOLLM2, timeout_s=1.0, **STORY)
    assert excinfo.value.status == "DEADLINE_EXCEEDED"
    wait_for(lambda: running(dev_broker, SMOLLM2) == 0, 5, "the backend stopped")
    after = dev_broker.metrics()
    key = f'ridgeline_broker_requests_total{{code="CANCELLED",model="{SMOLLM2}"}}'
    assert after.get(key, 0) == before.get(key, 0) + 1
    # nothing is still generating for the abandoned request: a new one starts at once
    answer = client.ask("Hello", model=SMOLLM2, max_tokens=2)
    assert answer.result.timings.queue_ms < 100


def test_client_cancel_stops_the_generation(
    dev_broker: BrokerProcess, client: BrokerClient
) -> None:
    stream = client.generate(LONG_PROMPT, model=SMOLLM2, **STORY)
    for _ in range(2):
        event = next(stream)
        assert event.HasField("delta")
    assert running(dev_broker, SMOLLM2) >= 1
    stream.cancel()
    took = wait_for(lambda: running(dev_broker, SMOLLM2) == 0, 5, "the backend stopped")
    assert took < 5
    with pytest.raises(errors.RidgelineError) as excinfo:
        next(stream)
    assert excinfo.value.status == "CANCELLED"


def test_metrics_export_requests_tokens_and_latency(
    dev_broker: BrokerProcess, client: BrokerClient
) -> None:
    before = dev_broker.metrics()
    client.ask("What is 2 + 2?", model=GEMMA, max_tokens=4)
    with pytest.raises(errors.UnknownModelError):
        client.ask("hi", model="nope")
    after = dev_broker.metrics()

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta(f'ridgeline_broker_requests_total{{code="OK",model="{GEMMA}"}}') == 1
    assert delta('ridgeline_broker_requests_total{code="NOT_FOUND",model=""}') == 1
    assert delta('ridgeline_broker_errors_total{code="NOT_FOUND",kind="unknown_model"}') == 1
    assert delta(f'ridgeline_broker_tokens_total{{kind="completion",model="{GEMMA}"}}') >= 1
    assert delta(f'ridgeline_broker_tokens_total{{kind="prompt",model="{GEMMA}"}}') > 0
    for histogram in ("time_to_first_token_seconds", "request_duration_seconds"):
        assert delta(f'ridgeline_broker_{histogram}_count{{model="{GEMMA}"}}') == 1
    assert after[f'ridgeline_broker_slots{{model="{GEMMA}"}}'] == 2
    assert f'ridgeline_broker_queue_depth{{model="{GEMMA}"}}' in after


def test_health_and_reflection(dev_broker: BrokerProcess) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(dev_broker.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ridgeline.v1.Broker"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert {"ridgeline.v1.Broker", "grpc.health.v1.Health"} <= names


# -- auth and rate limits ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def auth_broker(
    models_ready: None, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BrokerProcess, dict[str, str], Path]]:
    """Production mode on loopback plaintext, device tokens required, small rate limits."""
    root = tmp_path_factory.mktemp("auth-broker")
    tokens_file = root / "tokens.json"
    devices = ("dev-a", "dev-r", "dev-t", "dev-c")
    tokens = {device: TokenFile(tokens_file).add(device) for device in devices}
    config = f"""
[server]
listen = "127.0.0.1:0"
allow_plaintext = true
[auth]
tokens_file = "{tokens_file}"
[models]
serve = ["{SMOLLM2}"]
default = "{SMOLLM2}"
[limits]
requests_per_minute = 4
tokens_per_minute = 150
"""
    broker = BrokerProcess(["serve"], _env(model_store, root), config=config, tmp_path=root)
    yield broker, tokens, tokens_file
    broker.kill()


def test_missing_or_wrong_token_is_unauthenticated(
    auth_broker: tuple[BrokerProcess, dict[str, str], Path],
) -> None:
    broker, tokens, _ = auth_broker
    assert "device tokens" in broker.stdout_lines[0]
    for token in (None, "rl_not-a-real-token", tokens["dev-a"] + "x"):
        with BrokerClient(broker.address, token=token, plaintext=True) as client:
            with pytest.raises(errors.UnauthenticatedError) as excinfo:
                client.ask("Hello", max_tokens=2)
            assert excinfo.value.status == "UNAUTHENTICATED"
            with pytest.raises(errors.UnauthenticatedError):
                client.list_models()
    with BrokerClient(broker.address, token=tokens["dev-a"], plaintext=True) as client:
        assert client.ask("Hello", max_tokens=2).result.usage.completion_tokens >= 1
        with pytest.raises(errors.PermissionDeniedError, match="does not match"):
            client.ask("Hello", max_tokens=2, device_id="dev-r")
    # health stays open to load balancers without a token
    with grpc.insecure_channel(broker.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refused = 'ridgeline_broker_errors_total{code="UNAUTHENTICATED",kind="unauthenticated"}'
    assert broker.metrics()[refused] >= 6


def test_revoked_token_is_refused_without_restart(
    auth_broker: tuple[BrokerProcess, dict[str, str], Path],
) -> None:
    broker, _, tokens_file = auth_broker
    token = TokenFile(tokens_file).add("dev-revoke")
    with BrokerClient(broker.address, token=token, plaintext=True) as client:
        wait_for(lambda: _accepted(client), 5, "the new token is accepted")
        TokenFile(tokens_file).revoke("dev-revoke")
        wait_for(lambda: not _accepted(client), 5, "the revoked token is refused")


def _accepted(client: BrokerClient) -> bool:
    try:
        client.list_models(timeout_s=5)
    except errors.UnauthenticatedError:
        return False
    return True


def test_request_rate_limit(auth_broker: tuple[BrokerProcess, dict[str, str], Path]) -> None:
    broker, tokens, _ = auth_broker
    with BrokerClient(broker.address, token=tokens["dev-r"], plaintext=True) as client:
        for _ in range(4):
            client.ask("Hi", max_tokens=1)
        with pytest.raises(errors.RateLimitedError) as excinfo:
            client.ask("Hi", max_tokens=1)
    assert excinfo.value.status == "RESOURCE_EXHAUSTED"
    assert "4 requests per minute" in str(excinfo.value)
    assert 1 <= excinfo.value.retry_after_s <= 15  # a quarter of a minute refills one request
    with BrokerClient(broker.address, token=tokens["dev-a"], plaintext=True) as other:
        other.list_models()  # another device is not limited by dev-r's use


def test_token_rate_limit(auth_broker: tuple[BrokerProcess, dict[str, str], Path]) -> None:
    broker, tokens, _ = auth_broker
    with BrokerClient(broker.address, token=tokens["dev-t"], plaintext=True) as client:
        used = client.ask(LONG_PROMPT, max_tokens=140).result.usage
        assert used.prompt_tokens + used.completion_tokens > 150
        with pytest.raises(errors.RateLimitedError) as excinfo:
            client.ask("Hi", max_tokens=1)
    assert "150 tokens per minute" in str(excinfo.value)
    assert excinfo.value.retry_after_s > 0


# -- transport and shutdown -------------------------------------------------------------------


def test_quiet_stream_survives_keepalive_pings(
    models_ready: None, model_store: ModelStore, tmp_path: Path
) -> None:
    """A request that waits silently in the queue while its client pings the broker is
    not closed with too_many_pings, even when the client pings more often than the
    broker asks (here every second against a 5 s minimum, so each ping is a strike)."""
    broker = smollm2_dev_broker(
        model_store,
        tmp_path,
        """
[server]
min_ping_interval_s = 5.0
[llama_cpp]
queue = 2
""",
    )
    try:
        from ridgeline_core import transport

        options = transport.channel_options(keepalive_s=1.0, keepalive_timeout_s=5)
        with BrokerClient(broker.address, plaintext=True) as busy:
            # long enough to hold the slot past the timer on a fast machine (400 tokens took
            # under 4 s on a quiet one, and the queued call then waited less than asserted)
            blocker = busy.generate(LONG_PROMPT, model=SMOLLM2, **dict(STORY, max_tokens=1024))
            next(blocker)
            with grpc.insecure_channel(broker.address, options=options) as channel:
                from ridgeline.v1 import broker_pb2_grpc

                stub = broker_pb2_grpc.BrokerStub(channel)
                call = stub.Generate(build_request("Hello", max_tokens=2), timeout=60)
                timer = threading.Timer(6.0, blocker.cancel)  # six quiet seconds in the queue
                timer.start()
                events = list(call)
                timer.join()
        assert events[-1].HasField("result")
        assert events[-1].result.timings.queue_ms > 4000
    finally:
        broker.stop()
    assert "too_many_pings" not in broker.stderr()


def test_sigterm_drains(models_ready: None, model_store: ModelStore, tmp_path: Path) -> None:
    """SIGTERM: health turns NOT_SERVING, new calls are refused, a running stream finishes."""
    broker = smollm2_dev_broker(
        model_store,
        tmp_path,
        """
[server]
grace_s = 20
""",
    )
    try:
        with (
            BrokerClient(broker.address, plaintext=True) as client,
            grpc.insecure_channel(broker.address) as channel,
        ):
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service="ridgeline.v1.Broker"), timeout=60
            )
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            stream = client.generate(LONG_PROMPT, model=SMOLLM2, max_tokens=80)
            assert next(stream).HasField("delta")
            broker.signal(signal.SIGTERM)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(errors.UnavailableError, match="shutting down") as excinfo:
                client.ask("Hello", max_tokens=2, timeout_s=10)
            assert excinfo.value.status == "UNAVAILABLE"
            events = list(stream)
        assert events[-1].HasField("result"), "the running stream finished within the grace"
        assert events[-1].result.finish_reason == broker_pb2.FINISH_REASON_LENGTH
        assert broker.proc.wait(timeout=30) == 0
    finally:
        broker.kill()
    assert "shutting down" in broker.stderr()


def test_broker_advertises_itself_over_mdns(
    models_ready: None, model_store: ModelStore, tmp_path: Path
) -> None:
    """With [discovery] on, a browser on the link sees the broker's port and models."""
    from cloud_broker.discovery import browse

    instance = f"ridgeline-test-{os.getpid()}"
    broker = smollm2_dev_broker(
        model_store,
        tmp_path,
        f"""
[discovery]
enabled = true
instance = "{instance}"
""",
    )
    try:
        port = int(broker.address.rsplit(":", 1)[1])
        found = [b for b in browse(3.0, interfaces=["127.0.0.1"]) if b.instance == instance]
        assert len(found) == 1, found
        assert found[0].port == port
        assert found[0].models == (SMOLLM2,)
        assert found[0].plaintext and found[0].tls_fingerprint is None
        assert "127.0.0.1" in found[0].addresses
    finally:
        assert broker.stop() == 0


def test_async_client_streams_cancels_and_maps_errors(dev_broker: BrokerProcess) -> None:
    import asyncio

    from ridgeline_core.client import AsyncBrokerClient

    async def scenario() -> None:
        async with AsyncBrokerClient(dev_broker.address, plaintext=True) as client:
            answer = await client.ask("What is the capital of France?", model=SMOLLM2)
            assert "Paris" in answer.text
            assert answer.result.answer_model == SMOLLM2
            listing = await client.list_models()
            assert listing.default_model == GEMMA
            with pytest.raises(errors.UnknownModelError) as excinfo:
                await client.ask("hi", model="nope")
            assert excinfo.value.status == "NOT_FOUND"
            stream = client.generate(LONG_PROMPT, model=SMOLLM2, **STORY)
            deltas = 0
            with pytest.raises(errors.RidgelineError) as cancelled:
                async for event in stream:
                    assert event.HasField("delta")
                    deltas += 1
                    if deltas == 2:
                        stream.cancel()
            assert cancelled.value.status == "CANCELLED"

    asyncio.run(scenario())
    wait_for(lambda: running(dev_broker, SMOLLM2) == 0, 5, "the backend stopped")


def test_streams_past_the_grace_period_are_cancelled(
    models_ready: None, model_store: ModelStore, tmp_path: Path
) -> None:
    broker = smollm2_dev_broker(
        model_store,
        tmp_path,
        """
[server]
grace_s = 1
""",
    )
    try:
        with BrokerClient(broker.address, plaintext=True) as client:
            stream = client.generate(LONG_PROMPT, model=SMOLLM2, **STORY)
            assert next(stream).HasField("delta")
            signalled = time.monotonic()
            broker.signal(signal.SIGTERM)
            with pytest.raises(errors.RidgelineError) as excinfo:
                list(stream)
            assert excinfo.value.status in ("CANCELLED", "UNAVAILABLE")
        assert broker.proc.wait(timeout=30) == 0
        assert time.monotonic() - signalled < 15
    finally:
        broker.kill()
    assert "cancelling 1 stream(s)" in broker.stderr()


def test_cancelling_early_does_not_dodge_the_token_limit(
    auth_broker: tuple[BrokerProcess, dict[str, str], Path],
) -> None:
    """A client that reads the text and cancels before the result is charged anyway."""
    broker, tokens, _ = auth_broker
    cancelled = f'ridgeline_broker_requests_total{{code="CANCELLED",model="{SMOLLM2}"}}'
    before = broker.metrics().get(cancelled, 0)
    with BrokerClient(broker.address, token=tokens["dev-c"], plaintext=True) as client:
        stream = client.generate(LONG_PROMPT, max_tokens=400)
        text = ""
        for event in stream:
            text += event.delta.text
            if len(text) > 700:  # about 175 tokens, over the 150 per minute
                break
        stream.cancel()
        wait_for(lambda: broker.metrics().get(cancelled, 0) > before, 10, "the broker saw it")
        with pytest.raises(errors.RateLimitedError, match="tokens per minute"):
            client.ask("Hi", max_tokens=1)


def test_an_abandoned_prefill_keeps_its_slot_until_it_ends(
    dev_broker: BrokerProcess, client: BrokerClient
) -> None:
    """Cancelling during prompt processing frees the slot only once the model is free, so
    the model never runs more generations than it has slots."""
    busy = f'ridgeline_broker_slots_busy{{model="{SMOLLM2}"}}'
    prompt = "Summarize this: " + "the keeper climbed the stairs of the lighthouse. " * 150
    stream = client.generate(prompt, model=SMOLLM2, max_tokens=4)
    wait_for(lambda: running(dev_broker, SMOLLM2) == 1, 10, "the prefill started")
    stream.cancel()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sample = dev_broker.metrics()
        working = sample[f'ridgeline_broker_backend_running{{model="{SMOLLM2}"}}']
        assert working <= sample[busy], "a slot was freed while its generation still ran"
        if working == 0:
            break
        time.sleep(0.02)
    assert dev_broker.metrics()[busy] == 0
