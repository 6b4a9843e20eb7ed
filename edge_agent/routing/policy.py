"""The threshold policy: telemetry snapshot → τ, the confidence a local answer needs.

From ARCHITECTURE.md: escalate when the expected quality gain is worth more than the extra
cost, ``V·(q_cloud - p_local) > C_cloud - C_local``, so

    τ = q_cloud - (C_cloud - C_local) / V

Each telemetry reading adds a *term* to C_local (low battery on battery power, heat,
throttling, a busy CPU, slow local decoding: escalate more) or to C_cloud (broker round
trip, a shrinking budget: stay local). Noisy readings are smoothed: τ from them goes through
an EWMA and moves only by more than a hysteresis band, then is clamped to
``[tau_min, tau_max]``. States that are facts rather than readings (broker down, budget
spent) are not smoothed; they are *gates* that forbid escalation outright.

Everything here is pure and cheap (a decision reads it on every request): no I/O, no locks.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from ..settings import PolicySettings
from ..telemetry.snapshot import Telemetry

__all__ = [
    "GATE_BROKER_DOWN",
    "GATE_BUDGET_SPENT",
    "Threshold",
    "ThresholdFilter",
    "ThresholdPolicy",
    "ThresholdTerm",
    "raw_threshold",
]


@dataclass(frozen=True)
class ThresholdTerm:
    """One reading's part in τ: ``cost`` added to C_local or C_cloud, ``delta`` its effect
    on τ (positive: escalate more)."""

    name: str
    side: str  # "local" or "cloud"
    cost: float
    delta: float
    why: str


@dataclass(frozen=True)
class Threshold:
    value: float  # the τ decisions use (smoothed, clamped)
    raw: float  # τ from this snapshot alone, before smoothing and clamping
    terms: tuple[ThresholdTerm, ...]  # only readings that moved τ
    gate: str | None  # why escalation is forbidden right now, or None

    def reason(self) -> str:
        """The largest terms in words, for a decision record."""
        if not self.terms:
            return "neutral telemetry"
        top = sorted(self.terms, key=lambda term: abs(term.delta), reverse=True)[:2]
        return "; ".join(f"{term.why} ({term.delta:+.2f})" for term in top)


def _clamp01(x: float) -> float:
    return 0.0 if x < 0.0 else 1.0 if x > 1.0 else x


def _terms(t: Telemetry, w: PolicySettings) -> list[ThresholdTerm]:
    """Cost terms of the readings that are present; a missing reading adds nothing."""
    terms: list[ThresholdTerm] = []

    def add(name: str, side: str, cost: float, why: str) -> None:
        if cost > 0.0:
            sign = 1.0 if side == "local" else -1.0
            terms.append(ThresholdTerm(name, side, cost, sign * cost / w.value, why))

    if t.power_plugged is False and t.battery_percent is not None:
        low = _clamp01((w.battery_low_percent - t.battery_percent) / w.battery_low_percent)
        add("battery", "local", w.w_battery * low, f"battery {t.battery_percent:.0f}% unplugged")
    if t.throttled:
        add("throttled", "local", w.w_throttled, "the board is throttling")
    if t.temperature_c is not None:
        heat = _clamp01((t.temperature_c - w.hot_c) / (w.critical_c - w.hot_c))
        add("heat", "local", w.w_heat * heat, f"{t.temperature_c:.0f} °C")
    if t.cpu_load is not None:
        busy = _clamp01((t.cpu_load - w.cpu_busy_above) / (1.0 - w.cpu_busy_above))
        add("cpu", "local", w.w_cpu * busy, f"CPU {t.cpu_load:.0%} busy")
    if t.local_tokens_per_s is not None:
        slow = _clamp01(1.0 - t.local_tokens_per_s / w.slow_tokens_per_s)
        add("slow", "local", w.w_slow * slow, f"local {t.local_tokens_per_s:.1f} tok/s")
    if t.broker_rtt_s is not None:
        rtt = max(0.0, t.broker_rtt_s - w.rtt_free_s)
        add("rtt", "cloud", w.w_rtt * rtt, f"broker RTT {t.broker_rtt_s * 1000:.0f} ms")
    if t.budget_left is not None:
        spent = _clamp01(1.0 - t.budget_left)
        add("budget", "cloud", w.w_budget * spent, f"budget {t.budget_left:.0%} left")
    return terms


def raw_threshold(t: Telemetry, w: PolicySettings) -> tuple[float, list[ThresholdTerm]]:
    """τ from one snapshot, unsmoothed and unclamped, with the terms that set it."""
    terms = _terms(t, w)
    c_local = w.cost_local + sum(term.cost for term in terms if term.side == "local")
    c_cloud = w.cost_cloud + sum(term.cost for term in terms if term.side == "cloud")
    return w.q_cloud - (c_cloud - c_local) / w.value, terms


GATE_BROKER_DOWN = "the broker is unavailable"
GATE_BUDGET_SPENT = "the escalation budget is spent"


def gate(t: Telemetry) -> str | None:
    if t.broker_available is False:
        return GATE_BROKER_DOWN
    if t.budget_left is not None and t.budget_left <= 0.0:
        return GATE_BUDGET_SPENT
    return None


class ThresholdFilter:
    """EWMA, then play (backlash): the published τ stays put while the smoothed τ is within
    ``hysteresis`` of it, and otherwise follows it at that distance. Readings jittering
    around a boundary leave τ (and so the decisions) still; a real change moves τ to within
    ``hysteresis`` of the new level."""

    def __init__(self, alpha: float, hysteresis: float) -> None:
        self.alpha = alpha
        self.hysteresis = hysteresis
        self._smoothed: float | None = None
        self._published: float | None = None

    def update(self, raw: float) -> float:
        if self._smoothed is None or self._published is None:
            self._smoothed = self._published = raw
            return raw
        self._smoothed += self.alpha * (raw - self._smoothed)
        if self._smoothed > self._published + self.hysteresis:
            self._published = self._smoothed - self.hysteresis
        elif self._smoothed < self._published - self.hysteresis:
            self._published = self._smoothed + self.hysteresis
        return self._published

    def reset(self) -> None:
        self._smoothed = self._published = None


class ThresholdPolicy:
    """τ for the current snapshot. The filter advances once per distinct snapshot, so
    however many requests (threads) read the same snapshot, they see the same τ; the
    agent's background sampler also evaluates each new sample, so τ follows the device
    while no request comes."""

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self._filter = ThresholdFilter(settings.ewma_alpha, settings.hysteresis)
        self._last: tuple[Telemetry, Threshold] | None = None
        self._lock = threading.Lock()

    def evaluate(self, snapshot: Telemetry) -> Threshold:
        last = self._last
        if last is not None and last[0] is snapshot:  # the common case: no lock
            return last[1]
        with self._lock:
            last = self._last
            if last is not None and last[0] is snapshot:
                return last[1]
            return self._advance(snapshot)

    def _advance(self, snapshot: Telemetry) -> Threshold:
        raw, terms = raw_threshold(snapshot, self.settings)
        smoothed = self._filter.update(raw) if math.isfinite(raw) else raw
        value = min(self.settings.tau_max, max(self.settings.tau_min, smoothed))
        threshold = Threshold(value, raw, tuple(terms), gate(snapshot))
        self._last = (snapshot, threshold)
        return threshold
