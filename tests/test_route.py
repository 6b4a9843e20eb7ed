"""The one routing decision, as a pure function: every combination of mode, link, gate and
evidence, in microseconds."""

from __future__ import annotations

import itertools

import pytest

from edge_agent.routing.policy import GATE_BROKER_DOWN, GATE_BUDGET_SPENT
from edge_agent.routing.route import Aborted, Judged, LinkState, Predicted, route

READY = LinkState("ready")
HALF_OPEN = LinkState("half-open")
NONE = LinkState("none", "no broker is configured (broker.address)")
UNUSABLE = LinkState("unusable", "broker unusable: TLS file /x: No such file")
OPEN = LinkState("open", "broker circuit open after UnavailableError: refused")
LINKS = [READY, HALF_OPEN, NONE, UNUSABLE, OPEN]
GATES = [None, GATE_BUDGET_SPENT, GATE_BROKER_DOWN]
MODES = ["auto", "local", "cloud"]


def test_a_confident_answer_stays_local() -> None:
    decided = route(Judged(0.8), tau=0.5, mode="auto", link=READY, gate=None)
    assert (decided.action, decided.path) == ("answer", "local")
    assert decided.reason == "confidence 0.80 ≥ τ 0.50"


def test_an_unsure_answer_escalates() -> None:
    decided = route(Judged(0.3), tau=0.5, mode="auto", link=READY, gate=None)
    assert (decided.action, decided.path, decided.reason) == (
        "escalate",
        "cloud",
        "confidence 0.30 < τ 0.50",
    )
    assert decided.escalated("escalated to big").reason == (
        "confidence 0.30 < τ 0.50: escalated to big"
    )
    failed = decided.failed("escalation failed (refused)")
    assert (failed.action, failed.path) == ("answer", "local-degraded")
    assert failed.reason == "confidence 0.30 < τ 0.50; escalation failed (refused)"


def test_before_the_local_model_runs() -> None:
    first = route(None, tau=0.5, mode="auto", link=READY, gate=None)
    assert first.action == "predict"
    hopeless = Predicted(0.2, "predicted 0.20 (arithmetic, 20 chars)", 0.2)
    skipped = route(hopeless, tau=0.55, mode="auto", link=READY, gate=None)
    assert (skipped.action, skipped.path) == ("escalate", "skipped-local")
    assert skipped.reason == "pre-route predicted 0.20 (arithmetic, 20 chars) < τ 0.55 - 0.20"
    off = Predicted(0.2, "predicted 0.20", 0.2, enabled=False)
    assert route(off, tau=0.55, mode="auto", link=READY, gate=None).action == "generate"
    plain = route(Predicted(0.7, "p", 0.2), tau=0.55, mode="auto", link=READY, gate=None)
    assert (plain.action, plain.abort, plain.live, plain.probes) == ("generate", True, False, True)
    cloud = route(None, tau=0.5, mode="cloud", link=READY, gate=None)
    assert (cloud.action, cloud.path, cloud.reason) == (
        "escalate",
        "cloud",
        "mode cloud always escalates",
    )


def test_an_early_abort_escalates() -> None:
    decided = route(Aborted(8, 0.12, 0.3), tau=0.5, mode="auto", link=READY, gate=None)
    assert (decided.action, decided.path) == ("escalate", "cloud")
    assert decided.reason == "early abort at token 8: running confidence 0.12 < 0.30"


def test_no_broker_configured_is_local_like_mode_local() -> None:
    # The one answer for "no broker configured": local, never local-degraded.
    for mode in ("auto", "cloud"):
        decided = route(Judged(0.2), tau=0.5, mode=mode, link=NONE, gate=None)
        assert (decided.action, decided.path) == ("answer", "local")
        assert decided.reason.endswith("but no broker is configured (broker.address)")
        assert decided.gate == NONE.why
    before = route(None, tau=0.5, mode="auto", link=NONE, gate=None)
    assert (before.action, before.live, before.abort, before.probes) == (
        "generate",
        True,
        False,
        False,  # the route no longer depends on the confidence: skip the probes
    )


def test_a_broken_broker_is_degraded() -> None:
    for link in (UNUSABLE, OPEN):
        decided = route(Judged(0.2), tau=0.5, mode="auto", link=link, gate=None)
        assert (decided.action, decided.path) == ("answer", "local-degraded")
        assert decided.reason == f"confidence 0.20 < τ 0.50, but {link.why}"
        before = route(None, tau=0.5, mode="auto", link=link, gate=None)
        assert before.probes  # local vs local-degraded depends on the confidence
    down = route(Judged(0.2), tau=0.5, mode="auto", link=READY, gate=GATE_BROKER_DOWN)
    assert (down.path, down.reason) == (
        "local-degraded",
        f"confidence 0.20 < τ 0.50, but {GATE_BROKER_DOWN}",
    )


def test_a_spent_budget_keeps_the_answer_local_by_choice() -> None:
    for link in (READY, OPEN, HALF_OPEN):
        decided = route(Judged(0.2), tau=0.5, mode="auto", link=link, gate=GATE_BUDGET_SPENT)
        assert (decided.action, decided.path) == ("answer", "local")
        assert decided.reason == f"confidence 0.20 < τ 0.50, but {GATE_BUDGET_SPENT}"


def test_a_half_open_circuit_lets_the_trial_through_despite_the_down_gate() -> None:
    decided = route(Judged(0.2), tau=0.5, mode="auto", link=HALF_OPEN, gate=GATE_BROKER_DOWN)
    assert decided.action == "escalate"


def test_mode_local_never_escalates() -> None:
    sure = route(Judged(0.9), tau=0.5, mode="local", link=READY, gate=None)
    assert (sure.path, sure.reason) == ("local", "mode local never escalates")
    unsure = route(Judged(0.1), tau=0.5, mode="local", link=READY, gate=None)
    assert (unsure.path, unsure.reason) == (
        "local",
        "confidence 0.10 < τ 0.50, but mode local never escalates",
    )


def test_a_specialist_probability_is_named_in_the_reason() -> None:
    decided = route(Judged(0.9, "probability"), tau=0.5, mode="auto", link=NONE, gate=None)
    assert decided.reason == "probability 0.90 ≥ τ 0.50"


@pytest.mark.parametrize(("mode", "link", "gate"), list(itertools.product(MODES, LINKS, GATES)))
def test_every_situation_has_one_consistent_answer(
    mode: str, link: LinkState, gate: str | None
) -> None:
    """Whatever the confidence: a route is always given, escalation only over a usable link
    and never in mode local, local-degraded only when a broker should have answered."""
    for value in (0.0, 0.49, 0.5, 1.0):
        decided = route(Judged(value), tau=0.5, mode=mode, link=link, gate=gate)  # type: ignore[arg-type]
        assert decided.action in ("answer", "escalate")
        assert decided.reason
        if decided.action == "escalate":
            assert mode != "local" and link.usable and gate != GATE_BUDGET_SPENT
        if decided.path == "local-degraded":
            assert mode != "local" and gate != GATE_BUDGET_SPENT
            assert link.kind in ("unusable", "open") or gate == GATE_BROKER_DOWN
        if mode == "cloud" and link.usable and gate is None:
            assert decided.action == "escalate"
        if mode == "auto" and value >= 0.5:
            assert (decided.action, decided.path) == ("answer", "local")
