"""Limits that hold across every front of a broker on Ray: one rate limit per device
and one set of device tokens, kept by one Ray actor (the keeper).

Asking the keeper costs an actor call (about 1.1 ms p50 on the 2-core machine the
benchmark ran on), too much for every request. So a front takes request credits in
advance: the keeper gives it a share of what the device has left (at least one,
``1 / (2 * fronts)`` of the rest), taken off the device's one bucket at once, and the
front spends them locally for ``ray.lease_s``; credits left then go back. A device
therefore never gets more than its limit, however many fronts it reaches; what it may
see is a front asking the keeper while credits wait unspent at another (at most one
lease period). Tokens used are counted at the front and sent to the keeper in batches
every 100 ms; a front that sees the device's token balance spent drops its credits, so
the next call asks the keeper, which refuses with the wait.

Device tokens: the keeper reads ``auth.tokens_file`` on the head node (it re-reads it
when it changes, as the single-process broker does) and each front fetches the table
every ``ray.limits_refresh_s``: a revoked token is refused by every front within that
period plus a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ridgeline_core.errors import RateLimitedError, UnavailableError

from ..auth import TokenStore, TokenTable
from ..ratelimit import LeasingRateLimiter

__all__ = ["LimitsKeeper", "SharedRate", "SyncedTokens", "keeper_name", "open_keeper"]

_SETTLE_S = 0.1  # how often a front sends its token counts and expired credits


def keeper_name(app_name: str) -> str:
    return f"{app_name}-limits"


class LimitsKeeper:
    """The Ray actor every front asks: the rate limiter of the whole broker, the device
    tokens, and the addresses the fronts listen on."""

    def __init__(self) -> None:
        self._rate = LeasingRateLimiter(0, 0)
        self._tokens: TokenStore | None = None
        self._version = 0
        self._table: dict[str, str] = {}
        self._fronts: dict[str, float] = {}

    def configure(
        self, requests_per_minute: int, tokens_per_minute: int, tokens_file: str | None
    ) -> None:
        """The limits of the deployed settings (kept buckets when they did not change)."""
        rate = self._rate
        if (rate.requests_per_minute, rate.tokens_per_minute) != (
            requests_per_minute,
            tokens_per_minute,
        ):
            self._rate = LeasingRateLimiter(requests_per_minute, tokens_per_minute)
        self._tokens = None if tokens_file is None else TokenStore(Path(tokens_file))

    def lease(self, device: str, share: float, charged: int = 0) -> tuple[int, float, str]:
        """Request credits for ``device`` and its token balance, once the tokens the front
        counted and had not sent yet are charged; (0, wait, reason) when it is over its
        limit."""
        self._rate.charge(device, charged)
        try:
            taken, balance = self._rate.take(device, share)
        except RateLimitedError as exc:
            return 0, exc.retry_after_s, str(exc)
        return taken, balance, ""

    def settle(self, charges: dict[str, int], returns: dict[str, int]) -> None:
        for device, tokens in charges.items():
            self._rate.charge(device, tokens)
        for device, credits in returns.items():
            self._rate.give_back(device, credits)

    def tokens(self, known: int) -> tuple[int, dict[str, str] | None]:
        """The token table's version, and the table when it is newer than ``known``."""
        if self._tokens is not None:
            self._tokens.refresh()
            table = self._tokens.by_hash
            if table != self._table:
                self._table, self._version = table, self._version + 1
        return self._version, (self._table if known != self._version else None)

    def register(self, address: str) -> None:
        self._fronts[address] = time.time()

    def unregister(self, address: str) -> None:
        self._fronts.pop(address, None)

    def fronts(self) -> list[str]:
        return sorted(self._fronts)


def open_keeper(app_name: str, namespace: str) -> Any:
    """The keeper of ``app_name`` (created on the head node when there is none yet)."""
    import ray

    actor = ray.remote(LimitsKeeper).options(
        name=keeper_name(app_name),
        namespace=namespace,
        get_if_exists=True,
        lifetime="detached",
        num_cpus=0,
        resources={"node:__internal_head__": 0.001},
        max_restarts=-1,
        max_task_retries=2,
    )
    return actor.remote()


class SharedRate:
    """A front's side of the shared rate limit (:class:`~cloud_broker.ratelimit.Rate`)."""

    def __init__(self, keeper: Any, *, fronts: int, lease_s: float) -> None:
        self._keeper = keeper
        self._share = 1 / (2 * fronts)
        self._lease_s = lease_s
        self._credits: dict[str, tuple[int, float, float]] = {}  # credits, until, balance
        self._charges: defaultdict[str, int] = defaultdict(int)
        self._returns: defaultdict[str, int] = defaultdict(int)

    async def admitted(self, device: str) -> None:
        credits, until, balance = self._credits.get(device, (0, 0.0, 0.0))
        now = time.monotonic()
        if credits > 0 and now < until and balance >= 0:
            self._credits[device] = (credits - 1, until, balance)
            return
        self._drop(device)
        charged = self._charges.pop(device, 0)
        try:
            taken, balance, reason = await self._keeper.lease.remote(device, self._share, charged)
        except Exception as exc:  # the keeper is restarting: refuse for now, precisely
            raise UnavailableError(f"the shared rate limit cannot be reached: {exc}") from None
        if not taken:
            raise RateLimitedError(reason, balance)
        self._credits[device] = (taken - 1, now + self._lease_s, balance)

    def charge(self, device: str, tokens: int) -> None:
        if tokens <= 0:
            return
        self._charges[device] += tokens
        held = self._credits.get(device)
        if held is not None:
            credits, until, balance = held
            self._credits[device] = (credits, until, balance - tokens)

    def _drop(self, device: str) -> None:
        held = self._credits.pop(device, None)
        if held is not None and held[0] > 0:
            self._returns[device] += held[0]

    def _expire(self) -> None:
        now = time.monotonic()
        for device, (_, until, balance) in list(self._credits.items()):
            if now >= until or balance < 0:
                self._drop(device)

    async def settle(self) -> None:
        """Send the counted tokens and the unspent credits of ended leases."""
        self._expire()
        if not self._charges and not self._returns:
            return
        charges, returns = dict(self._charges), dict(self._returns)
        self._charges.clear()
        self._returns.clear()
        await self._keeper.settle.remote(charges, returns)

    async def run(self) -> None:
        """Settle every 100 ms until cancelled, and once more then."""
        try:
            while True:
                await asyncio.sleep(_SETTLE_S)
                with contextlib.suppress(Exception):  # a restarting keeper: next round
                    await self.settle()
        finally:
            for device in list(self._credits):
                self._drop(device)
            with contextlib.suppress(Exception):
                await self.settle()


class SyncedTokens(TokenTable):
    """A front's copy of the keeper's device tokens, fetched every ``refresh_s``."""

    def __init__(self, keeper: Any, refresh_s: float) -> None:
        super().__init__()
        self._keeper = keeper
        self._refresh_s = refresh_s
        self._version = -1

    async def sync(self) -> None:
        version, table = await self._keeper.tokens.remote(self._version)
        if table is not None:
            self.replace(table)
        self._version = version

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            with contextlib.suppress(Exception):  # keep the table we have; retry next time
                await self.sync()
