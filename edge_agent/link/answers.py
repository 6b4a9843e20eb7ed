"""What an escalation ends with: the broker's answer, or why there is none."""

from __future__ import annotations

from dataclasses import dataclass

from ridgeline_core import errors
from ridgeline_core.wire import DraftVerdict, LocalDraft, MemberResult

__all__ = ["BrokerVia", "CloudAnswer", "Draft", "EscalationFailed", "is_outage"]

# Errors that say the broker (or the link to it) is down, not that this request was wrong.
_OUTAGES: tuple[type[errors.RidgelineError], ...] = (errors.UnavailableError,)
_OUTAGE_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN"})


Draft = LocalDraft  # the local answer sent along with an escalation


@dataclass(frozen=True)
class BrokerVia:
    """How the broker should answer one escalation: a strategy configured on it (empty:
    the link's, from ``broker.strategy``) and a cost limit (None: ``broker.max_cost``)."""

    strategy: str = ""
    max_cost: float | None = None


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
    strategy: str = "single"  # how the broker answered: single, route, cascade, ensemble
    strategy_name: str = ""
    members: tuple[MemberResult, ...] = ()
    cost: float = 0.0
    verdict: DraftVerdict | None = None  # the broker's judgement of the draft sent
    notes: tuple[str, ...] = ()


class EscalationFailed(Exception):
    """The broker gave no complete answer; ``started`` says whether text had streamed."""

    def __init__(
        self,
        reason: str,
        *,
        started: bool,
        attempts: int,
        outage: bool,
        error: errors.RidgelineError | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.started = started
        self.attempts = attempts
        self.outage = outage
        self.error = error  # the broker's error, when it answered with one


def is_outage(exc: errors.RidgelineError) -> bool:
    return isinstance(exc, _OUTAGES) or (exc.status in _OUTAGE_STATUSES)
