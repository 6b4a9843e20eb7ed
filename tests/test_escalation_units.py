"""Escalator retry and circuit logic against a scripted fake client (no broker, no network).

The real broker, client and agent are exercised end to end in the broker tests; here the
client is a duck-typed fake so each retry and circuit rule can be pinned down exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest

from edge_agent.link.circuit import CircuitBreaker
from edge_agent.link.escalation import CloudAnswer, Draft, EscalationFailed, Escalator
from edge_agent.settings import EscalationSettings
from edge_agent.telemetry.meters import BrokerHealth
from ridgeline.v1 import broker_pb2
from ridgeline_core import errors, wire
from ridgeline_core.client import AnswerStream, BrokerClient
from ridgeline_core.runtime import ChatMessage, SamplingParams

MESSAGES = [ChatMessage("user", "What is the capital of France?")]
PARAMS = SamplingParams(max_tokens=32)

# One scripted call: an error raised by generate_request itself, or the stream's items in
# order, where an error item is raised when the stream reaches it.
Step = errors.RidgelineError | list[broker_pb2.GenerateResponse | errors.RidgelineError]


def delta(text: str) -> broker_pb2.GenerateResponse:
    return broker_pb2.GenerateResponse(delta=broker_pb2.TextDelta(text=text, model="big"))


def result(prompt_tokens: int = 12, completion_tokens: int = 3) -> broker_pb2.GenerateResponse:
    return broker_pb2.GenerateResponse(
        result=broker_pb2.GenerateResult(
            finish_reason=broker_pb2.FINISH_REASON_STOP,
            models_used=["small", "big"],
            answer_model="big",
            usage=broker_pb2.Usage(
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
            ),
            timings=broker_pb2.BrokerTimings(time_to_first_token_ms=0.0),
        )
    )


ANSWER: Step = [delta("Paris"), delta("."), result()]


def unavailable(message: str = "connection refused") -> errors.UnavailableError:
    error = errors.UnavailableError(message)
    error.status = "UNAVAILABLE"
    return error


class _Stream(Iterator[broker_pb2.GenerateResponse]):
    """Like BrokerStream: an iterator of events with cancel()."""

    def __init__(self, events: Iterator[broker_pb2.GenerateResponse]) -> None:
        self._events = events
        self.cancelled = False

    def __next__(self) -> broker_pb2.GenerateResponse:
        return next(self._events)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClient:
    """Stands in for BrokerClient: plays one scripted step per generate_request call."""

    def __init__(self, *steps: Step, healthy: bool = True) -> None:
        self.steps = list(steps)
        self.healthy = healthy
        self.calls = 0
        self.requests: list[broker_pb2.GenerateRequest] = []
        self.timeouts: list[float] = []
        self.health_checks = 0
        self.closed = False

    def wait_ready(self, timeout_s: float) -> None:
        assert timeout_s > 0

    def stream(
        self,
        messages: list[ChatMessage],
        params: SamplingParams,
        *,
        timeout_s: float | None = None,
        **request: Any,
    ) -> AnswerStream:
        """BrokerClient.stream: the request through the wire module, events back from it."""
        pb = wire.generate_request(messages, params, **request)
        return AnswerStream(self.generate_request(pb, timeout_s=timeout_s))  # type: ignore[arg-type]

    def generate_request(
        self, request: broker_pb2.GenerateRequest, *, timeout_s: float | None = None
    ) -> Iterator[broker_pb2.GenerateResponse]:
        self.calls += 1
        self.requests.append(request)
        assert timeout_s is not None and timeout_s > 0
        self.timeouts.append(timeout_s)
        step = self.steps.pop(0)
        if isinstance(step, errors.RidgelineError):
            raise step
        return _Stream(self._stream(step))

    @staticmethod
    def _stream(
        items: list[broker_pb2.GenerateResponse | errors.RidgelineError],
    ) -> Iterator[broker_pb2.GenerateResponse]:
        for item in items:
            if isinstance(item, errors.RidgelineError):
                raise item
            yield item

    def health(self, *, timeout_s: float) -> bool:
        self.health_checks += 1
        return self.healthy

    def close(self) -> None:
        self.closed = True


def settings(**overrides: float) -> EscalationSettings:
    values: dict[str, float] = {
        "deadline_s": 5.0,
        "connect_timeout_s": 0.5,
        "retries": 1,
        "failure_threshold": 2,
        "reset_after_s": 60.0,
        "reset_max_s": 120.0,
        "probe_timeout_s": 0.5,
    }
    values.update(overrides)
    return EscalationSettings.model_validate(values)


class Link:
    """An Escalator over a FakeClient, with its health meter and change counter."""

    def __init__(self, client: FakeClient, config: EscalationSettings | None = None) -> None:
        self.client = client
        self.health = BrokerHealth(alpha=0.5)
        self.changes = 0
        self.escalator = Escalator(
            cast(BrokerClient, client),
            config or settings(),
            self.health,
            address="broker.test:50051",
            model="big",
            device_id="dev-1",
            on_change=self._changed,
        )

    def _changed(self) -> None:
        self.changes += 1

    def escalate(self, deadline_s: float = 5.0, draft: Draft | None = None) -> CloudAnswer:
        return self.escalator.escalate(MESSAGES, PARAMS, draft=draft, deadline_s=deadline_s)

    def fail(self, deadline_s: float = 5.0) -> EscalationFailed:
        with pytest.raises(EscalationFailed) as caught:
            self.escalate(deadline_s)
        return caught.value


# -- success ---------------------------------------------------------------------------


def test_success_returns_the_answer_and_records_rtt() -> None:
    link = Link(FakeClient(ANSWER))
    streamed: list[str] = []
    answer = link.escalator.escalate(
        MESSAGES,
        PARAMS,
        draft=Draft("Paris", 0.4, "small-local", 2),
        deadline_s=5.0,
        on_text=streamed.append,
    )
    assert answer.text == "Paris."
    assert streamed == ["Paris", "."]
    assert answer.model == "big"
    assert answer.models_used == ("small", "big")
    assert answer.finish_reason == "stop"
    assert (answer.prompt_tokens, answer.completion_tokens) == (12, 3)
    assert answer.attempts == 1
    assert answer.rtt_s is not None and 0.0 <= answer.rtt_s < 1.0
    assert answer.time_to_first_text_s is not None
    assert 0.0 <= answer.time_to_first_text_s <= answer.total_s

    reading = link.health.read()
    assert reading["broker_available"] is True
    assert reading["broker_rtt_s"] == pytest.approx(answer.rtt_s)
    assert link.escalator.circuit.state == "closed"
    assert link.changes == 1

    (request,) = link.client.requests
    assert request.model == "big"
    assert request.device_id == "dev-1"
    assert request.local_draft.text == "Paris"
    assert request.local_draft.model == "small-local"
    assert link.client.timeouts[0] <= 5.0


def test_stream_without_result_is_a_failure() -> None:
    link = Link(FakeClient([delta("Par")], [delta("Par")]))
    failure = link.fail()
    assert failure.started
    assert failure.attempts == 1
    assert link.client.calls == 1


# -- retries ---------------------------------------------------------------------------


def test_unavailable_before_any_event_is_retried() -> None:
    link = Link(FakeClient([unavailable()], ANSWER))
    answer = link.escalate()
    assert answer.text == "Paris."
    assert answer.attempts == 2
    assert link.client.calls == 2
    assert link.escalator.circuit.state == "closed"


def test_unavailable_raised_by_the_call_itself_is_retried() -> None:
    link = Link(FakeClient(unavailable(), ANSWER))
    assert link.escalate().attempts == 2


def test_retries_are_bounded() -> None:
    link = Link(FakeClient(unavailable(), unavailable(), ANSWER), settings(failure_threshold=5))
    failure = link.fail()
    assert failure.attempts == 2  # one try and settings.retries=1 retry
    assert not failure.started
    assert failure.outage
    assert link.client.calls == 2


def test_no_retries_when_disabled() -> None:
    link = Link(FakeClient(unavailable(), ANSWER), settings(retries=0))
    assert link.fail().attempts == 1
    assert link.client.calls == 1


def test_queue_full_is_retried_after_its_delay() -> None:
    link = Link(FakeClient(errors.QueueFullError("every slot is taken", 0.01), ANSWER))
    answer = link.escalate()
    assert answer.attempts == 2
    assert answer.text == "Paris."


def test_overload_delay_beyond_the_deadline_is_not_retried() -> None:
    link = Link(FakeClient(errors.QueueFullError("busy", 30.0), ANSWER))
    failure = link.fail()
    assert failure.attempts == 1
    assert not failure.outage
    assert link.client.calls == 1
    assert link.escalator.circuit.state == "closed"


def test_unavailable_without_a_status_is_not_retried() -> None:
    # wait_ready's "did not accept a connection within" timeout carries no status
    link = Link(FakeClient(errors.UnavailableError("no connection within 0.5 s"), ANSWER))
    failure = link.fail()
    assert failure.attempts == 1
    assert failure.outage


def test_failure_after_streamed_text_is_not_retried() -> None:
    link = Link(FakeClient([delta("Par"), unavailable("reset")], ANSWER))
    streamed: list[str] = []
    with pytest.raises(EscalationFailed) as caught:
        link.escalator.escalate(
            MESSAGES, PARAMS, draft=None, deadline_s=5.0, on_text=streamed.append
        )
    assert caught.value.started
    assert caught.value.attempts == 1
    assert caught.value.outage
    assert streamed == ["Par"]
    assert link.client.calls == 1
    assert isinstance(caught.value.__cause__, errors.UnavailableError)


# -- the circuit -----------------------------------------------------------------------


def test_invalid_request_is_not_retried_and_not_an_outage() -> None:
    client = FakeClient(*[errors.InvalidRequestError("bad request") for _ in range(3)])
    link = Link(client)
    for _ in range(3):  # more than failure_threshold
        failure = link.fail()
        assert failure.attempts == 1
        assert not failure.outage
        assert "InvalidRequestError" in failure.reason
    assert client.calls == 3
    assert link.escalator.circuit.state == "closed"
    assert link.health.read()["broker_available"] is None


def test_rate_limit_is_not_an_outage() -> None:
    client = FakeClient(*[errors.RateLimitedError("budget spent", 3600.0) for _ in range(3)])
    link = Link(client)
    for _ in range(3):
        assert not link.fail().outage
    assert link.escalator.circuit.state == "closed"


def test_outages_open_the_circuit_and_then_no_call_is_made() -> None:
    client = FakeClient(unavailable(), unavailable(), ANSWER)
    link = Link(client, settings(retries=0))
    assert link.fail().outage
    assert link.escalator.circuit.state == "closed"
    assert link.fail().outage
    assert link.escalator.circuit.state == "open"
    assert link.health.read()["broker_available"] is False
    assert client.calls == 2

    failure = link.fail()
    assert failure.attempts == 0
    assert failure.outage
    assert not failure.started
    assert "circuit open" in failure.reason
    assert client.calls == 2  # refused without touching the client
    available, why = link.escalator.available()
    assert not available
    assert "circuit open" in why


def test_internal_status_counts_as_an_outage() -> None:
    internal = errors.RidgelineError("broker crashed")
    internal.status = "INTERNAL"
    link = Link(FakeClient(internal, internal), settings(retries=0))
    link.fail()
    link.fail()
    assert link.escalator.circuit.state == "open"


def test_probe_closes_an_open_circuit() -> None:
    client = FakeClient(unavailable(), unavailable(), ANSWER)
    link = Link(client, settings(retries=0))
    link.fail()
    link.fail()
    assert link.escalator.circuit.state == "open"

    assert link.escalator.probe()
    assert client.health_checks == 1
    assert link.escalator.circuit.state == "closed"
    assert link.health.read()["broker_available"] is True
    assert link.escalate().text == "Paris."


def test_failed_probe_keeps_the_circuit_open() -> None:
    client = FakeClient(unavailable(), unavailable(), healthy=False)
    link = Link(client, settings(retries=0))
    link.fail()
    link.fail()
    assert not link.escalator.probe()
    assert link.escalator.circuit.state == "open"
    assert link.health.read()["broker_available"] is False


def test_half_open_trial_through_escalate() -> None:
    now = [0.0]
    client = FakeClient(unavailable(), unavailable(), unavailable(), ANSWER)
    link = Link(client, settings(retries=0, reset_after_s=10.0))
    link.escalator.circuit = CircuitBreaker(2, 10.0, 120.0, clock=lambda: now[0])
    link.fail()
    link.fail()
    assert link.escalator.circuit.state == "open"

    now[0] += 10.0
    assert link.escalator.circuit.state == "half-open"
    assert link.fail().attempts == 1  # the trial fails: the wait doubles
    assert link.escalator.circuit.retry_in_s() == pytest.approx(20.0)
    assert link.fail().attempts == 0

    now[0] += 20.0
    assert link.escalate().text == "Paris."
    assert link.escalator.circuit.state == "closed"
    assert client.calls == 4


# -- deadlines -------------------------------------------------------------------------


@pytest.mark.parametrize("deadline_s", [0.0, -1.0])
def test_deadline_already_passed(deadline_s: float) -> None:
    client = FakeClient(ANSWER)
    link = Link(client)
    failure = link.fail(deadline_s)
    assert not failure.started
    assert "deadline" in failure.reason
    assert client.calls == 0


def test_spent_deadlines_do_not_open_the_circuit() -> None:
    # The agent passes what is left of its deadline after local generation; a slow local
    # model must not make a healthy broker look down.
    client = FakeClient(ANSWER)
    link = Link(client)
    for _ in range(3):  # more than failure_threshold
        assert not link.fail(0.0).outage
    assert link.escalator.circuit.state == "closed"
    assert link.health.read()["broker_available"] is None
    assert link.escalate().text == "Paris."


def test_close_closes_the_client() -> None:
    client = FakeClient()
    Link(client).escalator.close()
    assert client.closed
