"""The one routing decision: answer locally, escalate, or answer locally flagged degraded.

Every caller that decides asks :func:`route`: the edge request pipeline (before the local
model runs, after the pre-route's guess, after the answer's confidence or an early abort),
the specialist classifier, and through both the daemon. It is pure: everything it knows
comes in its arguments, so the whole decision matrix is tested in microseconds
(tests/test_route.py) and every path gives the same answer for the same situation.

What it weighs, in this order:

1. ``mode``: ``local`` never escalates, ``cloud`` always wants the broker;
2. the policy's gate (``gate``) when it is a spent budget: a choice to stay local;
3. the link to the broker (:class:`LinkState`): none configured, unusable, circuit open,
   half-open (one trial call may go), ready; and the gate that says the telemetry sees the
   broker down (a failure, unless the circuit is half-open and this call may be its trial);
4. the evidence about the local answer: nothing yet, the pre-route's guess
   (:class:`Predicted`), the running confidence at an early abort (:class:`Aborted`), or
   the calibrated confidence of the finished answer (:class:`Judged`), against τ.

**No broker configured** is a device set up to work alone, the same choice as mode
``local``: its answers are ``local``, and when escalation was wanted the reason says so
("…, but no broker is configured"). ``local-degraded`` is kept for a broker that should
have answered and could not (its setup failed, its circuit is open, the telemetry says it
is down, or the call failed): a caller can alert on it without noise from local-only
devices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..decision import Path
from .policy import GATE_BUDGET_SPENT

__all__ = ["Aborted", "Evidence", "Judged", "LinkState", "Predicted", "Route", "route"]

Mode = Literal["auto", "local", "cloud"]
LinkKind = Literal["none", "unusable", "open", "half-open", "ready"]
Action = Literal["predict", "generate", "escalate", "answer"]


@dataclass(frozen=True)
class LinkState:
    """What the link to the broker allows now."""

    kind: LinkKind
    why: str = ""  # for none, unusable and open: why no call can go out

    @property
    def usable(self) -> bool:
        return self.kind in ("half-open", "ready")


@dataclass(frozen=True)
class Predicted:
    """The pre-route's guess at the local answer's confidence, before any generation."""

    confidence: float
    description: str  # Prediction.describe(): what the guess was made from
    skip_margin: float  # skip the local model when confidence < τ - skip_margin
    enabled: bool = True  # pre-route may skip the local model


@dataclass(frozen=True)
class Aborted:
    """The local generation was stopped early: its running confidence fell below ``limit``."""

    at_token: int
    running: float
    limit: float


@dataclass(frozen=True)
class Judged:
    """The confidence of a finished local answer (``label`` names it in reasons: a
    specialist's is its ``probability``)."""

    value: float
    label: str = "confidence"


Evidence = Predicted | Aborted | Judged | None


@dataclass(frozen=True)
class Route:
    """What to do next, and why.

    ``action``: ``predict`` (ask the pre-route, then route again), ``generate`` (run the
    local model, then route again with its confidence), ``escalate`` (ask the broker;
    ``path`` is the path if it answers), ``answer`` (the local answer is final, on
    ``path``). For ``generate``: ``abort`` whether early abort may stop it, ``probes``
    whether its confidence can still change the route (probes are worth running),
    ``live`` whether its text is final and may stream as it comes. ``gate`` is why
    escalation is impossible, when it is.
    """

    action: Action
    reason: str
    path: Path | None = None
    gate: str | None = None
    abort: bool = False
    probes: bool = True
    live: bool = False

    def escalated(self, outcome: str) -> Route:
        """The broker answered: ``outcome`` says who (``escalated to MODEL``)."""
        return replace(self, action="answer", reason=f"{self.reason}: {outcome}")

    def failed(self, note: str) -> Route:
        """The broker gave no usable answer: the local answer, degraded, says why."""
        return replace(
            self, action="answer", path="local-degraded", reason=f"{self.reason}; {note}"
        )


def route(
    evidence: Evidence,
    *,
    tau: float,
    mode: Mode,
    link: LinkState,
    gate: str | None,
    hold: str | None = None,
) -> Route:
    """The next step for a request in ``mode`` held to ``tau``, given what is known.
    ``hold`` says why this request must stay on the device (a privacy setting), if it must."""
    blocked = (hold, False) if hold is not None else _blocked(mode, link, gate)
    if isinstance(evidence, Judged | Aborted):
        return _judged(evidence, tau, mode, blocked)
    if blocked is not None:
        why, failing = blocked
        # The local answer is final whatever its confidence; only local vs local-degraded
        # still depends on it, and only when the broker is failing in mode auto.
        probes = mode == "auto" and failing
        return Route("generate", why, gate=why, probes=probes, live=True)
    if mode == "cloud":
        return Route("escalate", "mode cloud always escalates", path="cloud")
    if evidence is None:
        return Route("predict", "pre-route first")
    limit = tau - evidence.skip_margin
    if evidence.enabled and evidence.confidence < limit:
        why = f"pre-route {evidence.description} < τ {tau:.2f} - {evidence.skip_margin:.2f}"
        return Route("escalate", why, path="skipped-local")
    return Route("generate", "the local model answers first", abort=True)


def _blocked(mode: Mode, link: LinkState, gate: str | None) -> tuple[str, bool] | None:
    """(why escalation is impossible, whether that is a failure), or None."""
    if mode == "local":
        return "mode local never escalates", False
    if gate == GATE_BUDGET_SPENT:  # a choice: no broker failure matters then
        return gate, False
    if link.kind in ("none", "unusable"):
        return link.why, link.kind == "unusable"
    if link.kind == "open":
        return link.why, True
    # A half-open circuit wants one real call to find out: this request may be it.
    if gate is not None and link.kind != "half-open":
        return gate, True
    return None


def _judged(
    evidence: Judged | Aborted, tau: float, mode: Mode, blocked: tuple[str, bool] | None
) -> Route:
    gate = None if blocked is None else blocked[0]
    if isinstance(evidence, Aborted) and blocked is None:
        why = (
            f"early abort at token {evidence.at_token}: running confidence "
            f"{evidence.running:.2f} < {evidence.limit:.2f}"
        )
        return Route("escalate", why, path="cloud")
    value, label = (
        (evidence.running, "running confidence")
        if isinstance(evidence, Aborted)
        else (evidence.value, evidence.label)
    )
    if mode != "cloud" and value >= tau:
        why = (
            "mode local never escalates"
            if mode == "local"
            else f"{label} {value:.2f} ≥ τ {tau:.2f}"
        )
        return Route("answer", why, path="local", gate=gate)
    wanted = (
        "mode cloud always escalates" if mode == "cloud" else f"{label} {value:.2f} < τ {tau:.2f}"
    )
    if blocked is not None:
        why, failing = blocked
        path: Path = "local-degraded" if failing else "local"
        return Route("answer", f"{wanted}, but {why}", path=path, gate=gate)
    return Route("escalate", wanted, path="cloud")
