"""One escalation's attempts: retry only where it is safe, within the deadline.

A call is retried only when it failed before the broker sent anything (the connection was
refused, the broker was overloaded and named a retry delay that fits the deadline): once
text has streamed, a retry could duplicate work and answer twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

from ridgeline_core import errors
from ridgeline_core.cancel import CancelToken
from ridgeline_core.client import BrokerClient

from ..settings import EscalationSettings
from .answers import CloudAnswer, EscalationFailed, is_outage
from .attempt import AttemptFailed, EscalationRequest, Received, attempt

__all__ = ["RetryingCall"]


class RetryingCall:
    """Attempts of one escalation until an answer, a failure to report, or the deadline."""

    def __init__(
        self,
        client: BrokerClient,
        settings: EscalationSettings,
        request: EscalationRequest,
        cancel: CancelToken | None,
        *,
        on_success: Callable[[float | None], None],
        on_failure: Callable[[errors.RidgelineError, bool], None],
    ) -> None:
        self.client, self.settings, self.request, self.cancel = client, settings, request, cancel
        self._on_success = on_success  # the link's round trip, when measured
        self._on_failure = on_failure  # the last error, and whether it says the broker is down

    def run(self, deadline_s: float) -> Generator[str, None, CloudAnswer]:
        """Yield the broker's text; return its answer or raise :class:`EscalationFailed`."""
        started = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            remaining = deadline_s - (time.perf_counter() - started)
            try:
                received = yield from attempt(
                    self.client, self.request, remaining, self.settings.connect_timeout_s,
                    self.cancel,
                )  # fmt: skip
                return self._answered(received, started, attempts)
            except AttemptFailed as failure:
                remaining = deadline_s - (time.perf_counter() - started)
                self._wait_or_give_up(failure, attempts, remaining, deadline_s)

    def _wait_or_give_up(
        self, failure: AttemptFailed, attempts: int, remaining_s: float, deadline_s: float
    ) -> None:
        exc = failure.error
        delay = retry_delay(self.settings, exc, failure.started, attempts, remaining_s)
        if delay is None:
            outage = is_outage(exc)
            callers = outage and callers_deadline(self.settings, failure, deadline_s)
            outage = outage and not callers
            self._on_failure(exc, outage)
            reason = f"{type(exc).__name__}: {exc}"
            if callers:
                reason = f"the request's deadline_s {deadline_s:g} s ran out ({reason})"
            raise EscalationFailed(
                reason, started=failure.started, attempts=attempts, outage=outage, error=exc
            ) from exc
        if self.cancel is None:
            time.sleep(delay)
        elif self.cancel.wait(delay):
            self.cancel.check()

    def _answered(self, received: Received, started: float, attempts: int) -> CloudAnswer:
        answer = cloud_answer(received, started, attempts)
        self._on_success(answer.rtt_s)
        return answer


def cloud_answer(received: Received, started: float, attempts: int) -> CloudAnswer:
    """The answer a finished attempt received (``started``: when the call began)."""
    result = received.result
    assert result is not None
    first_text = received.first_text
    return CloudAnswer(
        text="".join(received.parts),
        model=result.answer_model,
        models_used=result.models_used,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        rtt_s=received.rtt_s(),
        time_to_first_text_s=None if first_text is None else first_text - started,
        total_s=time.perf_counter() - started,
        attempts=attempts,
        strategy=result.strategy,
        strategy_name=result.strategy_name,
        members=result.members,
        cost=result.cost,
        verdict=result.draft_verdict,
        notes=result.notes,
    )


def callers_deadline(
    settings: EscalationSettings, failure: AttemptFailed, deadline_s: float
) -> bool:
    """Did ``failure`` come from the caller's own deadline rather than the broker? Time
    ran out, and the caller had given less than the configured ``deadline_s``: a broker
    that answers within the configured time is not down because a request wanted it
    sooner. A broker slower than the configured deadline is an outage, whoever waited."""
    return failure.timed_out and deadline_s < settings.deadline_s


def retry_delay(
    settings: EscalationSettings,
    exc: errors.RidgelineError,
    streamed: bool,
    attempts: int,
    remaining_s: float,
) -> float | None:
    """How long to wait before trying again; None: do not (text already streamed, retries
    used up, an error a retry cannot fix, or no time left)."""
    if streamed or attempts > settings.retries:
        return None
    if isinstance(exc, errors.OverloadedError):
        delay = exc.retry_after_s
    elif isinstance(exc, errors.UnavailableError) and exc.status == "UNAVAILABLE":
        delay = 0.1 * attempts  # refused or reset before any byte: the broker may be back
    else:
        return None
    if delay >= remaining_s - settings.connect_timeout_s:
        return None  # no time left for another try
    return delay
