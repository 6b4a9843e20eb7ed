"""The threshold policy: telemetry snapshot → τ, its terms, gates, smoothing and clamping."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.routing.policy import (
    Threshold,
    ThresholdFilter,
    ThresholdPolicy,
    ThresholdTerm,
    gate,
    raw_threshold,
)
from edge_agent.settings import EdgeSettings, PolicySettings, load_edge_settings
from edge_agent.telemetry.snapshot import Telemetry
from ridgeline_core.errors import ConfigError

DEFAULTS = PolicySettings()
NEUTRAL_TAU = DEFAULTS.q_cloud - (DEFAULTS.cost_cloud - DEFAULTS.cost_local) / DEFAULTS.value


def raw(**fields: Any) -> float:
    tau, _ = raw_threshold(Telemetry(**fields), DEFAULTS)
    return tau


def terms(**fields: Any) -> dict[str, ThresholdTerm]:
    _, found = raw_threshold(Telemetry(**fields), DEFAULTS)
    return {term.name: term for term in found}


# -- the formula and its terms ---------------------------------------------------------


def test_neutral_telemetry_gives_the_base_threshold() -> None:
    tau, found = raw_threshold(Telemetry(), DEFAULTS)
    assert tau == pytest.approx(NEUTRAL_TAU)
    assert tau == pytest.approx(0.55)
    assert found == []


def test_base_threshold_follows_the_settings() -> None:
    settings = PolicySettings(q_cloud=0.8, cost_local=0.1, cost_cloud=0.5, value=2.0)
    tau, _ = raw_threshold(Telemetry(), settings)
    assert tau == pytest.approx(0.8 - (0.5 - 0.1) / 2.0)


@pytest.mark.parametrize(
    "fields",
    [
        {"battery_percent": 10.0},  # plug state unknown
        {"power_plugged": False},  # no battery reading
        {"power_w": 15.0, "local_ttft_s": 3.0},  # readings the policy does not use
        {"broker_available": True},
    ],
)
def test_missing_or_unused_fields_add_nothing(fields: dict[str, float | bool]) -> None:
    assert raw(**fields) == pytest.approx(NEUTRAL_TAU)
    assert terms(**fields) == {}


def test_low_battery_unplugged_raises_tau() -> None:
    term = terms(battery_percent=10.0, power_plugged=False)["battery"]
    assert term.side == "local"
    # (50 - 10) / 50 of w_battery = 0.8 * 0.4
    assert term.cost == pytest.approx(0.32)
    assert term.delta == pytest.approx(0.32)
    assert "10%" in term.why
    assert raw(battery_percent=10.0, power_plugged=False) == pytest.approx(NEUTRAL_TAU + 0.32)


def test_battery_above_the_low_mark_or_plugged_adds_nothing() -> None:
    assert terms(battery_percent=80.0, power_plugged=False) == {}
    assert raw(battery_percent=80.0, power_plugged=False) == pytest.approx(NEUTRAL_TAU)
    assert terms(battery_percent=10.0, power_plugged=True) == {}
    assert raw(battery_percent=10.0, power_plugged=True) == pytest.approx(NEUTRAL_TAU)
    assert raw(battery_percent=10.0, power_plugged=False) > raw(
        battery_percent=80.0, power_plugged=False
    )


def test_tau_rises_monotonically_as_the_battery_drains() -> None:
    levels = range(80, 9, -1)
    taus = [raw(battery_percent=float(level), power_plugged=False) for level in levels]
    assert all(later >= earlier for earlier, later in itertools.pairwise(taus))
    below_low = [
        tau for level, tau in zip(levels, taus, strict=True) if level < DEFAULTS.battery_low_percent
    ]
    assert all(later > earlier for earlier, later in itertools.pairwise(below_low))
    assert taus[0] == pytest.approx(NEUTRAL_TAU)
    assert taus[-1] == pytest.approx(NEUTRAL_TAU + 0.32)


def test_slow_broker_round_trip_lowers_tau() -> None:
    term = terms(broker_rtt_s=2.0)["rtt"]
    assert term.side == "cloud"
    assert term.cost == pytest.approx(0.2 * (2.0 - 0.1))
    assert term.delta == pytest.approx(-0.38)
    assert "2000 ms" in term.why
    assert raw(broker_rtt_s=2.0) == pytest.approx(NEUTRAL_TAU - 0.38)
    # a round trip within rtt_free_s costs nothing
    assert terms(broker_rtt_s=0.05) == {}


def test_half_spent_budget_lowers_tau() -> None:
    term = terms(budget_left=0.5)["budget"]
    assert term.side == "cloud"
    assert term.delta == pytest.approx(-0.1)
    assert raw(budget_left=0.5) == pytest.approx(NEUTRAL_TAU - 0.1)
    assert terms(budget_left=1.0) == {}


@pytest.mark.parametrize(
    ("fields", "name", "delta"),
    [
        ({"throttled": True}, "throttled", 0.2),
        ({"temperature_c": 80.0}, "heat", 0.15 * 0.5),
        ({"temperature_c": 95.0}, "heat", 0.15),
        ({"cpu_load": 0.85}, "cpu", 0.15 * 0.5),
        ({"cpu_load": 1.0}, "cpu", 0.15),
        ({"local_tokens_per_s": 2.5}, "slow", 0.15 * 0.5),
    ],
)
def test_local_strain_raises_tau(fields: dict[str, float | bool], name: str, delta: float) -> None:
    found = terms(**fields)
    assert set(found) == {name}
    assert found[name].side == "local"
    assert found[name].delta == pytest.approx(delta)
    assert raw(**fields) == pytest.approx(NEUTRAL_TAU + delta)


@pytest.mark.parametrize(
    "fields",
    [
        {"throttled": False},
        {"temperature_c": 60.0},
        {"cpu_load": 0.5},
        {"local_tokens_per_s": 20.0},
    ],
)
def test_readings_below_their_thresholds_add_nothing(fields: dict[str, float | bool]) -> None:
    assert terms(**fields) == {}


def test_terms_add_up() -> None:
    tau = raw(battery_percent=10.0, power_plugged=False, throttled=True, broker_rtt_s=2.0)
    assert tau == pytest.approx(NEUTRAL_TAU + 0.32 + 0.2 - 0.38)


# -- clamping and gates ----------------------------------------------------------------


def test_policy_clamps_to_tau_max() -> None:
    strained = Telemetry(
        battery_percent=0.0,
        power_plugged=False,
        throttled=True,
        temperature_c=95.0,
        cpu_load=1.0,
        local_tokens_per_s=0.0,
    )
    threshold = ThresholdPolicy(DEFAULTS).evaluate(strained)
    assert threshold.raw == pytest.approx(NEUTRAL_TAU + 0.4 + 0.2 + 0.15 * 3)
    assert threshold.value == DEFAULTS.tau_max


def test_policy_clamps_to_tau_min() -> None:
    threshold = ThresholdPolicy(DEFAULTS).evaluate(Telemetry(broker_rtt_s=10.0))
    assert threshold.raw < 0
    assert threshold.value == DEFAULTS.tau_min


def test_policy_clamps_to_custom_bounds() -> None:
    settings = PolicySettings(tau_min=0.6, tau_max=0.7)
    assert ThresholdPolicy(settings).evaluate(Telemetry()).value == 0.6
    assert ThresholdPolicy(settings).evaluate(Telemetry(throttled=True)).value == 0.7


def test_gate_broker_unavailable() -> None:
    assert gate(Telemetry(broker_available=False)) == "the broker is unavailable"
    threshold = ThresholdPolicy(DEFAULTS).evaluate(Telemetry(broker_available=False))
    assert threshold.gate == "the broker is unavailable"


def test_gate_budget_spent() -> None:
    assert gate(Telemetry(budget_left=0.0)) == "the escalation budget is spent"


@pytest.mark.parametrize(
    "snapshot",
    [
        Telemetry(),
        Telemetry(broker_available=True, budget_left=0.01),
        Telemetry(battery_percent=1.0, power_plugged=False, throttled=True),
    ],
)
def test_no_gate_otherwise(snapshot: Telemetry) -> None:
    assert gate(snapshot) is None
    assert ThresholdPolicy(DEFAULTS).evaluate(snapshot).gate is None


# -- smoothing -------------------------------------------------------------------------


def decision_switches(taus: list[float], confidence: float) -> int:
    """How often 'answer locally' (confidence ≥ τ) flips along a series of τ."""
    local = [confidence >= tau for tau in taus]
    return sum(1 for before, after in itertools.pairwise(local) if before != after)


def changes(values: list[float]) -> int:
    return sum(1 for before, after in itertools.pairwise(values) if before != after)


def test_filter_first_update_publishes_the_reading() -> None:
    assert ThresholdFilter(alpha=0.3, hysteresis=0.03).update(0.42) == 0.42


BOUNDARY = 0.55  # the confidence of every answer, and the centre of the τ jitter


def jittered(seed: int, amplitude: float, n: int = 300) -> list[float]:
    rng = random.Random(seed)
    return [BOUNDARY + rng.uniform(-amplitude, amplitude) for _ in range(n)]


@pytest.mark.parametrize("seed", [20240607, 1, 2, 3])
def test_filter_ignores_jitter_around_a_boundary(seed: int) -> None:
    raws = jittered(seed, amplitude=0.03)  # readings jitter as much as the band
    flt = ThresholdFilter(alpha=0.3, hysteresis=0.03)
    published = [flt.update(tau) for tau in raws]

    assert decision_switches(raws, BOUNDARY) >= 100
    assert decision_switches(published, BOUNDARY) <= 2
    assert all(abs(tau - BOUNDARY) <= 0.03 for tau in published)


@pytest.mark.parametrize("seed", [20240607, 1, 2, 3])
def test_filter_damps_jitter_wider_than_the_band(seed: int) -> None:
    # ±0.05 is wider than the band: the smoothed τ now and then strays past it, and the
    # published τ follows at the band's distance, so it rarely crosses the boundary.
    raws = jittered(seed, amplitude=0.05)
    flt = ThresholdFilter(alpha=0.3, hysteresis=0.03)
    published = [flt.update(tau) for tau in raws]

    raw_switches = decision_switches(raws, BOUNDARY)
    assert raw_switches >= 100
    assert decision_switches(published, BOUNDARY) <= 4


def test_filter_follows_a_real_step_within_bounded_updates() -> None:
    flt = ThresholdFilter(alpha=0.3, hysteresis=0.03)
    for _ in range(20):
        flt.update(0.55)
    published = [flt.update(0.85) for _ in range(30)]
    assert published[0] > 0.6  # the first step alone moves past the band
    assert all(later >= earlier for earlier, later in itertools.pairwise(published))
    assert published[7] >= 0.8
    settled = next(i for i, tau in enumerate(published) if tau >= 0.85 - 1.5 * flt.hysteresis)
    assert settled < 12
    assert max(published) <= 0.85


def test_filter_reset_forgets_history() -> None:
    flt = ThresholdFilter(alpha=0.3, hysteresis=0.03)
    flt.update(0.2)
    flt.reset()
    assert flt.update(0.9) == 0.9


def test_policy_evaluates_each_snapshot_once() -> None:
    policy = ThresholdPolicy(DEFAULTS)
    assert policy.evaluate(Telemetry()).value == pytest.approx(0.55)

    throttled = Telemetry(throttled=True)
    first = policy.evaluate(throttled)
    assert policy.evaluate(throttled) is first
    assert policy.evaluate(throttled) is first
    assert first.raw == pytest.approx(0.75)
    assert first.value == pytest.approx(0.55 + 0.3 * 0.2 - 0.03)  # one EWMA step, less the band

    # an equal but new snapshot is a new reading: the filter advances
    second = policy.evaluate(Telemetry(throttled=True))
    assert second is not first
    assert second.value > first.value


# -- explanations ----------------------------------------------------------------------


def test_reason_of_neutral_telemetry() -> None:
    assert ThresholdPolicy(DEFAULTS).evaluate(Telemetry()).reason() == "neutral telemetry"


def test_reason_names_the_biggest_terms() -> None:
    snapshot = Telemetry(
        battery_percent=10.0, power_plugged=False, throttled=True, broker_rtt_s=0.6
    )
    threshold = ThresholdPolicy(DEFAULTS).evaluate(snapshot)
    assert {term.name for term in threshold.terms} == {"battery", "throttled", "rtt"}
    reason = threshold.reason()
    assert reason == "battery 10% unplugged (+0.32); the board is throttling (+0.20)"
    assert "RTT" not in reason


def test_reason_ranks_by_size_not_sign() -> None:
    threshold = Threshold(
        value=0.5,
        raw=0.5,
        terms=(
            ThresholdTerm("heat", "local", 0.05, 0.05, "hot"),
            ThresholdTerm("rtt", "cloud", 0.3, -0.3, "far"),
        ),
        gate=None,
    )
    assert threshold.reason() == "far (-0.30); hot (+0.05)"


# -- settings validation ---------------------------------------------------------------


def test_tau_min_above_tau_max_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"tau_min 0.8 is above tau_max 0.2"):
        PolicySettings(tau_min=0.8, tau_max=0.2)
    with pytest.raises(ValidationError, match="tau_min"):
        EdgeSettings.model_validate({"policy": {"tau_min": 0.8, "tau_max": 0.2}})
    with pytest.raises(ConfigError, match=r"policy: .*tau_min 0.9 is above tau_max 0.5"):
        load_edge_settings(
            config_file=None,
            env={"RIDGELINE_EDGE_POLICY__TAU_MIN": "0.9", "RIDGELINE_EDGE_POLICY__TAU_MAX": "0.5"},
        )


def test_critical_not_above_hot_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"critical_c 80.0 must be above hot_c 80.0"):
        PolicySettings(hot_c=80.0, critical_c=80.0)
    with pytest.raises(ValidationError, match="critical_c"):
        EdgeSettings.model_validate({"policy": {"hot_c": 90.0, "critical_c": 60.0}})


def test_out_of_range_weight_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        PolicySettings(value=0.0)
    with pytest.raises(ValidationError):
        PolicySettings(tau_max=1.5)
