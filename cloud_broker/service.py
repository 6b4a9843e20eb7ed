"""The ``ridgeline.v1.Broker`` service: validate, admit, stream, account.

Every request is checked before any model work starts: target, message count
and size, sampling parameters, device identity and rate limits. ``max_tokens``
above ``limits.max_tokens`` is clamped rather than refused, so an edge device
built for a bigger broker still gets an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from ridgeline.v1 import broker_pb2, broker_pb2_grpc
from ridgeline_core import errors
from ridgeline_core.runtime import ChatMessage, FinishReason, SamplingParams
from ridgeline_core.runtime.choices import check_choices

from .auth import check_device_id, current_device
from .backends import Backend, BackendRequest, Outcome
from .interceptors import status_of
from .metrics import BrokerMetrics
from .ratelimit import RateLimiter
from .settings import LimitsSettings

__all__ = ["BrokerService", "add_to_server"]

log = logging.getLogger("ridgeline.broker")

_ROLES = {
    broker_pb2.ROLE_SYSTEM: "system",
    broker_pb2.ROLE_USER: "user",
    broker_pb2.ROLE_ASSISTANT: "assistant",
}
_FINISH = {
    FinishReason.STOP: broker_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: broker_pb2.FINISH_REASON_LENGTH,
    FinishReason.STOP_SEQUENCE: broker_pb2.FINISH_REASON_STOP_SEQUENCE,
    FinishReason.CANCELLED: broker_pb2.FINISH_REASON_CANCELLED,
}
_MAX_REQUEST_ID = 128
_MAX_STOPS = 8
_MAX_STOP_CHARS = 64
_MAX_SEED = 2**32 - 1


class Malformed:
    """Stands in for a request whose bytes did not parse, so the call can answer
    INVALID_ARGUMENT (gRPC itself would answer INTERNAL)."""

    def __init__(self, method: str, error: Exception) -> None:
        self.method = method
        self.error = error

    def check(self) -> None:
        raise errors.InvalidRequestError(f"malformed {self.method} request: {self.error}")


def _lenient(message: Any, method: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(method, exc)

    return parse


def add_to_server(service: BrokerService, server: grpc.aio.Server) -> None:
    """Register ``service`` like the generated helper does, but with requests that do not
    parse answered INVALID_ARGUMENT."""
    handlers = {
        "Generate": grpc.unary_stream_rpc_method_handler(
            service.Generate,
            request_deserializer=_lenient(broker_pb2.GenerateRequest, "Generate"),
            response_serializer=broker_pb2.GenerateResponse.SerializeToString,
        ),
        "ListModels": grpc.unary_unary_rpc_method_handler(
            service.ListModels,
            request_deserializer=_lenient(broker_pb2.ListModelsRequest, "ListModels"),
            response_serializer=broker_pb2.ListModelsResponse.SerializeToString,
        ),
    }
    name = broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


class BrokerService(broker_pb2_grpc.BrokerServicer):
    def __init__(
        self,
        backends: Mapping[str, Backend],
        default_model: str,
        limits: LimitsSettings,
        metrics: BrokerMetrics,
        *,
        auth: bool,
    ) -> None:
        self.backends = dict(backends)
        self.default_model = default_model
        self.limits = limits
        self.metrics = metrics
        self.auth = auth
        self.rate = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute)
        self.draining = False  # shutting down: refuse new calls, let running ones finish
        self.active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def drain(self) -> None:
        """Refuse new calls from now on (UNAVAILABLE, so clients retry elsewhere)."""
        self.draining = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no Generate call is running; False if ``timeout_s`` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        return True

    def _refuse_when_draining(self) -> None:
        if self.draining:
            raise errors.UnavailableError("the broker is shutting down; retry another broker")

    # -- validation -------------------------------------------------------------------------

    def _device(self, request: broker_pb2.GenerateRequest, context: Any) -> str:
        authenticated = current_device.get()
        claimed = request.device_id
        if claimed:
            check_device_id(claimed)
        if self.auth:
            if authenticated is None:  # the interceptor always sets it; never serve anonymously
                raise errors.UnauthenticatedError("missing device token")
            if claimed and claimed != authenticated:
                raise errors.PermissionDeniedError(
                    f"device_id {claimed!r} does not match the token's device"
                )
            return authenticated
        # without auth a claimed id is unverified: limits key on where the call comes from
        return _peer_host(context.peer())

    def _backend(self, request: broker_pb2.GenerateRequest) -> Backend:
        target = request.WhichOneof("target")
        if target == "strategy":
            strategy = request.strategy
            kind = broker_pb2.Strategy.Kind.Name(strategy.kind)
            if strategy.kind not in (
                broker_pb2.Strategy.KIND_UNSPECIFIED,
                broker_pb2.Strategy.KIND_SINGLE,
            ):
                raise errors.UnsupportedError(f"strategy {kind} is not offered by this broker")
            if len(strategy.models) > 1:
                raise errors.InvalidRequestError(f"strategy {kind} takes at most one model")
            name = strategy.models[0] if strategy.models else self.default_model
        else:
            name = request.model or self.default_model
        backend = self.backends.get(name)
        if backend is None:
            if len(name) > 128 or not name.isprintable():
                raise errors.UnknownModelError("unknown model (invalid name)")
            served = ", ".join(sorted(self.backends)) or "none"
            raise errors.UnknownModelError(f"unknown model {name!r} (served: {served})")
        return backend

    def _request(self, request: broker_pb2.GenerateRequest) -> BackendRequest:
        limits = self.limits
        if len(request.request_id) > _MAX_REQUEST_ID:
            raise errors.InvalidRequestError(
                f"request_id is {len(request.request_id)} characters; at most {_MAX_REQUEST_ID}"
            )
        if not request.messages:
            raise errors.InvalidRequestError("messages is empty: send at least one message")
        if len(request.messages) > limits.max_messages:
            raise errors.InvalidRequestError(
                f"{len(request.messages)} messages; this broker takes at most {limits.max_messages}"
            )
        chars = 0
        messages = []
        for index, message in enumerate(request.messages):
            role = _ROLES.get(message.role)
            if role is None:
                raise errors.InvalidRequestError(f"messages[{index}].role is not set")
            chars += len(message.content)
            messages.append(ChatMessage(role, message.content))  # type: ignore[arg-type]
        if chars > limits.max_prompt_chars:
            raise errors.InvalidRequestError(
                f"prompt is {chars} characters; this broker takes at most {limits.max_prompt_chars}"
            )
        if not any(m.content.strip() for m in messages if m.role == "user"):
            raise errors.EmptyPromptError("no user message with text")
        return BackendRequest(request.request_id, tuple(messages), self._params(request.params))

    def _params(self, params: broker_pb2.SamplingParams) -> SamplingParams:
        limits = self.limits
        max_tokens = limits.default_max_tokens
        if params.HasField("max_tokens"):
            if params.max_tokens == 0:
                raise errors.InvalidRequestError("params.max_tokens must be at least 1")
            max_tokens = min(params.max_tokens, limits.max_tokens)
        sampling: dict[str, Any] = {"max_tokens": max_tokens}
        if params.HasField("temperature"):
            if not (math.isfinite(params.temperature) and 0 <= params.temperature <= 2):
                raise errors.InvalidRequestError("params.temperature must be within [0, 2]")
            sampling["temperature"] = params.temperature
        if params.HasField("top_p"):
            if not (math.isfinite(params.top_p) and 0 < params.top_p <= 1):
                raise errors.InvalidRequestError("params.top_p must be within (0, 1]")
            sampling["top_p"] = params.top_p
        if params.HasField("top_k"):
            sampling["top_k"] = params.top_k
        if params.HasField("seed"):
            if params.seed > _MAX_SEED:
                raise errors.InvalidRequestError(f"params.seed must be at most {_MAX_SEED}")
            sampling["seed"] = params.seed
        if params.stop:
            if len(params.stop) > _MAX_STOPS:
                raise errors.InvalidRequestError(f"at most {_MAX_STOPS} stop sequences")
            if any(not stop or len(stop) > _MAX_STOP_CHARS for stop in params.stop):
                raise errors.InvalidRequestError(
                    f"stop sequences must be 1-{_MAX_STOP_CHARS} characters"
                )
            sampling["stop"] = tuple(params.stop)
        if params.choices:
            sampling["choices"] = check_choices(params.choices, "params.choices")
        return SamplingParams(**sampling)

    # -- calls ------------------------------------------------------------------------------

    async def Generate(
        self, request: broker_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[broker_pb2.GenerateResponse]:
        received = time.perf_counter()
        metrics = self.metrics
        model = ""
        code = "OK"
        self.active += 1
        self._idle.clear()
        try:
            self._refuse_when_draining()
            if isinstance(request, Malformed):
                request.check()
            device = self._device(request, context)
            backend = self._backend(request)
            model = backend.name
            backend_request = self._request(request)
            self.rate.admit(device)
            admission = backend.admission
            await admission.acquire()
            admitted = time.perf_counter()
            first: float | None = None
            outcome: Outcome | None = None
            streamed_chars = 0
            try:
                # aclosing: the backend's cleanup (stopping its work) runs now, in this
                # task, before the slot is released, not whenever the generator is freed
                async with contextlib.aclosing(backend.stream(backend_request)) as stream:
                    async for item in stream:
                        if isinstance(item, str):
                            if first is None:
                                first = time.perf_counter()
                            streamed_chars += len(item)
                            yield broker_pb2.GenerateResponse(
                                delta=broker_pb2.TextDelta(text=item, model=model)
                            )
                        else:
                            outcome = item
            finally:
                done = time.perf_counter()
                admission.release(done - admitted)
                if outcome is not None:
                    used = outcome.prompt_tokens + outcome.completion_tokens
                else:  # cancelled or failed midway: charge an estimate, never nothing
                    prompt_chars = sum(len(m.content) for m in backend_request.messages)
                    used = (prompt_chars + streamed_chars + 3) // 4
                self.rate.charge(device, used)
            if outcome is None:
                raise errors.UnavailableError(f"model {model!r} ended without a result")
            timings = broker_pb2.BrokerTimings(
                queue_ms=(admitted - received) * 1000,
                time_to_first_token_ms=((first or done) - received) * 1000,
                total_ms=(done - received) * 1000,
            )
            yield broker_pb2.GenerateResponse(
                result=broker_pb2.GenerateResult(
                    finish_reason=_FINISH[outcome.finish_reason],
                    models_used=[model],
                    answer_model=model,
                    usage=broker_pb2.Usage(
                        prompt_tokens=outcome.prompt_tokens,
                        completion_tokens=outcome.completion_tokens,
                    ),
                    timings=timings,
                    strategy=broker_pb2.Strategy.KIND_SINGLE,
                )
            )
            child = metrics.child
            child(metrics.queue_wait, model).observe(admitted - received)
            child(metrics.ttft, model).observe((first or done) - received)
            child(metrics.latency, model).observe(done - received)
            child(metrics.tokens, model, "prompt").inc(outcome.prompt_tokens)
            child(metrics.tokens, model, "completion").inc(outcome.completion_tokens)
        except errors.RidgelineError as exc:
            code = status_of(exc).name
            metrics.child(metrics.errors, code, exc.kind).inc()
            raise
        except BaseException as exc:  # cancelled by the client, deadline, shutdown, or a bug
            code = (
                "CANCELLED"
                if isinstance(exc, GeneratorExit | asyncio.CancelledError)
                else "INTERNAL"
            )
            if code == "INTERNAL":
                metrics.child(metrics.errors, code, "internal").inc()
            raise
        finally:
            metrics.child(metrics.requests, model, code).inc()
            self.active -= 1
            if not self.active:
                self._idle.set()

    async def ListModels(
        self, request: broker_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> broker_pb2.ListModelsResponse:
        if isinstance(request, Malformed):
            request.check()
        self._refuse_when_draining()
        return broker_pb2.ListModelsResponse(
            models=[
                broker_pb2.ModelInfo(
                    name=backend.name,
                    backend=backend.kind,
                    role=backend.role,
                    context_length=backend.context_length,
                )
                for backend in sorted(self.backends.values(), key=lambda b: b.name)
            ],
            strategies=[broker_pb2.Strategy.KIND_SINGLE],
            default_model=self.default_model,
        )


def _peer_host(peer: str) -> str:
    """``ipv4:10.0.0.7:53124`` -> ``ipv4:10.0.0.7``: one device per host, not per connection."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer
