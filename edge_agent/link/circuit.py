"""A circuit breaker for the broker link, so a dead broker costs one timeout, not one per
request.

closed ──(failure_threshold consecutive failures)──► open ──(reset wait)──► half-open
  ▲                                                   ▲                         │
  └──────────────── success (a call or a probe) ──────┼──────── failure ───────┘

While open, :meth:`allow` answers False at once; the wait before the next try doubles
after each failed try up to ``reset_max_s``. In half-open one caller gets through (a real
request or a health probe); its outcome closes or reopens the circuit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker"]


class _OpenPeriod:
    """When the circuit opened (None: closed) and how long it waits before a trial; the
    wait doubles after each failed trial, up to ``reset_max_s``."""

    def __init__(self, reset_after_s: float, reset_max_s: float, clock: Callable[[], float]):
        self.reset_after_s, self.reset_max_s, self._clock = reset_after_s, reset_max_s, clock
        self.opened_at: float | None = None
        self.wait_s = reset_after_s

    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self.opened_at >= self.wait_s else "open"

    def retry_in_s(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.wait_s - self._clock())

    def open(self, failed_trial: bool = False) -> None:
        """Open now: with the first wait, or after a failed trial a doubled one."""
        if self.opened_at is None:
            self.wait_s = self.reset_after_s
        elif failed_trial:
            self.wait_s = min(self.reset_max_s, self.wait_s * 2)
        self.opened_at = self._clock()

    def close(self) -> None:
        self.opened_at = None
        self.wait_s = self.reset_after_s


class CircuitBreaker:
    """The circuit of one broker link (see the module docstring); thread-safe."""

    def __init__(
        self,
        failure_threshold: int,
        reset_after_s: float,
        reset_max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self.reset_max_s = reset_max_s
        self._lock = threading.Lock()
        self._failures = 0
        self._period = _OpenPeriod(reset_after_s, reset_max_s, clock)
        self._trial = False  # a half-open trial is in flight
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._period.state()

    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a trial through (0 when it would now)."""
        with self._lock:
            return self._period.retry_in_s()

    def allow(self) -> bool:
        """May a call go to the broker now? In half-open, True for one caller at a time."""
        with self._lock:
            state = self._period.state()
            if state == "closed":
                return True
            if state == "half-open" and not self._trial:
                self._trial = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._period.close()
            self._trial = False
            self.last_error = None

    def record_failure(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            if self._period.opened_at is not None:  # a failed trial: wait longer
                self._period.open(failed_trial=self._trial)
                self._trial = False
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._period.open()

    def release(self) -> None:
        """A half-open trial ended without telling (cancelled): let another caller try."""
        with self._lock:
            self._trial = False
