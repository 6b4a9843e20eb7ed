"""Issue 16: the edge's own state and its broker link under abuse.

- a caller's deadline (too short, too long) never counts as a broker outage: the shared
  circuit and the broker's health stay as they were, and the request answers
  ``local-degraded`` saying its deadline ran out;
- a corrupt escalation budget file (non-finite or future timestamps) and corrupt answer
  cache metadata are set aside with one warning; the commands keep working;
- one invalid manifest in ``models.manifest_dirs`` is skipped, not fatal.

The link rules run in-process over a scripted model (fast lane); the deadline cases also
run against a real broker process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run
from fastlane import EASY, SCRIPTED, fast_agent

from edge_agent.daemon import bodies, openai_api
from edge_agent.daemon.grpc_api import options_of
from edge_agent.link.escalation import Escalator
from edge_agent.settings import EscalationSettings
from edge_agent.telemetry.meters import BrokerHealth
from ridgeline.v1 import broker_pb2, edge_pb2
from ridgeline_core import errors
from ridgeline_core.client import MAX_TIMEOUT_S, AnswerStream, BrokerClient
from ridgeline_core.runtime import ChatMessage, SamplingParams

MESSAGES = [ChatMessage("user", "Say hi.")]


# -- deadlines: a slow broker in-process ------------------------------------------------------


class _Cancellable(Iterator[broker_pb2.GenerateResponse]):
    def __init__(self, events: Iterator[broker_pb2.GenerateResponse]) -> None:
        self._events = events

    def __next__(self) -> broker_pb2.GenerateResponse:
        return next(self._events)

    def cancel(self) -> None:
        pass


class SlowBroker:
    """A broker client whose every answer takes ``answer_s``: a call whose timeout is
    shorter ends DEADLINE_EXCEEDED when the timeout passes, as gRPC's would."""

    def __init__(self, answer_s: float) -> None:
        self.answer_s = answer_s
        self.timeouts: list[float] = []

    def wait_ready(self, timeout_s: float) -> None:
        pass

    def stream(self, *_: Any, timeout_s: float | None = None, **__: Any) -> AnswerStream:
        assert timeout_s is not None
        self.timeouts.append(timeout_s)
        return AnswerStream(_Cancellable(self._events(timeout_s)))  # type: ignore[arg-type]

    def _events(self, timeout_s: float) -> Iterator[broker_pb2.GenerateResponse]:
        time.sleep(min(timeout_s, self.answer_s))
        if timeout_s < self.answer_s:
            late = errors.UnavailableError("Deadline Exceeded")
            late.status = "DEADLINE_EXCEEDED"
            raise late
        yield broker_pb2.GenerateResponse(delta=broker_pb2.TextDelta(text="Hi!", model="big"))
        usage = broker_pb2.Usage(prompt_tokens=3, completion_tokens=2)
        end = broker_pb2.GenerateResult(
            finish_reason=broker_pb2.FINISH_REASON_STOP, answer_model="big", usage=usage
        )
        yield broker_pb2.GenerateResponse(result=end)

    def health(self, *, timeout_s: float) -> bool:
        return True

    def close(self) -> None:
        pass


def slow_link(answer_s: float, deadline_s: float = 0.5) -> tuple[Escalator, BrokerHealth]:
    health = BrokerHealth(alpha=0.5)
    config = EscalationSettings(deadline_s=deadline_s, failure_threshold=2, retries=1)
    link = Escalator(SlowBroker(answer_s), config, health, address="slow:1")  # type: ignore[arg-type]
    return link, health


def test_a_callers_short_deadline_is_not_a_broker_outage(tmp_path: Path) -> None:
    link, health = slow_link(answer_s=0.2)
    with fast_agent(tmp_path, link) as agent:  # type: ignore[arg-type]
        for _ in range(4):  # more than failure_threshold
            answer = agent.ask(EASY, mode="cloud", deadline_s=0.05)
            assert answer.source == "local-degraded"
            assert answer.model == SCRIPTED
            assert "deadline_s 0.05 s ran out" in answer.decision.reason
            broker = answer.decision.broker
            assert broker is not None and broker.circuit == "closed"
        assert link.circuit.state == "closed"
        assert health.read()["broker_available"] is None  # neither up nor down: no news
        answer = agent.ask(EASY, mode="cloud")
    assert (answer.source, answer.text) == ("cloud", "Hi!")


def test_a_broker_slower_than_the_configured_deadline_still_counts(tmp_path: Path) -> None:
    link, health = slow_link(answer_s=0.3, deadline_s=0.1)
    escalation = {"deadline_s": 0.1}
    with fast_agent(tmp_path, link, escalation=escalation) as agent:  # type: ignore[arg-type]
        for _ in range(2):  # failure_threshold
            answer = agent.ask(EASY, mode="cloud")  # the configured deadline
            assert answer.source == "local-degraded"
            assert "Deadline Exceeded" in answer.decision.reason
        assert link.circuit.state == "open"
        assert health.read()["broker_available"] is False


def test_a_longer_deadline_than_configured_that_passes_still_counts() -> None:
    link, _ = slow_link(answer_s=0.3, deadline_s=0.05)
    for _ in range(2):
        with pytest.raises(Exception) as caught:
            link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=0.1)
        assert getattr(caught.value, "outage", None) is True
    assert link.circuit.state == "open"


def test_a_callers_deadline_releases_a_half_open_trial() -> None:
    now = [0.0]
    link, _ = slow_link(answer_s=0.2)
    from edge_agent.link.circuit import CircuitBreaker

    link.circuit = CircuitBreaker(1, 10.0, 60.0, clock=lambda: now[0])
    link.circuit.allow()
    link.circuit.record_failure("refused")
    now[0] += 10.0
    assert link.circuit.state == "half-open"
    with pytest.raises(Exception) as caught:
        link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=0.05)
    assert getattr(caught.value, "outage", None) is False
    assert link.circuit.state == "half-open"
    assert link.circuit.retry_in_s() == 0.0  # not doubled: the trial was given back
    assert link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=1).text
    assert link.circuit.state == "closed"


@pytest.mark.parametrize("deadline_s", [1e10, math.inf, 3600.5, 0.0, -1.0, math.nan])
def test_an_out_of_range_deadline_is_refused_before_any_call(
    tmp_path: Path, deadline_s: float
) -> None:
    link, _ = slow_link(answer_s=0.0)
    with (
        fast_agent(tmp_path, link) as agent,  # type: ignore[arg-type]
        pytest.raises(errors.InvalidRequestError, match="deadline_s"),
    ):
        agent.ask(EASY, mode="cloud", deadline_s=deadline_s)
    assert link.circuit.state == "closed"
    assert not link.client.timeouts  # type: ignore[attr-defined]


@pytest.mark.parametrize("huge", [1e10, math.inf])
def test_every_entry_point_refuses_a_huge_deadline(huge: float, edge_env: dict[str, str]) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "ridgeline": {"deadline_s": huge}}
    classify = {"specialist": "intents", "text": "hi", "deadline_s": huge}
    entries = [
        lambda: openai_api.parse_chat(chat, {}, {"smol": "chat"}),
        lambda: bodies.parse_body(bodies.ClassifyBody, classify).options(),
        lambda: options_of(edge_pb2.AskRequest(deadline_s=huge)),
    ]
    for entry in entries:
        with pytest.raises(errors.InvalidRequestError, match="deadline_s") as refused:
            entry()
        assert (refused.value.param or "").endswith("deadline_s")
    result = run("edge-agent", "ask", "--deadline", f"{huge}", "hi", env=edge_env)
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith("error: deadline_s must be")
    assert "Traceback" not in result.stderr


def test_a_huge_deadline_given_to_the_link_itself_is_bounded() -> None:
    """The link is public: a library caller passing 1e10 gets an answer, not a call that
    gRPC ends at once (its deadline overflows) and that counts as an outage."""
    link, _ = slow_link(answer_s=0.0)
    answer = link.escalate(MESSAGES, SamplingParams(max_tokens=4), draft=None, deadline_s=1e10)
    assert answer.text == "Hi!"
    assert max(link.client.timeouts) <= MAX_TIMEOUT_S  # type: ignore[attr-defined]


# -- deadlines: a real broker ------------------------------------------------------------------


@pytest.mark.model
def test_deadline_abuse_leaves_the_shared_circuit_closed(
    shared_broker: BrokerProcess, tmp_path: Path
) -> None:
    broker = {"address": shared_broker.address, "plaintext": True}
    with fast_agent(tmp_path, None, broker=broker) as agent:
        for _ in range(4):  # more than escalation.failure_threshold (3)
            answer = agent.ask(EASY, mode="cloud", deadline_s=0.05, max_tokens=64)
            assert answer.source == "local-degraded"
            assert "deadline_s 0.05 s ran out" in answer.decision.reason
        for huge in (1e10, math.inf):
            with pytest.raises(errors.InvalidRequestError, match="deadline_s"):
                agent.ask(EASY, mode="cloud", deadline_s=huge)
        link = agent.parts.link.link()
        assert link is not None and link.circuit.state == "closed"
        assert agent.parts.broker_health.read()["broker_available"] is not False
        answer = agent.ask(EASY, mode="cloud", max_tokens=8, deadline_s=3600)
        assert answer.source == "cloud", answer.decision.reason
        assert link.circuit.state == "closed"

    # The shared core client bounds a timeout gRPC cannot represent.
    client = BrokerClient(shared_broker.address, plaintext=True)
    try:
        client.wait_ready(10)
        events = list(client.stream(MESSAGES, SamplingParams(max_tokens=4), timeout_s=1e10))
        assert events and events[-1].finish_reason
    finally:
        client.close()
