"""In-process telemetry: what the agent measures itself, as telemetry sources.

:class:`LocalSpeed` keeps EWMAs of the local model's decode speed and time to first token
(from real generations); :class:`BrokerHealth` keeps the broker's round trip (from real calls
and health probes) and whether it is reachable. Both are cheap to read, so the sampler can
rebuild its snapshot right after they record something.
"""

from __future__ import annotations

import threading

from .snapshot import Reading

__all__ = ["BrokerHealth", "Ewma", "LocalSpeed"]


class Ewma:
    def __init__(self, alpha: float) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, x: float) -> float:
        self.value = x if self.value is None else self.value + self.alpha * (x - self.value)
        return self.value


class LocalSpeed:
    name = "local-speed"

    def __init__(self, alpha: float) -> None:
        self._lock = threading.Lock()
        self._speed = Ewma(alpha)
        self._ttft = Ewma(alpha)

    def record(self, tokens_per_s: float | None, ttft_s: float | None) -> None:
        with self._lock:
            if tokens_per_s is not None and tokens_per_s > 0:
                self._speed.add(tokens_per_s)
            if ttft_s is not None and ttft_s >= 0:
                self._ttft.add(ttft_s)

    def read(self) -> Reading:
        return {"local_tokens_per_s": self._speed.value, "local_ttft_s": self._ttft.value}


class BrokerHealth:
    name = "broker"

    def __init__(self, alpha: float) -> None:
        self._lock = threading.Lock()
        self._rtt = Ewma(alpha)
        self.available: bool | None = None  # unknown until a call or probe says

    def record_rtt(self, rtt_s: float) -> None:
        with self._lock:
            self._rtt.add(max(0.0, rtt_s))
            self.available = True

    def record_down(self) -> None:
        self.available = False

    def read(self) -> Reading:
        return {"broker_rtt_s": self._rtt.value, "broker_available": self.available}
