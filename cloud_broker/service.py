"""The ``ridgeline.v1.Broker`` service: thin. Protobuf is converted at the boundary
(:mod:`.wire`), every request is checked before any model work starts (:mod:`.intake`),
the answer itself is domain code (:mod:`.strategies`: a single model, a route, a cascade
or an ensemble, each member admitted, accounted and priced) delivered with bounded writes
(:mod:`.delivery`: a client that stops reading does not keep a model's slot), and the
metrics of a call are recorded in one place (:class:`_CallMetrics`).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import grpc.aio

from ridgeline.v1 import broker_pb2, broker_pb2_grpc
from ridgeline_core import errors

from . import wire
from .delivery import BoundedWriter, BufferedGeneration
from .generation import GenerationTimes
from .intake import Intake
from .interceptors import status_of
from .metrics import BrokerMetrics
from .ratelimit import Rate
from .settings import LimitsSettings
from .strategies import Catalog, StrategyOutcome, Text
from .wire import Malformed

__all__ = ["BrokerService", "add_to_server"]


def add_to_server(service: BrokerService, server: grpc.aio.Server) -> None:
    """Register ``service`` like the generated helper does, but with requests that do not
    parse answered INVALID_ARGUMENT."""
    handlers = {
        "Generate": grpc.unary_stream_rpc_method_handler(
            service.Generate,
            request_deserializer=wire.lenient(broker_pb2.GenerateRequest, "Generate"),
            response_serializer=broker_pb2.GenerateResponse.SerializeToString,
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            service.ListModels,
            request_deserializer=wire.lenient(broker_pb2.ListModelsRequest, "ListModels"),
            response_serializer=broker_pb2.ListModelsResponse.SerializeToString,
        ),
    }
    name = broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


class BrokerService(broker_pb2_grpc.BrokerServicer):
    """The servicer: converts at the boundary and hands the work to the domain."""

    def __init__(
        self,
        catalog: Catalog,
        limits: LimitsSettings,
        metrics: BrokerMetrics,
        *,
        auth: bool,
        rate: Rate | None = None,
    ) -> None:
        self.intake = Intake(catalog, limits, auth=auth, rate=rate)
        self.calls = self.intake.calls  # the server drains through these
        self.metrics = metrics

    def drain(self) -> None:
        """Refuse new calls from now on (UNAVAILABLE, so clients retry elsewhere)."""
        self.calls.draining = True

    # -- calls ------------------------------------------------------------------------------

    async def Generate(  # type: ignore[override]  # writes through context: bounded
        self, request: broker_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> None:
        times = GenerationTimes(received=time.perf_counter())
        call = _CallMetrics(self.metrics)
        self.calls.started()
        writer = BoundedWriter(context, self.intake.limits.write_stall_s)
        try:
            device, plan = self.intake.caller(request, context)
            call.model = plan.label
            answering = await self.intake.call(plan, request, device)
            await writer.open()
            generation = BufferedGeneration(plan.strategy.run(answering))
            try:
                async for item in generation:
                    if isinstance(item, Text):
                        times.first = times.first or time.perf_counter()
                        await writer.write(wire.delta_to_pb(item.text, item.model))
                    else:
                        times.done = time.perf_counter()
                        times.admitted = times.received + item.queue_s
                        await writer.write(
                            wire.result_to_pb(item, times.queue_s, times.first_s, times.total_s)
                        )
                        call.answered(item, times)
            finally:
                await generation.close()  # stopped if still running: every slot is free
        except errors.SlowClientError as exc:
            call.failed(exc)
            writer.end(exc)
        except BaseException as exc:
            call.failed(exc)
            raise
        finally:
            call.done()
            self.calls.ended()

    async def ListModels(
        self, request: broker_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ListModelsResponse:
        if isinstance(request, Malformed):
            request.check()
        self.calls.refuse_when_draining()
        catalog = self.intake.catalog
        return wire.models_to_pb(
            catalog.backends.values(), catalog.default_model, catalog.prices, catalog.configured
        )


class _CallMetrics:
    """A Generate call's metrics: its latencies and tokens when it answered, its error
    (by status and kind) when it failed, and its outcome code in every case."""

    def __init__(self, metrics: BrokerMetrics) -> None:
        self.metrics = metrics
        self.model = ""
        self.code = "OK"

    def answered(self, outcome: StrategyOutcome, times: GenerationTimes) -> None:
        m, label = self.metrics, self.model
        m.child(m.queue_wait, label).observe(times.queue_s)
        m.child(m.ttft, label).observe(times.first_s)
        m.child(m.latency, label).observe(times.total_s)
        m.child(m.cost, label).inc(outcome.cost)
        for member in outcome.members:
            if member.role == "draft":  # the device's tokens, not this broker's
                continue
            m.child(m.tokens, member.model, "prompt").inc(member.prompt_tokens)
            m.child(m.tokens, member.model, "completion").inc(member.completion_tokens)
            if outcome.kind != "single":
                m.child(m.members, label, member.model, member.role).inc()

    def failed(self, exc: BaseException) -> None:
        m = self.metrics
        if isinstance(exc, errors.RidgelineError):
            self.code = status_of(exc).name
            m.child(m.errors, self.code, exc.kind).inc()
        elif isinstance(exc, GeneratorExit | asyncio.CancelledError):
            self.code = "CANCELLED"  # by the client, its deadline, or the shutdown
        else:
            self.code = "INTERNAL"  # a bug
            m.child(m.errors, self.code, "internal").inc()

    def done(self) -> None:
        self.metrics.child(self.metrics.requests, self.model, self.code).inc()
