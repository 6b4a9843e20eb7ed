"""Limits that hold across every front of a broker on Ray: one rate limit per device
and one set of device tokens, kept by one Ray actor (the keeper).

Asking the keeper costs an actor call (about 1.1 ms p50 on the 2-core machine the
benchmark ran on), too much for every request. So a front takes request credits in
advance: the keeper gives it a share of what the device has left (at least one,
``1 / (2 * fronts)`` of the rest), taken off the device's one bucket at once, and the
front spends them locally for ``ray.lease_s`` after it took them; credits left then go
back. A device therefore never makes more requests than its limit, however many fronts
it reaches; what it may see is a front asking the keeper while credits wait unspent at
another (at most one lease period). Concurrent calls of one device at one front share
one request to the keeper. Tokens used are counted at the front and sent every 100 ms;
the keeper answers with the balance of every device the front holds credits for, so
a balance spent at another front stops this one within about 100 ms (a device may
overspend its tokens per minute by what it uses in that time). A front that sees the
balance spent drops its credits; the next call asks the keeper, which refuses with the
wait. What a front could not send (the keeper restarting) is kept and sent later.

Device tokens: the keeper reads ``auth.tokens_file`` on the head node (it re-reads it
when it changes, as the single-process broker does) and each front fetches the table
every ``ray.limits_refresh_s``: a revoked token is refused by every front within that
period plus a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ridgeline_core.errors import RateLimitedError, UnavailableError

from ..auth import TokenStore, TokenTable
from ..ratelimit import LeasingRateLimiter
from ..settings import BrokerSettings

__all__ = [
    "LimitsKeeper",
    "SharedRate",
    "SyncedTokens",
    "keeper_name",
    "limits_of",
    "open_keeper",
    "settle_every",
]

_SETTLE_S = 0.1  # how often a front sends its token counts and expired credits
_KEEPER_S = 5.0  # a call to the keeper that takes longer: UNAVAILABLE (it is restarting)


def keeper_name(app_name: str) -> str:
    return f"{app_name}-limits"


class LimitsKeeper:
    """The Ray actor every front asks: the rate limiter of the whole broker, the device
    tokens, and the addresses the fronts listen on. Ray restarts it with the arguments
    it was created with, so a restarted keeper has the limits and reads the tokens file
    again (its buckets start full)."""

    def __init__(
        self, requests_per_minute: int, tokens_per_minute: int, tokens_file: str | None
    ) -> None:
        self._instance = uuid.uuid4().hex  # a restarted keeper is another instance
        self._rate = LeasingRateLimiter(requests_per_minute, tokens_per_minute)
        self._tokens: TokenStore | None = None
        self._version = 0
        self._table: dict[str, str] = {}
        self._fronts: dict[str, tuple[float, str]] = {}  # address: (registered, metrics)
        self.configure(requests_per_minute, tokens_per_minute, tokens_file)

    def configure(
        self, requests_per_minute: int, tokens_per_minute: int, tokens_file: str | None
    ) -> None:
        """The limits of the deployed settings (kept buckets when they did not change)."""
        limits = (requests_per_minute, tokens_per_minute)
        if (self._rate.requests_per_minute, self._rate.tokens_per_minute) != limits:
            self._rate = LeasingRateLimiter(*limits)
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

    def settle(
        self, charges: dict[str, int], returns: dict[str, int], held: list[str]
    ) -> dict[str, float]:
        """Charge tokens and take back credits; the token balance of each ``held`` device."""
        for device, tokens in charges.items():
            self._rate.charge(device, tokens)
        for device, credits in returns.items():
            self._rate.give_back(device, credits)
        return {device: self._rate.balance(device) for device in held}

    def tokens(self, known: tuple[str, int]) -> tuple[tuple[str, int], dict[str, str] | None]:
        """The token table's (instance, version), and the table when ``known`` is not it."""
        if self._tokens is not None:
            self._tokens.refresh()
            table = self._tokens.by_hash
            if table != self._table:
                self._table, self._version = table, self._version + 1
        now = (self._instance, self._version)
        return now, (self._table if known != now else None)

    def register(self, address: str, metrics_url: str = "") -> None:
        self._fronts[address] = (time.time(), metrics_url)

    def unregister(self, address: str) -> None:
        self._fronts.pop(address, None)

    def fronts(self, since: float = 0.0) -> list[str]:
        """The fronts that registered at ``since`` (a time.time()) or later."""
        return sorted(address for address, (at, _) in self._fronts.items() if at >= since)

    def metrics(self, since: float = 0.0) -> list[str]:
        """Those fronts' Prometheus endpoints (the ones that serve one)."""
        return sorted(url for at, url in self._fronts.values() if at >= since and url)


def limits_of(settings: BrokerSettings) -> tuple[int, int, str | None]:
    """What the keeper enforces: requests and tokens per minute, the tokens file."""
    auth = settings.auth
    return (
        settings.limits.requests_per_minute,
        settings.limits.tokens_per_minute,
        str(auth.tokens_file) if auth.enabled else None,
    )


def open_keeper(app_name: str, namespace: str, limits: tuple[int, int, str | None]) -> Any:
    """The keeper of ``app_name`` (created on the head node when there is none yet, with
    ``limits``: requests and tokens per minute, the tokens file)."""
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
    return actor.remote(*limits)


async def _ask(call: Any) -> Any:
    """A keeper call's answer; UnavailableError when the keeper cannot answer in time."""
    try:
        return await asyncio.wait_for(call, _KEEPER_S)
    except Exception as exc:
        raise UnavailableError(f"the shared rate limit cannot be reached: {exc!r}") from None


@dataclass
class _Held:
    credits: int
    until: float
    balance: float


class _Unsent:
    """Tokens counted and credits returned that the keeper has not been told of yet."""

    def __init__(self) -> None:
        self.charges: defaultdict[str, int] = defaultdict(int)
        self.returns: defaultdict[str, int] = defaultdict(int)

    def take(self) -> tuple[dict[str, int], dict[str, int]]:
        taken = dict(self.charges), dict(self.returns)
        self.charges.clear()
        self.returns.clear()
        return taken

    def keep(self, charges: dict[str, int], returns: dict[str, int]) -> None:
        """Put back what could not be sent, for the next round."""
        for device, tokens in charges.items():
            self.charges[device] += tokens
        for device, credits in returns.items():
            self.returns[device] += credits


class _Credits:
    """The request credits a front holds, per device, and what it owes the keeper."""

    def __init__(self) -> None:
        self.held: dict[str, _Held] = {}
        self.unsent = _Unsent()

    def spend(self, device: str) -> bool:
        held = self.held.get(device)
        if held is None:
            return False
        if held.credits > 0 and time.monotonic() < held.until and held.balance >= 0:
            held.credits -= 1
            return True
        self.drop(device)
        return False

    def add(self, device: str, taken: int, balance: float, until: float) -> None:
        held = self.held.get(device)
        credits = taken + (held.credits if held is not None else 0)
        self.held[device] = _Held(credits, until, balance)

    def charge(self, device: str, tokens: int) -> None:
        self.unsent.charges[device] += tokens
        held = self.held.get(device)
        if held is not None:
            held.balance -= tokens

    def drop(self, device: str) -> None:
        held = self.held.pop(device, None)
        if held is not None and held.credits > 0:
            self.unsent.returns[device] += held.credits

    def expire(self, everything: bool = False) -> None:
        now = time.monotonic()
        for device, held in list(self.held.items()):
            if everything or now >= held.until or held.balance < 0:
                self.drop(device)

    def learn(self, balances: dict[str, float]) -> None:
        """The keeper's balances; what this front counted since is not in them yet."""
        for device, balance in balances.items():
            held = self.held.get(device)
            if held is not None:
                held.balance = balance - self.unsent.charges.get(device, 0)


class SharedRate:
    """A front's side of the shared rate limit (:class:`~cloud_broker.ratelimit.Rate`)."""

    def __init__(self, keeper: Any, *, fronts: int, lease_s: float) -> None:
        self._keeper = keeper
        self._share = 1 / (2 * fronts)
        self._lease_s = lease_s
        self._credits = _Credits()
        self._leasing: dict[str, asyncio.Future[None]] = {}

    async def admitted(self, device: str) -> None:
        while not self._credits.spend(device):
            leasing = self._leasing.get(device)
            if leasing is None:
                leasing = self._leasing[device] = asyncio.ensure_future(self._lease(device))
            # shielded: a caller that gives up (its deadline) leaves the lease to finish,
            # so what the keeper handed out is kept, not lost with the caller
            await asyncio.shield(leasing)

    async def _lease(self, device: str) -> None:
        unsent = self._credits.unsent
        charged = unsent.charges.pop(device, 0)
        try:
            call = self._keeper.lease.remote(device, self._share, charged)
            taken, value, reason = await _ask(call)
        except UnavailableError:
            unsent.keep({device: charged}, {})
            raise
        finally:
            self._leasing.pop(device, None)
        if not taken:
            raise RateLimitedError(reason, value)
        self._credits.add(device, taken, value, time.monotonic() + self._lease_s)

    def charge(self, device: str, tokens: int) -> None:
        if tokens > 0:
            self._credits.charge(device, tokens)

    async def settle(self) -> None:
        """Send the counted tokens and the unspent credits of ended leases; learn the
        balances of the devices this front holds credits for."""
        credits = self._credits
        credits.expire()
        charges, returns = credits.unsent.take()
        try:
            call = self._keeper.settle.remote(charges, returns, list(credits.held))
            balances = await _ask(call)
        except UnavailableError:
            credits.unsent.keep(charges, returns)
            raise
        credits.learn(balances)

    def close(self) -> None:
        """Give every held credit back (sent by the next :meth:`settle`)."""
        self._credits.expire(everything=True)


async def settle_every(rate: SharedRate) -> None:
    """Settle every 100 ms until cancelled, and once more then."""
    try:
        while True:
            await asyncio.sleep(_SETTLE_S)
            with contextlib.suppress(UnavailableError):  # kept; sent next round
                await rate.settle()
    finally:
        rate.close()
        with contextlib.suppress(UnavailableError):
            await rate.settle()


class SyncedTokens(TokenTable):
    """A front's copy of the keeper's device tokens, fetched every ``refresh_s``."""

    def __init__(self, keeper: Any, refresh_s: float) -> None:
        super().__init__()
        self._keeper = keeper
        self._refresh_s = refresh_s
        self._known: tuple[str, int] = ("", -1)

    async def sync(self) -> None:
        known, table = await _ask(self._keeper.tokens.remote(self._known))
        if table is not None:
            self.replace(table)
        self._known = (str(known[0]), int(known[1]))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            with contextlib.suppress(UnavailableError):  # keep the table; retry next time
                await self.sync()
