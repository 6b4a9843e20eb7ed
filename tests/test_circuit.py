"""The broker circuit breaker, on a fake clock: closed → open → half-open → closed/open."""

from __future__ import annotations

import pytest

from edge_agent.link.circuit import CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_after_s=5.0, reset_max_s=20.0, clock=clock)


def open_circuit(breaker: CircuitBreaker) -> None:
    for i in range(breaker.failure_threshold):
        breaker.record_failure(f"failure {i}")
    assert breaker.state == "open"


def test_starts_closed(breaker: CircuitBreaker) -> None:
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.allow()
    assert breaker.retry_in_s() == 0.0
    assert breaker.last_error is None


def test_opens_after_threshold_consecutive_failures(breaker: CircuitBreaker) -> None:
    breaker.record_failure("one")
    breaker.record_failure("two")
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.record_failure("three")
    assert breaker.state == "open"
    assert breaker.last_error == "three"
    assert not breaker.allow()
    assert not breaker.allow()


def test_a_success_resets_the_failure_count(breaker: CircuitBreaker) -> None:
    breaker.record_failure("one")
    breaker.record_failure("two")
    breaker.record_success()
    assert breaker.last_error is None
    breaker.record_failure("three")
    breaker.record_failure("four")
    assert breaker.state == "closed"
    breaker.record_failure("five")
    assert breaker.state == "open"


def test_retry_in_counts_down_while_open(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_circuit(breaker)
    assert breaker.retry_in_s() == pytest.approx(5.0)
    clock.advance(2.0)
    assert breaker.retry_in_s() == pytest.approx(3.0)
    assert breaker.state == "open"
    clock.advance(3.0)
    assert breaker.retry_in_s() == 0.0
    clock.advance(100.0)
    assert breaker.retry_in_s() == 0.0


def test_half_open_lets_exactly_one_caller_through(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_circuit(breaker)
    clock.advance(4.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()
    assert not breaker.allow()


def test_trial_success_closes(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_circuit(breaker)
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow()
    assert breaker.allow()
    assert breaker.retry_in_s() == 0.0
    # the count starts again from zero and the wait from reset_after_s
    breaker.record_failure("a")
    breaker.record_failure("b")
    assert breaker.state == "closed"
    breaker.record_failure("c")
    assert breaker.retry_in_s() == pytest.approx(5.0)


def test_trial_failure_reopens_with_doubled_capped_wait(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_circuit(breaker)
    waits = []
    for _ in range(4):
        clock.advance(breaker.retry_in_s())
        assert breaker.state == "half-open"
        assert breaker.allow()
        breaker.record_failure("still down")
        assert breaker.state == "open"
        assert not breaker.allow()
        waits.append(breaker.retry_in_s())
    assert waits == [10.0, 20.0, 20.0, 20.0]
    assert breaker.last_error == "still down"


def test_success_after_backoff_resets_the_wait(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_circuit(breaker)
    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_failure("down")
    clock.advance(10.0)
    assert breaker.allow()
    breaker.record_success()
    open_circuit(breaker)
    assert breaker.retry_in_s() == pytest.approx(5.0)


def test_release_lets_another_trial_through(breaker: CircuitBreaker, clock: FakeClock) -> None:
    open_circuit(breaker)
    clock.advance(5.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()


def test_release_without_a_trial_changes_nothing(breaker: CircuitBreaker) -> None:
    breaker.release()
    assert breaker.state == "closed"
    open_circuit(breaker)
    breaker.release()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_late_failure_while_open_restarts_the_wait_without_doubling(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    open_circuit(breaker)
    clock.advance(3.0)
    breaker.record_failure("a call that started before the circuit opened")
    assert breaker.state == "open"
    assert breaker.retry_in_s() == pytest.approx(5.0)
