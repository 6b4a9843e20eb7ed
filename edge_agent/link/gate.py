"""Whether a call to the broker may go out, and what its end teaches the circuit.

A call takes the circuit's permission before it starts (a half-open circuit lets one
trial through); its end is recorded: a success closes the circuit and records the round
trip, an outage counts towards opening it (and wakes the prober), anything else gives
the permission back without counting.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ridgeline_core import errors

from ..telemetry.meters import BrokerHealth
from .answers import EscalationFailed
from .circuit import CircuitBreaker
from .prober import HealthProber

__all__ = ["CallGate"]

log = logging.getLogger("edge_agent.link.escalation")


class CallGate:
    """The circuit of one broker link, with its health bookkeeping."""

    def __init__(
        self,
        circuit: CircuitBreaker,
        health: BrokerHealth,
        prober: HealthProber,
        address: str,
        on_change: Callable[[], None],
    ) -> None:
        self.circuit = circuit
        self._health = health
        self._prober = prober
        self._address = address
        self._on_change = on_change  # telemetry changed: rebuild the snapshot

    def available(self) -> tuple[bool, str]:
        """Whether a call may go out now, and if not, why (without using up a trial)."""
        if self.circuit.state == "open":
            return False, (
                f"broker circuit open after {self.circuit.last_error or 'failures'}; "
                f"next try in {self.circuit.retry_in_s():.0f} s"
            )
        return True, self.circuit.state

    def take(self, deadline_s: float) -> None:
        """Refuse a call that cannot go out; otherwise it holds the circuit's permission."""
        if not deadline_s > 0:  # NaN too
            # The caller's time ran out before the call (a slow local generation): no fault
            # of the broker's, so it neither counts towards the circuit nor takes a trial.
            raise EscalationFailed(
                "the escalation deadline passed before the call",
                started=False,
                attempts=0,
                outage=False,
            )
        if not self.circuit.allow():
            reason = self.available()[1]
            if self.circuit.state == "half-open":
                reason = "a trial call to the broker is already in flight"
            raise EscalationFailed(reason, started=False, attempts=0, outage=True)

    def succeeded(self, rtt_s: float | None) -> None:
        if rtt_s is not None:
            self._health.record_rtt(rtt_s)
        self.circuit.record_success()
        self._on_change()

    def failed(self, exc: errors.RidgelineError, outage: bool) -> None:
        if not outage:
            self.circuit.release()
            return
        was_open = self.circuit.state != "closed"
        self.circuit.record_failure(f"{type(exc).__name__}: {exc}")
        if self.circuit.state == "open":
            if not was_open:
                log.warning("broker %s: circuit opened (%s)", self._address, exc)
                self._prober.wake()
            self._health.record_down()
            self._on_change()
