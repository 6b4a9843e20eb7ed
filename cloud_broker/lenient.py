"""Requests that do not parse, answered INVALID_ARGUMENT by the services that are not
ours (health, reflection), as the broker's own are (:func:`.wire.lenient`).

grpc parses a request before the servicer runs; bytes that do not parse make it log a
traceback and answer UNKNOWN, so any client could fill the log. Here a unary request that
does not parse reaches the servicer as :class:`.wire.Malformed` and is answered at once;
a streamed one raises InvalidRequestError where the servicer reads it, answered the same.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import grpc.aio
from google.protobuf.message import DecodeError

from ridgeline_core import errors
from ridgeline_core.status import abort

from .wire import Malformed

__all__ = ["refusing_malformed"]


def refusing_malformed(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """``handler`` with requests that do not parse answered INVALID_ARGUMENT (handlers
    of a shape these services do not use are returned as they are)."""
    parse = handler.request_deserializer
    if parse is None:
        return handler
    if not handler.request_streaming:
        name = "unary_stream" if handler.response_streaming else "unary_unary"
        behaviour = getattr(handler, name)
        if not inspect.iscoroutinefunction(behaviour):
            return handler
        return handler._replace(
            request_deserializer=_standing_in(parse, method), **{name: _checked(behaviour)}
        )
    if handler.stream_stream is not None and inspect.isasyncgenfunction(handler.stream_stream):
        return handler._replace(
            request_deserializer=_raising(parse, method),
            stream_stream=_answered(handler.stream_stream),
        )
    return handler


def _standing_in(parse: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def lenient(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(method, exc)

    return lenient


def _checked(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await abort(context, request.error())
        return await behaviour(request, context)

    return checked


def _raising(parse: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def strict(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            raise Malformed(method, exc).error() from None

    return strict


def _answered(behaviour: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
    async def answered(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        try:
            async for response in behaviour(requests, context):
                yield response
        except errors.InvalidRequestError as exc:
            await abort(context, exc)

    return answered
