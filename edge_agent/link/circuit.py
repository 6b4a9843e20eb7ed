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


class CircuitBreaker:
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
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._wait_s = reset_after_s
        self._trial = False  # a half-open trial is in flight
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._wait_s:
            return "half-open"
        return "open"

    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a trial through (0 when it would now)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self._opened_at + self._wait_s - self._clock())

    def allow(self) -> bool:
        """May a call go to the broker now? In half-open, True for one caller at a time."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half-open" and not self._trial:
                self._trial = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._failures = 0
            self._opened_at = None
            self._wait_s = self.reset_after_s
            self._trial = False
            self.last_error = None

    def record_failure(self, error: str) -> None:
        with self._lock:
            self.last_error = error
            if self._opened_at is not None:  # a failed trial: wait longer
                if self._trial:
                    self._wait_s = min(self.reset_max_s, self._wait_s * 2)
                self._opened_at = self._clock()
                self._trial = False
                return
            self._failures += 1
            if self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
                self._wait_s = self.reset_after_s

    def release(self) -> None:
        """A half-open trial ended without telling (cancelled): let another caller try."""
        with self._lock:
            self._trial = False
