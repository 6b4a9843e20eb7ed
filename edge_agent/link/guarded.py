"""The health side of a broker link: its circuit breaker (behind the call gate that every
call passes), the prober that closes an open circuit again, and whether a call may go out
now. :class:`~.escalation.Escalator` adds the calls themselves."""

from __future__ import annotations

from collections.abc import Callable

from ridgeline_core.client import BrokerClient

from ..settings import EscalationSettings
from ..telemetry.meters import BrokerHealth
from .circuit import CircuitBreaker
from .gate import CallGate
from .prober import HealthProber

__all__ = ["GuardedLink"]


class GuardedLink:
    """A broker client with its circuit breaker, call gate and health prober."""

    def __init__(
        self,
        client: BrokerClient,
        settings: EscalationSettings,
        health: BrokerHealth,
        *,
        address: str,
        on_change: Callable[[], None],
    ) -> None:
        self.client = client
        self.settings = settings
        self.health = health
        self.address = address
        circuit = CircuitBreaker(
            settings.failure_threshold, settings.reset_after_s, settings.reset_max_s
        )
        self.prober = HealthProber(
            client, settings, circuit, health, address=address, on_change=on_change
        )
        self._gate = CallGate(circuit, health, self.prober, address, on_change)

    @property
    def circuit(self) -> CircuitBreaker:
        return self._gate.circuit

    @circuit.setter
    def circuit(self, circuit: CircuitBreaker) -> None:
        self._gate.circuit = circuit

    def available(self) -> tuple[bool, str]:
        """Whether a call may go out now, and if not, why (without using up a trial)."""
        return self._gate.available()

    def probe(self) -> bool:
        """One health check; closes an open circuit when the broker serves again."""
        return self.prober.probe()

    def start_probing(self, idle_interval_s: float = 30.0) -> None:
        """Probe in the background (see :class:`~.prober.HealthProber`)."""
        self.prober.start(idle_interval_s)

    def close(self) -> None:
        self.prober.close()
        self.client.close()
