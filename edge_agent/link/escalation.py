"""Escalation: send a request to the broker under a deadline, retry only where it is safe,
and keep a circuit breaker so a dead broker costs one timeout rather than one per request.

A call is retried only when it failed before the broker sent anything (the connection was
refused, the broker was overloaded and named a retry delay that fits the deadline): once
text has streamed, a retry could duplicate work and answer twice, so a broken stream is a
failure the caller handles (with its local answer). Failures that say the broker is down
(unreachable, deadline, internal error) count towards the circuit; failures that say the
request was wrong or not allowed (invalid, unauthenticated, rate limited) do not, and
neither does a deadline the caller set shorter than ``escalation.deadline_s`` running out
(a broker is not down because one request wanted its answer sooner).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Generator, Sequence
from typing import Protocol

from ridgeline_core.cancel import CancelToken
from ridgeline_core.client import MAX_TIMEOUT_S, BrokerClient
from ridgeline_core.runtime import ChatMessage, SamplingParams
from ridgeline_core.wire import StrategyChoice

from ..decision import BrokerInfo
from ..settings import EscalationSettings
from ..telemetry.meters import BrokerHealth
from .answers import BrokerVia, CloudAnswer, Draft, EscalationFailed
from .attempt import EscalationRequest
from .circuit import CircuitBreaker
from .gate import CallGate
from .guarded import GuardedLink
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
        via: BrokerVia | None = None,
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
        via: BrokerVia | None = None,
    ) -> CloudAnswer:
        """:meth:`stream` to its end."""
        ...

    def probe(self) -> bool: ...

    def close(self) -> None: ...


class Escalator(GuardedLink):
    """One broker link: its calls, each under the circuit of :class:`~.guarded.GuardedLink`
    (client, circuit breaker, health bookkeeping and an optional prober)."""

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
        via: BrokerVia | None = None,
    ) -> None:
        super().__init__(client, settings, health, address=address, on_change=on_change)
        self.model = model
        self.device_id = device_id
        self.via = via or BrokerVia()  # broker.strategy and broker.max_cost

    def escalate(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        on_text: Callable[[str], None] | None = None,
        cancel: CancelToken | None = None,
        via: BrokerVia | None = None,
    ) -> CloudAnswer:
        """:meth:`stream` to its end, handing each piece of text to ``on_text``."""
        steps = self.stream(
            messages, params, draft=draft, deadline_s=deadline_s, cancel=cancel, via=via
        )
        return drain(steps, on_text)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        params: SamplingParams,
        *,
        draft: Draft | None,
        deadline_s: float,
        cancel: CancelToken | None = None,
        via: BrokerVia | None = None,
    ) -> Generator[str, None, CloudAnswer]:
        """Yield the broker's text as it arrives and return its answer, or raise
        :class:`EscalationFailed`; RequestCancelledError when ``cancel`` is cancelled.
        Cancelling, or closing the generator, stops the call on the broker at once."""
        deadline_s = min(deadline_s, MAX_TIMEOUT_S)  # one gRPC can represent
        self._gate.take(deadline_s)
        strategy, max_cost = _chosen(self.via, via)
        request = EscalationRequest(
            list(messages),
            params,
            draft,
            uuid.uuid4().hex,
            self.model or None,
            self.device_id,
            strategy,
            max_cost,
        )  # one id for every attempt
        call = RetryingCall(
            self.client, self.settings, request, cancel, on_success=self._gate.succeeded,
            on_failure=self._gate.failed,
        )  # fmt: skip
        return (yield from _run_settled(call, deadline_s, self._gate))


def _chosen(link: BrokerVia, call: BrokerVia | None) -> tuple[StrategyChoice | None, float | None]:
    """The strategy and cost limit of one call: the call's, else the link's settings'."""
    name = (call.strategy if call else "") or link.strategy
    max_cost = call.max_cost if call and call.max_cost is not None else link.max_cost
    return (StrategyChoice(name) if name else None), max_cost


def _run_settled(
    call: RetryingCall, deadline_s: float, gate: CallGate
) -> Generator[str, None, CloudAnswer]:
    """Run ``call``, which holds ``gate``'s permission, and make sure the circuit hears how
    it ended: an answer or an outage is counted by the call itself; anything else (it was
    cancelled, a caller's callback raised, not the broker's fault) gives the permission
    back."""
    settled = False  # the circuit heard how this call ended
    try:
        answer = yield from call.run(deadline_s)
        settled = True
        return answer
    except EscalationFailed as failed:
        settled = failed.outage
        raise
    finally:
        if not settled:
            gate.circuit.release()


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
        strategy=cloud.strategy,
        strategy_name=cloud.strategy_name or None,
        members=[dataclasses.asdict(member) for member in cloud.members],
        cost=cloud.cost,
        draft_verdict=None if cloud.verdict is None else dataclasses.asdict(cloud.verdict),
        notes=list(cloud.notes),
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
