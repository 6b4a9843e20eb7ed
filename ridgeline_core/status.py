"""Errors across gRPC, both ways, in one place: the broker, the edge daemon and the clients.

:func:`to_status` gives a :class:`~ridgeline_core.errors.RidgelineError`'s status code (the
class's ``grpc_status``), its message as details, and trailing metadata naming its ``kind``
(and, for an overloaded service, the retry delay). :func:`from_rpc` turns a failed call back
into the same class, with the same message and delay, and the status name in ``.status``;
a status from something that is not Ridgeline (a proxy, a closed channel) maps by code.
:func:`abort` ends a grpc.aio call with an error.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import grpc

from . import errors
from .transport import RETRY_AFTER_KEY

__all__ = ["ERROR_KIND_KEY", "Status", "abort", "error_class", "from_rpc", "to_status"]

ERROR_KIND_KEY = "ridgeline-error-kind"  # trailing metadata: the error's kind


@dataclass(frozen=True)
class Status:
    code: grpc.StatusCode
    details: str
    trailing: tuple[tuple[str, str], ...]


def to_status(error: errors.RidgelineError) -> Status:
    trailing: tuple[tuple[str, str], ...] = ((ERROR_KIND_KEY, error.kind),)
    if isinstance(error, errors.OverloadedError):
        retry_ms = str(max(1, round(error.retry_after_s * 1000)))
        trailing += ((RETRY_AFTER_KEY, retry_ms),)
    return Status(grpc.StatusCode[error.grpc_status], str(error), trailing)


async def abort(context: Any, error: errors.RidgelineError) -> None:
    """End a grpc.aio call with ``error``'s status, details and trailing metadata."""
    status = to_status(error)
    await context.abort(status.code, status.details, trailing_metadata=status.trailing)


def from_rpc(error: grpc.RpcError) -> errors.RidgelineError:
    """The domain error a failed call stands for, with ``status`` set to its gRPC code."""
    call: Any = error
    code: grpc.StatusCode = call.code()
    details: str = call.details() or code.name.lower()
    trailing = {key: value for key, value in (call.trailing_metadata() or ())}
    cls = _by_kind().get(str(trailing.get(ERROR_KIND_KEY, ""))) or error_class(code)
    result: errors.RidgelineError
    if issubclass(cls, errors.OverloadedError):
        result = cls(details, _retry_after_s(trailing))
    else:
        result = cls(details)
    result.status = code.name
    return result


def error_class(code: grpc.StatusCode) -> type[errors.RidgelineError]:
    """The class a bare status code stands for: the most general one that answers with it
    (UNAVAILABLE for the codes no Ridgeline error uses: a transport failure)."""
    return _by_code().get(code.name, errors.UnavailableError)


def _retry_after_s(trailing: dict[str, Any]) -> float:
    try:
        return int(trailing.get(RETRY_AFTER_KEY, "1000")) / 1000
    except ValueError:
        return 1.0


def _classes() -> list[type[errors.RidgelineError]]:
    """Every error class, each before its subclasses."""
    found: list[type[errors.RidgelineError]] = []
    pending: list[type[errors.RidgelineError]] = [errors.RidgelineError]
    while pending:
        cls = pending.pop(0)
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@functools.cache
def _by_kind() -> dict[str, type[errors.RidgelineError]]:
    return {cls.kind: cls for cls in reversed(_classes())}


@functools.cache
def _by_code() -> dict[str, type[errors.RidgelineError]]:
    by_code: dict[str, type[errors.RidgelineError]] = {}
    for cls in _classes():
        # INTERNAL without a kind: not ours to name; a bare DEADLINE_EXCEEDED is the
        # caller's own deadline (a stalled reader is told so with its kind); a bare
        # NOT_FOUND is a model (an unknown collection always comes with its kind)
        if cls not in (
            errors.RidgelineError,
            errors.SlowClientError,
            errors.UnknownCollectionError,
        ):
            by_code.setdefault(cls.grpc_status, cls)
    by_code.pop("INTERNAL", None)
    return by_code
