"""The gRPC edge service (``ridgeline.v1.Edge``): what ``EdgeClient`` calls.

Thin: protobuf to :class:`RequestOptions` and back through :mod:`edge_agent.sdk.wire`.
Errors get their status from :mod:`ridgeline_core.status`, as the broker's do.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from ridgeline.v1 import edge_pb2, edge_pb2_grpc
from ridgeline_core import errors
from ridgeline_core.status import abort

from ..agent import EdgeAgent
from ..request.options import RequestOptions
from ..sdk import wire
from .dispatch import Dispatcher

__all__ = ["EdgeService", "KeyInterceptor", "abort_with"]

SERVICE_NAME = "ridgeline.v1.Edge"


async def abort_with(context: Any, error: errors.RidgelineError) -> None:
    """End the call with the error's status (the one the broker gives it too); the
    trailing metadata names its kind (and the retry delay), so the client raises the same
    error class."""
    await abort(context, error)


def options_of(request: edge_pb2.AskRequest) -> RequestOptions:
    """The request's options, parsed and checked like every entry point's."""
    return wire.options_from_pb(request)


class EdgeService(edge_pb2_grpc.EdgeServicer):
    def __init__(
        self,
        agent: Callable[[], EdgeAgent],
        dispatcher: Dispatcher,
        on_error: Callable[[str], None],
    ) -> None:
        self._agent = agent
        self._dispatcher = dispatcher
        self._on_error = on_error

    async def Ask(
        self, request: edge_pb2.AskRequest, context: Any
    ) -> AsyncIterator[edge_pb2.AskEvent]:
        try:
            messages = wire.messages_from_pb(request)
            job = await self._dispatcher.start(messages, options_of(request), live=request.live)
        except errors.RidgelineError as error:
            self._on_error(error.kind)
            await abort_with(context, error)
            return
        try:
            async for event in job:
                yield wire.event_to_pb(event)
        except errors.RidgelineError as error:
            if not isinstance(error, errors.RequestCancelledError):
                self._on_error(error.kind)
            await abort_with(context, error)
        finally:
            job.close()  # a client that left cancels the generation

    async def ListLocalModels(
        self, request: edge_pb2.ListLocalModelsRequest, context: Any
    ) -> edge_pb2.ListLocalModelsResponse:
        return wire.models_to_pb(self._agent().models())


class KeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Requires ``authorization: Bearer KEY`` on every call except health checks."""

    def __init__(self, key: Callable[[], str | None]) -> None:
        self._key = key

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        key = self._key()
        if key is None or details.method.startswith("/grpc.health.v1.Health/"):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        scheme, _, token = str(given).partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), key.encode()):
            return await continuation(details)
        handler = await continuation(details)
        return _refuse(handler)


def _refuse(handler: Any) -> Any:
    async def unary(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")

    async def stream(request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong API key")
        yield  # pragma: no cover

    if handler is None:
        return None
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(
            stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.unary_unary_rpc_method_handler(
        unary,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
