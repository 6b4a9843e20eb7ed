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
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import Protocol

from ridgeline_core.cancel import CancelToken
from ridgeline_core.client import BrokerClient
from ridgeline_core.runtime import ChatMessage, SamplingParams

from ..decision import BrokerInfo
from ..settings import EscalationSettings
from ..telemetry.meters import BrokerHealth
from .answers import CloudAnswer, Draft, EscalationFailed
from .attempt import EscalationRequest
from .circuit import CircuitBreaker
from .gate import CallGate
from .prober import HealthProber
from .retrying import RetryingCall

__all__ = ["BrokerLink", "CloudAnswer", "Draft", "EscalationFailed", "Escalator", "drain"]

log = logging.getLogger(__name__)


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
        circuit = CircuitBreaker(
            settings.failure_threshold, settings.reset_after_s, settings.reset_max_s
        )
        self.prober = HealthProber(
            client, settings, circuit, health, address=address, on_change=on_change
        )
        self._gate = CallGate(circuit, health, self.prober, address, on_change)

    @property
    def circuit(self) -> CircuitBreaker:
        return self._gate.circuit

    @circuit.setter
    def circuit(self, circuit: CircuitBreaker) -> None:
        self._gate.circuit = circuit

    def available(self) -> tuple[bool, str]:
        """Whether a call may go out now, and if not, why (without using up a trial)."""
        return self._gate.available()

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
        self._gate.take(deadline_s)
        request = EscalationRequest(
            list(messages), params, draft, uuid.uuid4().hex, self.model or None, self.device_id
        )  # one id for every attempt
        settled = False  # the circuit heard how this call ended
        try:
            call = RetryingCall(
                self.client, self.settings, request, cancel, on_success=self._gate.succeeded,
                on_failure=self._gate.failed,
            )  # fmt: skip
            answer = yield from call.run(deadline_s)
            settled = True
            return answer
        except EscalationFailed as failed:
            settled = failed.outage
            raise
        finally:
            if not settled:  # cancelled, a caller's callback raised, or not the broker's fault
                self.circuit.release()

    def probe(self) -> bool:
        """One health check; closes an open circuit when the broker serves again."""
        return self.prober.probe()

    def start_probing(self, idle_interval_s: float = 30.0) -> None:
        """Probe in the background (see :class:`~.prober.HealthProber`)."""
        self.prober.start(idle_interval_s)

    def close(self) -> None:
        self.prober.close()
        self.client.close()


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
