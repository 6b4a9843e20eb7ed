"""Server interceptors: device authentication, and domain errors to status codes.

``AuthInterceptor`` checks the bearer token of every call except health and
reflection, and records the device for the service; health and reflection requests that
do not parse are answered INVALID_ARGUMENT (:mod:`.lenient`). ``ErrorInterceptor`` turns
a :class:`RidgelineError` into its status through :mod:`ridgeline_core.status` (the
translation the edge daemon and the clients share); an unexpected exception
is logged with its traceback and answered INTERNAL with a request reference,
never with the traceback itself.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from ridgeline_core import errors
from ridgeline_core.status import abort, to_status

from .auth import TokenTable, current_device
from .lenient import refusing_malformed

__all__ = ["AuthInterceptor", "ErrorInterceptor", "status_of"]

log = logging.getLogger("ridgeline.broker")

_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_of(error: BaseException) -> grpc.StatusCode:
    """The code the broker answers ``error`` with (INTERNAL for anything not ours)."""
    if isinstance(error, errors.RidgelineError):
        return to_status(error).code
    return grpc.StatusCode.INTERNAL


def _trailers(error: errors.RidgelineError) -> tuple[tuple[str, str], ...]:
    return to_status(error).trailing


async def _abort(context: grpc.aio.ServicerContext, error: BaseException) -> None:
    if isinstance(error, errors.RidgelineError):
        await abort(context, error)
    reference = uuid.uuid4().hex[:12]
    log.error("internal error (reference %s)", reference, exc_info=error)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"internal error in the broker (reference {reference}; details in its log)",
    )


def _wrap(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_stream is not None:
        if inspect.iscoroutinefunction(handler.unary_stream):
            return handler._replace(unary_stream=_guarded(handler.unary_stream))
        return handler._replace(unary_stream=_guarded_stream(handler.unary_stream))
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=_guarded(handler.unary_unary))
    return handler


def _guarded(inner: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A unary handler, or a streaming one that writes with ``context.write``."""

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await inner(request, context)
        except Exception as exc:
            await _abort(context, exc)

    return guarded


def _guarded_stream(
    inner: Callable[..., AsyncGenerator[Any, None]],
) -> Callable[..., AsyncIterator[Any]]:
    """A streaming handler written as an async generator."""

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async with contextlib.aclosing(inner(request, context)) as stream:
                async for item in stream:
                    yield item
        except Exception as exc:
            await _abort(context, exc)

    return guarded


Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]]


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self) -> None:
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        cached = self._wrapped.get(id(handler))
        if cached is None or cached[0] is not handler:
            if details.method.startswith(_PUBLIC_PREFIXES):  # grpc's servicers
                wrapped = refusing_malformed(handler, details.method.rsplit("/", 1)[-1])
            else:
                wrapped = _wrap(handler)
            cached = self._wrapped[id(handler)] = (handler, wrapped)
        return cached[1]


def _refusal(handler: grpc.RpcMethodHandler, error: errors.RidgelineError) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await _abort(context, error)

    if handler.unary_stream is not None:
        return handler._replace(unary_stream=refuse)
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=refuse)
    return handler


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(
        self,
        tokens: TokenTable,
        on_refused: Callable[[errors.RidgelineError], None] = lambda _: None,
    ) -> None:
        self._tokens = tokens
        self._on_refused = on_refused

    async def intercept_service(
        self, continuation: Continuation, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(_PUBLIC_PREFIXES):
            return await continuation(details)
        authorization = None
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                authorization = value
                break
        try:
            device = self._tokens.authenticate(authorization)
        except errors.UnauthenticatedError as exc:
            self._on_refused(exc)
            handler = await continuation(details)
            return None if handler is None else _refusal(handler, exc)
        current_device.set(device)  # the call's task runs its handler in this context
        return await continuation(details)
