"""Prometheus metrics of the broker, on their own registry and HTTP port.

Counters and histograms are updated on the request path (a few microseconds
each); queue depth, busy slots and running generations are read from the
backends when Prometheus scrapes, so they cost nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .backends import Backend

__all__ = ["BrokerMetrics"]

_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0,
)  # fmt: skip


class _BackendGauges(Collector):
    def __init__(self, backends: Callable[[], Iterable[Backend]]) -> None:
        self._backends = backends

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(
            "ridgeline_broker_queue_depth", "requests waiting for a slot", labels=["model"]
        )
        busy = GaugeMetricFamily(
            "ridgeline_broker_slots_busy", "slots serving a request", labels=["model"]
        )
        slots = GaugeMetricFamily("ridgeline_broker_slots", "slots per model", labels=["model"])
        running = GaugeMetricFamily(
            "ridgeline_broker_backend_running",
            "generations still running in the backend (stopping ones included)",
            labels=["model"],
        )
        for backend in self._backends():
            queue.add_metric([backend.name], backend.admission.waiting)
            busy.add_metric([backend.name], backend.admission.active)
            slots.add_metric([backend.name], backend.admission.slots)
            running.add_metric([backend.name], backend.running)
        yield from (queue, busy, slots, running)


class BrokerMetrics:
    def __init__(self, backends: Callable[[], Iterable[Backend]]) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ridgeline_broker_requests",
            "Generate calls by model and final status code",
            ["model", "code"],
            registry=self.registry,
        )
        self.errors = Counter(
            "ridgeline_broker_errors",
            "failed calls by status code and error kind",
            ["code", "kind"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "ridgeline_broker_tokens",
            "tokens processed, by model and kind (prompt, completion)",
            ["model", "kind"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "ridgeline_broker_time_to_first_token_seconds",
            "from request received to first text sent",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.latency = Histogram(
            "ridgeline_broker_request_duration_seconds",
            "from request received to final result sent",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "ridgeline_broker_queue_wait_seconds",
            "time a request waited for a slot",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cost, self.members = _strategy_counters(self.registry)
        self.registry.register(_BackendGauges(backends))
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: the label lookup is the slow part."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def serve(self, host: str, port: int) -> tuple[Any, int]:
        """Start the /metrics HTTP server; returns it and the port it got."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server, int(server.server_port)


def _strategy_counters(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    """What strategies cost, and the members they ran."""
    cost = Counter(
        "ridgeline_broker_cost",
        "what answered calls cost (configured prices), by strategy",
        ["strategy"],
        registry=registry,
    )
    members = Counter(
        "ridgeline_broker_strategy_members",
        "models run for strategies, by strategy, model and role",
        ["strategy", "model", "role"],
        registry=registry,
    )
    return cost, members
