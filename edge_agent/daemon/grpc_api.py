"""The gRPC edge service (``ridgeline.v1.Edge``): what ``EdgeClient`` calls.

Thin: protobuf to :class:`RequestOptions` and back through :mod:`edge_agent.sdk.wire`.
Errors get their status from :mod:`ridgeline_core.status`, as the broker's do.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
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

log = logging.getLogger(__name__)


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
        write_stall_s: float = 30.0,
    ) -> None:
        self.write_stall_s = write_stall_s
        self._agent = agent
        self._dispatcher = dispatcher
        self._on_error = on_error

    # grpc.aio's writer API (a coroutine that writes) rather than the generated stub's
    # generator: only a write of our own can be bounded in time
    async def Ask(self, request: edge_pb2.AskRequest, context: Any) -> None:  # type: ignore[override]
        """The answer's events, each written within ``write_stall_s`` (a client that
        takes no data that long is cut off with CANCELLED and its generation cancelled,
        which frees its slot)."""
        try:
            messages = wire.messages_from_pb(request)
            job = await self._dispatcher.start(messages, options_of(request), live=request.live)
        except errors.RidgelineError as error:
            self._on_error(error.kind)
            await abort_with(context, error)
            return
        sent = False
        try:
            async for event in job:
                if not sent:  # headers apart (no flow control holds them), so that the
                    await context.send_initial_metadata(())  # status can follow a stuck write
                    sent = True
                await self._write(context, wire.event_to_pb(event))
        except errors.RidgelineError as error:
            if not isinstance(error, errors.RequestCancelledError):
                self._on_error(error.kind)
            await abort_with(context, error)
        finally:
            job.close()  # a client that left cancels the generation

    async def _write(self, context: Any, message: edge_pb2.AskEvent) -> None:
        """Write ``message``; RequestCancelledError when the client takes no data for
        ``write_stall_s``. The stuck write is left to gRPC (it fails when the call ends):
        cancelling it would leave the call unable to send its status."""
        write = asyncio.ensure_future(context.write(message))
        try:
            done, _ = await asyncio.wait({write}, timeout=self.write_stall_s)
        except asyncio.CancelledError:  # the client left: gRPC tears the call down
            write.cancel()
            raise
        if write in done:
            write.result()
            return
        write.add_done_callback(_consumed)
        log.warning(
            "a gRPC client took no data for %.3g s (daemon.write_stall_s): call "
            "ended, generation cancelled",
            self.write_stall_s,
        )
        raise errors.RequestCancelledError(
            f"the client took no data for {self.write_stall_s:.3g} s "
            "(daemon.write_stall_s): the answer was cancelled"
        )

    async def ListLocalModels(
        self, request: edge_pb2.ListLocalModelsRequest, context: Any
    ) -> edge_pb2.ListLocalModelsResponse:
        return wire.models_to_pb(self._agent().models())


def _consumed(write: asyncio.Future[None]) -> None:
    """Retrieve a stuck write's outcome (its failure is expected: the call has ended)."""
    if not write.cancelled():
        write.exception()


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
