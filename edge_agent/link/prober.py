"""Health probing of the broker: one check on demand, or a background thread that checks
as soon as an open circuit would let a trial through (with its backoff), and otherwise now
and then, so a recovered broker closes the circuit without a request paying for it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ridgeline_core import errors
from ridgeline_core.client import BrokerClient

from ..settings import EscalationSettings
from ..telemetry.meters import BrokerHealth
from .circuit import CircuitBreaker

__all__ = ["HealthProber", "check_health", "record_probe"]

log = logging.getLogger("edge_agent.link.escalation")


class HealthProber:
    """Health checks of one broker, on demand or from a background thread."""

    def __init__(
        self,
        client: BrokerClient,
        settings: EscalationSettings,
        circuit: CircuitBreaker,
        health: BrokerHealth,
        *,
        address: str,
        on_change: Callable[[], None],
    ) -> None:
        self.client, self.settings, self.circuit = client, settings, circuit
        self.health, self.address, self._on_change = health, address, on_change
        self._stop = threading.Event()
        self._wake = threading.Event()  # the circuit opened, or close(): re-plan the wait
        self._thread: threading.Thread | None = None

    def probe(self) -> bool:
        """One health check; closes an open circuit when the broker serves again."""
        rtt_s = check_health(self.client, self.settings.probe_timeout_s)
        record_probe(rtt_s, self.circuit, self.health, self.address)
        self._on_change()
        return rtt_s is not None

    def start(self, idle_interval_s: float = 30.0) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, args=(idle_interval_s,), name="ridgeline-broker-probe",
                daemon=True,
            )  # fmt: skip
            self._thread.start()

    def wake(self) -> None:
        """The circuit changed: work out the wait again."""
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self, idle_interval_s: float) -> None:
        while True:
            closed = self.circuit.state == "closed"
            wait = idle_interval_s if closed else self.circuit.retry_in_s()
            woke = self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            if woke:  # woken early: the circuit changed, so work out the wait again
                continue
            try:
                self.probe()
            except Exception:  # a bug must not end probing (the circuit would stay open)
                log.exception("broker %s: health probe failed unexpectedly", self.address)


def check_health(client: BrokerClient, timeout_s: float) -> float | None:
    """One health check's round trip; None when the broker does not serve."""
    started = time.perf_counter()
    try:
        client.wait_ready(timeout_s)
        ok = client.health(timeout_s=timeout_s)
    except errors.RidgelineError:
        ok = False
    return time.perf_counter() - started if ok else None


def record_probe(
    rtt_s: float | None, circuit: CircuitBreaker, health: BrokerHealth, address: str
) -> None:
    """What one health check (its round trip, None: failed) teaches the circuit."""
    if rtt_s is not None:
        health.record_rtt(rtt_s)
        if circuit.state != "closed":
            log.info("broker %s: serving again, circuit closed", address)
        circuit.record_success()
    else:
        if circuit.state == "half-open":
            circuit.allow()  # take the trial so the failure doubles the wait
        circuit.record_failure("health probe failed")
        if circuit.state != "closed":
            health.record_down()
