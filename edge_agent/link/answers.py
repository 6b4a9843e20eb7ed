"""What an escalation ends with: the broker's answer, or why there is none."""

from __future__ import annotations

from dataclasses import dataclass

from ridgeline_core import errors
from ridgeline_core.wire import LocalDraft

__all__ = ["CloudAnswer", "Draft", "EscalationFailed", "is_outage"]

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


def is_outage(exc: errors.RidgelineError) -> bool:
    return isinstance(exc, _OUTAGES) or (exc.status in _OUTAGE_STATUSES)
