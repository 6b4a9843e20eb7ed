"""Prometheus metrics of the daemon, in a registry of its own (no global state).

Counters and histograms are updated as answers finish; gauges (τ, telemetry, queue,
loaded models, local speed) are read from the live agent when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ridgeline_core.errors import MissingDependencyError

from ..agent import Answer, EdgeAgent
from .admission import Admission

__all__ = ["TELEMETRY_GAUGES", "DaemonMetrics"]

PATHS = ("local", "cloud", "skipped-local", "local-degraded")


class DaemonMetrics:
    """The daemon's counters and histograms, and the live gauges (:class:`_Live`)."""

    def __init__(self, agent: Callable[[], EdgeAgent], admission: Admission) -> None:
        try:
            import prometheus_client as prom
            from prometheus_client.core import GaugeMetricFamily
        except ImportError:
            raise MissingDependencyError.for_module("prometheus-client", "edge") from None
        self._prom = prom
        self._agent = agent
        self._admission = admission
        self.registry = prom.CollectorRegistry(auto_describe=True)
        self.requests = prom.Counter(
            "ridgeline_edge_requests",
            "Answers by the path that produced them",
            ["path"],
            registry=self.registry,
        )
        for path in PATHS:
            self.requests.labels(path)
        self.errors = prom.Counter(
            "ridgeline_edge_request_errors",
            "Requests that ended in an error, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.seconds = prom.Histogram(
            "ridgeline_edge_request_seconds",
            "Time from admission to answer, by path",
            ["path"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.tokens = prom.Counter(
            "ridgeline_edge_local_tokens",
            "Tokens the local model generated",
            registry=self.registry,
        )
        self.registry.register(_Live(agent, admission, GaugeMetricFamily))

    def record(self, answer: Answer, seconds: float) -> None:
        self.requests.labels(answer.source).inc()
        self.seconds.labels(answer.source).observe(seconds)
        if answer.timings is not None:
            self.tokens.inc(answer.timings.completion_tokens)

    def record_error(self, kind: str) -> None:
        self.errors.labels(kind).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


class _Live:
    """The gauges read from the live agent at each scrape (a custom collector)."""

    def __init__(self, agent: Callable[[], EdgeAgent], admission: Admission, gauge: Any) -> None:
        self._agent, self._admission, self._gauge = agent, admission, gauge

    def collect(self) -> Iterator[Any]:
        gauge = self._gauge
        agent = self._agent()
        admission = self._admission
        yield gauge(
            "ridgeline_edge_threshold", "Current threshold τ", agent.decide_threshold().value
        )
        yield gauge("ridgeline_edge_queue_depth", "Requests waiting for a slot", admission.waiting)
        yield gauge("ridgeline_edge_requests_running", "Requests in a slot", admission.running)
        yield gauge("ridgeline_edge_slots", "Requests answered at once", admission.slots)
        yield gauge("ridgeline_edge_models_loaded", "Models in memory", len(agent.pool.loaded()))
        speed = agent.local_speed.read().get("local_tokens_per_s")
        if speed is not None:
            yield gauge("ridgeline_edge_local_tokens_per_second", "Local decode speed", speed)
        for name, value in agent.sampler.snapshot().values().items():
            known = TELEMETRY_GAUGES.get(name)
            if known is not None and isinstance(value, (bool, int, float)):
                metric, help_text, scale = known
                yield gauge(metric, help_text, float(value) * scale)


# Each telemetry reading that sets τ as a gauge of its own, in Prometheus' base units (one
# gauge of every reading mixed percent, ratios, °C, watts, seconds and yes/no): the metric,
# its help, the factor from the reading's unit. Decode speed has its gauge above.
TELEMETRY_GAUGES: dict[str, tuple[str, str, float]] = {
    "battery_percent": ("ridgeline_edge_battery_ratio", "Battery charge, 0..1", 0.01),
    "power_plugged": ("ridgeline_edge_power_plugged", "1 on mains power", 1.0),
    "cpu_load": ("ridgeline_edge_cpu_load_ratio", "CPU load of other processes, 0..1", 1.0),
    "temperature_c": ("ridgeline_edge_temperature_celsius", "Hottest sensor", 1.0),
    "throttled": ("ridgeline_edge_throttled", "1 while the board slows itself", 1.0),
    "power_w": ("ridgeline_edge_power_watts", "Measured board power draw", 1.0),
    "local_ttft_s": ("ridgeline_edge_local_ttft_seconds", "Local time to first token", 1.0),
    "broker_rtt_s": ("ridgeline_edge_broker_rtt_seconds", "Broker round trip", 1.0),
    "broker_available": ("ridgeline_edge_broker_available", "0 when the broker is down", 1.0),
    "budget_left": ("ridgeline_edge_budget_left_ratio", "Escalation budget left, 0..1", 1.0),
}
