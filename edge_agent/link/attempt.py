"""One call to the broker: connect within what is left of the deadline, stream the answer,
and note when its first event and first text arrived (the link's round trip is measured
from them). Retrying and the circuit are the Escalator's (:mod:`.escalation`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from ridgeline_core import errors, wire
from ridgeline_core.cancel import CancelToken
from ridgeline_core.client import AnswerStream, BrokerClient
from ridgeline_core.runtime import ChatMessage, SamplingParams

__all__ = ["AttemptFailed", "EscalationRequest", "Received", "attempt"]


@dataclass(frozen=True)
class EscalationRequest:
    """What an escalation asks, and the id every attempt of it carries."""

    messages: list[ChatMessage]
    params: SamplingParams
    draft: wire.LocalDraft | None
    request_id: str
    model: str | None = None  # None: the broker's default
    device_id: str = ""
    strategy: wire.StrategyChoice | None = None  # a configured strategy instead of a model
    max_cost: float | None = None


class AttemptFailed(Exception):
    """One attempt failed; ``started``: text had streamed (a retry could answer twice);
    ``timed_out``: it failed because the time it was given ran out."""

    def __init__(
        self, error: errors.RidgelineError, started: bool, *, timed_out: bool = False
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.started = started
        self.timed_out = timed_out


@dataclass
class Received:
    """What one attempt received, as it arrives."""

    call_started: float
    parts: list[str] = field(default_factory=list)
    first_event: float | None = None
    first_text: float | None = None
    result: wire.BrokerResult | None = None

    @property
    def streamed(self) -> bool:
        return bool(self.parts)

    def note(self, event: wire.BrokerDelta | wire.BrokerResult) -> str | None:
        """Record ``event``; the text to pass on, if any."""
        now = time.perf_counter()
        if self.first_event is None:
            self.first_event = now
        if isinstance(event, wire.BrokerResult):
            self.result = event
            return None
        if not event.text:
            return None
        if self.first_text is None:
            self.first_text = now
        self.parts.append(event.text)
        return event.text

    def rtt_s(self) -> float | None:
        """Link time: the first event at the client minus the broker's own first token."""
        if self.first_event is None or self.result is None:
            return None
        broker_first_s = self.result.time_to_first_token_ms / 1000
        return max(0.0, self.first_event - self.call_started - broker_first_s)


def attempt(
    client: BrokerClient,
    request: EscalationRequest,
    remaining_s: float,
    connect_timeout_s: float,
    cancel: CancelToken | None,
) -> Generator[str, None, Received]:
    """Yield the broker's text; return what was received, or raise :class:`AttemptFailed`
    (RequestCancelledError when ``cancel`` was cancelled). The call is stopped on the broker
    at once when it ends without a result, not at garbage collection."""
    if remaining_s <= 0:
        passed = errors.UnavailableError("the escalation deadline passed")
        raise AttemptFailed(passed, False, timed_out=True)
    ends_at = time.monotonic() + remaining_s
    received = Received(call_started=time.perf_counter())
    stream: AnswerStream | None = None
    forget: Callable[[], None] | None = None
    try:
        stream, received.call_started = _open(
            client, request, remaining_s, connect_timeout_s, cancel
        )
        if cancel is not None:
            forget = cancel.on_cancel(stream.cancel)
        for event in stream:
            text = received.note(event)
            if text:
                yield text
    except errors.RidgelineError as exc:
        if cancel is not None and cancel.cancelled:
            raise errors.RequestCancelledError(cancel.reason) from exc
        timed_out = exc.status == "DEADLINE_EXCEEDED" or time.monotonic() >= ends_at
        raise AttemptFailed(exc, received.streamed, timed_out=timed_out) from exc
    except (ValueError, KeyError) as exc:  # grpc: "Cannot invoke RPC: Channel closed!"
        closed = errors.UnavailableError(f"the broker link is closed ({exc})")
        raise AttemptFailed(closed, received.streamed) from exc
    finally:
        if forget is not None:
            forget()
        if stream is not None and received.result is None:
            stream.cancel()
    if received.result is None:
        ended = errors.UnavailableError("the stream ended without a result")
        raise AttemptFailed(ended, received.streamed)
    return received


def _open(
    client: BrokerClient,
    request: EscalationRequest,
    remaining_s: float,
    connect_timeout_s: float,
    cancel: CancelToken | None,
) -> tuple[AnswerStream, float]:
    """The call, started once the channel is up; and when it started."""
    connect_started = time.perf_counter()
    client.wait_ready(min(connect_timeout_s, remaining_s))
    call_started = time.perf_counter()
    remaining_s -= call_started - connect_started
    if remaining_s <= 0:
        raise errors.UnavailableError("the escalation deadline passed while connecting")
    if cancel is not None:
        cancel.check()
    stream = client.stream(
        request.messages,
        request.params,
        model=request.model,
        device_id=request.device_id,
        draft=request.draft,
        request_id=request.request_id,
        timeout_s=remaining_s,
        strategy=request.strategy,
        max_cost=request.max_cost,
    )
    return stream, call_started
