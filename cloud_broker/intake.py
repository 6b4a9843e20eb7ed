"""The checks a call passes before any model work, in their order: the broker is not
shutting down, the request parsed, the caller may call, the model is served, the
request is within the limits, and the caller's rate allows it.

The servicer (:mod:`.service`) only converts and records metrics; what a call is
checked against (the served models and strategies, the limits, the rate limiter, the
running calls) lives here.
"""

from __future__ import annotations

from typing import Any

from ridgeline.v1 import broker_pb2
from ridgeline_core.wire import LocalDraft

from . import wire
from .backends import BackendRequest
from .callers import RunningCalls, device_of
from .ratelimit import Rate, RateLimiter
from .settings import LimitsSettings
from .strategies import Call, Catalog, Meter, Plan
from .wire import Malformed

__all__ = ["Intake"]


class Intake:
    """What a call is checked against, and the checks in two steps: who calls which
    model or strategy (:meth:`caller`), then whether the request may run (:meth:`admit`)."""

    def __init__(
        self, catalog: Catalog, limits: LimitsSettings, *, auth: bool, rate: Rate | None = None
    ) -> None:
        self.catalog = catalog
        self.backends = catalog.backends
        self.default_model = catalog.default_model
        self.limits = limits
        self.auth = auth
        self.rate: Rate = rate or RateLimiter(limits.requests_per_minute, limits.tokens_per_minute)
        self.calls = RunningCalls()

    def caller(self, request: broker_pb2.GenerateRequest, context: Any) -> tuple[str, Plan]:
        """The device the call counts against and the plan (model or strategy) it asks for."""
        self.calls.refuse_when_draining()
        if isinstance(request, Malformed):
            request.check()
        device = device_of(request, context, self.auth)
        return device, self.catalog.plan(wire.target_of(request))

    async def admit(
        self, request: broker_pb2.GenerateRequest, device: str
    ) -> tuple[BackendRequest, LocalDraft | None]:
        """The request in the domain's terms and the device's draft, checked against the
        limits, once the device's rate allows one more call."""
        checked = wire.backend_request(request, self.limits)
        draft = wire.draft_of(request, self.limits)
        await self.rate.admitted(device)
        return checked, draft

    async def call(self, plan: Plan, request: broker_pb2.GenerateRequest, device: str) -> Call:
        """The members' runner for ``plan``, once the request passed :meth:`admit`."""
        checked, draft = await self.admit(request, device)
        return Call(
            self.backends,
            checked,
            device=device,
            rate=self.rate,
            meter=Meter(self.catalog.prices, plan.max_cost),
            draft=draft,
            task=plan.task,
            willingness_to_pay=plan.willingness_to_pay,
        )
