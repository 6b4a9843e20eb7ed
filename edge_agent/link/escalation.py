"""Escalation: send a request to the broker under a deadline, retry only where it is safe,
and keep a circuit breaker so a dead broker costs one timeout rather than one per request.

A call is retried only when it failed before the broker sent anything (the connection was
refused, the broker was overloaded and named a retry delay that fits the deadline): once
text has streamed, a retry could duplicate work and answer twice, so a broken stream is a
failure the caller handles (with its local answer). Failures that say the broker is down
(unreachable, deadline, internal error) count towards the circuit; failures that say the
request was wrong or not allowed (invalid, unauthenticated, rate limited) do not.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ridgeline_core import errors, wire
from ridgeline_core.cancel import CancelToken
from ridgeline_core.client import BrokerClient
from ridgeline_core.runtime import ChatMessage, SamplingParams
from ridgeline_core.wire import LocalDraft

from ..decision import BrokerInfo
from ..settings import EscalationSettings
from ..telemetry.meters import BrokerHealth
from .circuit import CircuitBreaker

__all__ = ["BrokerLink", "CloudAnswer", "Draft", "EscalationFailed", "Escalator", "drain"]

log = logging.getLogger(__name__)

# Errors that say the broker (or the link to it) is down, not that this request was wrong.
_OUTAGES: tuple[type[errors.RidgelineError], ...] = (errors.UnavailableError,)
_OUTAGE_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN"})


Draft = LocalDraft  # the local answer sent along with an escalation


@dataclass(frozen=True)
class CloudAnswer:
    text: str
    model: str
    models_used: tuple[str, ...]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    rtt_s: float | None  # link time: first event at the client minus the broker's own TTFT
    time_to_first_text_s: float | None
    total_s: float
    attempts: int


class EscalationFailed(Exception):
    """The broker gave no complete answer; ``started`` says whether text had streamed."""

    def __init__(self, reason: str, *, started: bool, attempts: int, outage: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.started = started
        self.attempts = attempts
        self.outage = outage


def _is_outage(exc: errors.RidgelineError) -> bool:
    return isinstance(exc, _OUTAGES) or (exc.status in _OUTAGE_STATUSES)


class BrokerLink(Protocol):
    """What the agent needs from a broker link: :class:`Escalator`, or a stand-in such as
    the simulator's dry-run broker."""

    address: str
    circuit: CircuitBreaker

    def available(self) -> tuple[bool, str]: ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
    ) -> Generator[str, None, CloudAnswer]:
        """Yield the broker's text as it arrives; return the whole answer, or raise
        :class:`EscalationFailed`. Closing the generator stops the call."""
        ...

    def escalate(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
    ) -> CloudAnswer:
        """:meth:`stream` to its end."""
        ...

    def probe(self) -> bool: ...

    def close(self) -> None: ...


class Escalator:
    """One broker link: client, circuit breaker, health bookkeeping and an optional prober."""

    def __init__(
        self,
        client: BrokerClient,
        settings: EscalationSettings,
        health: BrokerHealth,
        *,
        address: str,
        model: str = "",
        device_id: str = "",
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.health = health
        self.address = address
        self.model = model
        self.device_id = device_id
        self.circuit = CircuitBreaker(
            settings.failure_threshold, settings.reset_after_s, settings.reset_max_s
        )
        self._on_change = on_change  # telemetry changed: rebuild the snapshot
        self._stop = threading.Event()
        self._wake = threading.Event()  # the circuit opened, or close(): re-plan the prober
        self._prober: threading.Thread | None = None

    def available(self) -> tuple[bool, str]:
        """Whether a call may go out now, and if not, why (without using up a trial)."""
        state = self.circuit.state
        if state == "open":
            return False, (
                f"broker circuit open after {self.circuit.last_error or 'failures'}; "
                f"next try in {self.circuit.retry_in_s():.0f} s"
            )
        return True, state

    def escalate(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        on_text: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
    ) -> CloudAnswer:
        """:meth:`stream` to its end, handing each piece of text to ``on_text``."""
        steps = self.stream(messages, params, draft=draft, deadline_s=deadline_s, cancel=cancel)
        return drain(steps, on_text)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
    ) -> Generator[str, None, CloudAnswer]:
        """Yield the broker's text as it arrives and return its answer, or raise
        :class:`EscalationFailed`; RequestCancelledError when ``cancel`` is cancelled.
        Cancelling, or closing the generator, stops the call on the broker at once."""
        if deadline_s <= 0:
            # The caller's time ran out before the call (a slow local generation): no fault
            # of the broker's, so it neither counts towards the circuit nor takes a trial.
            raise EscalationFailed(
                "the escalation deadline passed before the call",
                started=False,
                attempts=0,
                outage=False,
            )
        if not self.circuit.allow():
            reason = self.available()[1]
            if self.circuit.state == "half-open":
                reason = "a trial call to the broker is already in flight"
            raise EscalationFailed(reason, started=False, attempts=0, outage=True)
        started = time.perf_counter()
        attempts = 0
        settled = False  # the circuit heard how this call ended
        try:
            request = _Request(list(messages), params, draft, uuid.uuid4().hex)  # one id, retried
            while True:
                attempts += 1
                remaining = deadline_s - (time.perf_counter() - started)
                try:
                    answer = yield from self._call(request, remaining, attempts, started, cancel)
                    settled = True
                    return answer
                except _Attempt as failure:
                    exc = failure.error
                    remaining = deadline_s - (time.perf_counter() - started)
                    delay = self._retry_delay(exc, failure.started, attempts, remaining)
                    if delay is None:
                        outage = _is_outage(exc)
                        self._record_failure(exc, outage)
                        settled = outage
                        raise EscalationFailed(
                            f"{type(exc).__name__}: {exc}",
                            started=failure.started,
                            attempts=attempts,
                            outage=outage,
                        ) from exc
                    if cancel is None:
                        time.sleep(delay)
                    elif cancel.wait(delay):
                        cancel.check()
        finally:
            if not settled:  # cancelled, a caller's callback raised, or not the broker's fault
                self.circuit.release()

    def _call(
        self,
        request: _Request,
        remaining_s: float,
        attempts: int,
        started: float,
        cancel: CancelToken | None,
    ) -> Generator[str, None, CloudAnswer]:
        if remaining_s <= 0:
            raise _Attempt(errors.UnavailableError("the escalation deadline passed"), False)
        streamed = False
        stream = None
        result: wire.BrokerResult | None = None
        forget: Callable[[], None] | None = None
        try:
            connect_started = time.perf_counter()
            self.client.wait_ready(min(self.settings.connect_timeout_s, remaining_s))
            call_started = time.perf_counter()
            remaining_s -= call_started - connect_started
            if remaining_s <= 0:
                raise errors.UnavailableError("the escalation deadline passed while connecting")
            if cancel is not None:
                cancel.check()
            stream = self.client.stream(
                request.messages,
                request.params,
                model=self.model or None,
                device_id=self.device_id,
                draft=request.draft,
                request_id=request.request_id,
                timeout_s=remaining_s,
            )
            if cancel is not None:
                forget = cancel.on_cancel(stream.cancel)
            parts: list[str] = []
            first_event: float | None = None
            first_text: float | None = None
            for event in stream:
                now = time.perf_counter()
                if first_event is None:
                    first_event = now
                if isinstance(event, wire.BrokerDelta):
                    if event.text:
                        if first_text is None:
                            first_text = now
                        streamed = True
                        parts.append(event.text)
                        yield event.text
                else:
                    result = event
        except errors.RidgelineError as exc:
            if cancel is not None and cancel.cancelled:
                raise errors.RequestCancelledError(cancel.reason) from exc
            raise _Attempt(exc, streamed) from exc
        except (ValueError, KeyError) as exc:  # grpc: "Cannot invoke RPC: Channel closed!"
            closed = errors.UnavailableError(f"the broker link is closed ({exc})")
            raise _Attempt(closed, streamed) from exc
        finally:
            if forget is not None:
                forget()
            if stream is not None and result is None:
                stream.cancel()  # stop the broker's work at once, not at garbage collection
        if result is None:
            raise _Attempt(errors.UnavailableError("the stream ended without a result"), streamed)
        rtt = None
        if first_event is not None:
            broker_first_s = result.time_to_first_token_ms / 1000
            rtt = max(0.0, first_event - call_started - broker_first_s)
            self.health.record_rtt(rtt)
        self.circuit.record_success()
        self._on_change()
        end = time.perf_counter()
        return CloudAnswer(
            text="".join(parts),
            model=result.answer_model,
            models_used=result.models_used,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            rtt_s=rtt,
            time_to_first_text_s=None if first_text is None else first_text - started,
            total_s=end - started,
            attempts=attempts,
        )

    def _retry_delay(
        self, exc: errors.RidgelineError, streamed: bool, attempts: int, remaining_s: float
    ) -> float | None:
        if streamed or attempts > self.settings.retries:
            return None
        if isinstance(exc, errors.OverloadedError):
            delay = exc.retry_after_s
        elif isinstance(exc, errors.UnavailableError) and exc.status == "UNAVAILABLE":
            delay = 0.1 * attempts  # refused or reset before any byte: the broker may be back
        else:
            return None
        if delay >= remaining_s - self.settings.connect_timeout_s:
            return None  # no time left for another try
        return delay

    def _record_failure(self, exc: errors.RidgelineError, outage: bool) -> None:
        if outage:
            was_open = self.circuit.state != "closed"
            self.circuit.record_failure(f"{type(exc).__name__}: {exc}")
            if self.circuit.state == "open":
                if not was_open:
                    log.warning("broker %s: circuit opened (%s)", self.address, exc)
                    self._wake.set()
                self.health.record_down()
                self._on_change()
        else:
            self.circuit.release()

    # -- health probing ------------------------------------------------------------

    def probe(self) -> bool:
        """One health check; closes an open circuit when the broker serves again."""
        started = time.perf_counter()
        ok = False
        try:
            self.client.wait_ready(self.settings.probe_timeout_s)
            ok = self.client.health(timeout_s=self.settings.probe_timeout_s)
        except errors.RidgelineError:
            ok = False
        if ok:
            self.health.record_rtt(time.perf_counter() - started)
            if self.circuit.state != "closed":
                log.info("broker %s: serving again, circuit closed", self.address)
            self.circuit.record_success()
        else:
            if self.circuit.state == "half-open":
                self.circuit.allow()  # take the trial so the failure doubles the wait
            self.circuit.record_failure("health probe failed")
            if self.circuit.state != "closed":
                self.health.record_down()
        self._on_change()
        return ok

    def start_probing(self, idle_interval_s: float = 30.0) -> None:
        """Probe in the background: when the circuit is open, as soon as it would let a
        trial through (with its backoff); otherwise every ``idle_interval_s``."""
        if self._prober is not None:
            return

        def loop() -> None:
            while True:
                closed = self.circuit.state == "closed"
                wait = idle_interval_s if closed else self.circuit.retry_in_s()
                woke = self._wake.wait(wait)
                self._wake.clear()
                if self._stop.is_set():
                    return
                if woke:  # woken early: the circuit changed, so work out the wait again
                    continue
                try:
                    self.probe()
                except Exception:  # a bug must not end probing (the circuit would stay open)
                    log.exception("broker %s: health probe failed unexpectedly", self.address)

        self._prober = threading.Thread(target=loop, name="ridgeline-broker-probe", daemon=True)
        self._prober.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._prober is not None:
            self._prober.join(timeout=5)
        self.client.close()


@dataclass(frozen=True)
class _Request:
    """One escalation: what it asks, and the id every attempt of it carries."""

    messages: list[ChatMessage]
    params: SamplingParams
    draft: Draft | None
    request_id: str


class _Attempt(Exception):
    def __init__(self, error: errors.RidgelineError, started: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.started = started


def answered_info(link: BrokerLink, cloud: CloudAnswer) -> BrokerInfo:
    """The decision record's broker part for an answer the broker gave."""
    return BrokerInfo(
        address=link.address,
        model=cloud.model,
        models_used=list(cloud.models_used),
        attempts=cloud.attempts,
        rtt_ms=None if cloud.rtt_s is None else cloud.rtt_s * 1000,
        prompt_tokens=cloud.prompt_tokens,
        completion_tokens=cloud.completion_tokens,
        circuit=link.circuit.state,
    )


def failed_info(link: BrokerLink, failure: EscalationFailed) -> BrokerInfo:
    """The decision record's broker part for an escalation that failed."""
    return BrokerInfo(
        address=link.address,
        attempts=failure.attempts,
        error=failure.reason,
        circuit=link.circuit.state,
    )


def drain(
    steps: Generator[str, None, CloudAnswer], on_text: Callable[[str], None] | None = None
) -> CloudAnswer:
    """Run a broker link's :meth:`~BrokerLink.stream` to its end; ``on_text`` gets each
    piece of text. A callback that raises stops the call at once."""
    try:
        while True:
            try:
                text = next(steps)
            except StopIteration as done:
                answer: CloudAnswer = done.value
                return answer
            if on_text is not None:
                on_text(text)
    finally:
        steps.close()
