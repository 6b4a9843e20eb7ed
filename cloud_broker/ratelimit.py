"""Per-device rate limits: requests per minute and tokens per minute, as token buckets.

A request needs one request credit and a non-negative token balance; its
prompt and completion tokens are charged when it ends, so one large answer can
push the balance below zero and later requests wait until it refills. A
refused request learns how long to wait (``retry_after_s``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from ridgeline_core.errors import RateLimitedError

__all__ = ["LeasingRateLimiter", "Rate", "RateLimiter"]


class Rate(Protocol):
    """What a call's rate is checked and charged through: this process's
    :class:`RateLimiter`, or the limits shared by every front of a broker on Ray."""

    async def admitted(self, device: str) -> None:
        """Take one request credit, or raise RateLimitedError with the wait."""

    def charge(self, device: str, tokens: int) -> None:
        """Count a finished call's tokens against the device."""


_MAX_DEVICES = 100_000  # idle buckets are dropped beyond this


class _Bucket:
    __slots__ = ("level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.requests_per_minute = requests_per_minute
        self.tokens_per_minute = tokens_per_minute
        self._clock = clock
        self._requests: dict[str, _Bucket] = {}
        self._tokens: dict[str, _Bucket] = {}

    def _level(self, buckets: dict[str, _Bucket], device: str, per_minute: int) -> _Bucket:
        now = self._clock()
        bucket = buckets.get(device)
        if bucket is None:
            if len(buckets) >= _MAX_DEVICES:
                self._evict_idle(buckets, per_minute, now)
            bucket = buckets[device] = _Bucket(float(per_minute), now)
        else:
            bucket.level = min(per_minute, bucket.level + (now - bucket.stamp) * per_minute / 60)
            bucket.stamp = now
        return bucket

    @staticmethod
    def _evict_idle(buckets: dict[str, _Bucket], per_minute: int, now: float) -> None:
        """Forget devices whose bucket has refilled: they would start full anyway."""
        for device, bucket in list(buckets.items()):
            if bucket.level + (now - bucket.stamp) * per_minute / 60 >= per_minute:
                del buckets[device]

    def admit(self, device: str) -> None:
        """Take one request credit, or raise RateLimitedError with the wait."""
        if self.tokens_per_minute:
            tokens = self._level(self._tokens, device, self.tokens_per_minute)
            if tokens.level < 0:
                wait = -tokens.level * 60 / self.tokens_per_minute
                raise RateLimitedError(
                    f"device {device!r} used its {self.tokens_per_minute} tokens per minute",
                    wait,
                )
        if self.requests_per_minute:
            requests = self._level(self._requests, device, self.requests_per_minute)
            if requests.level < 1:
                wait = (1 - requests.level) * 60 / self.requests_per_minute
                raise RateLimitedError(
                    f"device {device!r} sent more than {self.requests_per_minute} "
                    "requests per minute",
                    wait,
                )
            requests.level -= 1

    async def admitted(self, device: str) -> None:
        """:meth:`admit`, as the servicer awaits it (:class:`Rate`)."""
        self.admit(device)

    def charge(self, device: str, tokens: int) -> None:
        if self.tokens_per_minute and tokens:
            self._level(self._tokens, device, self.tokens_per_minute).level -= tokens


class LeasingRateLimiter(RateLimiter):
    """The rate limiter every front of a broker on Ray shares
    (:mod:`cloud_broker.on_ray.limits`): it hands out request credits in advance."""

    def take(self, device: str, share: float) -> tuple[int, float]:
        """Like :meth:`admit`, but take ``share`` of the request credits the device has
        left (at least one) at once, for a broker front on Ray to spend before it asks
        again; with the token balance left (``inf`` when tokens are not limited)."""
        self.admit(device)
        taken = 1
        if self.requests_per_minute:
            requests = self._requests[device]
            more = max(0, int(requests.level * share))
            requests.level -= more
            taken += more
        else:
            taken = 1_000_000  # no request limit: the lease's lifetime bounds it
        balance = float("inf")
        if self.tokens_per_minute:
            balance = self._tokens[device].level
        return taken, balance

    def balance(self, device: str) -> float:
        """The device's token balance now (``inf`` when tokens are not limited)."""
        if not self.tokens_per_minute:
            return float("inf")
        return self._level(self._tokens, device, self.tokens_per_minute).level

    def give_back(self, device: str, credits: int) -> None:
        """Return request credits taken with :meth:`take` and not spent."""
        if self.requests_per_minute and credits > 0:
            bucket = self._level(self._requests, device, self.requests_per_minute)
            bucket.level = min(self.requests_per_minute, bucket.level + credits)
