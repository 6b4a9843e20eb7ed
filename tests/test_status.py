"""One error seam: each error class carries its gRPC and HTTP status, and one translation pair
(ridgeline_core.status) serves the broker, the edge daemon and the clients."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from cloud_broker.interceptors import status_of
from edge_agent.daemon import openai_api
from edge_agent.daemon.grpc_api import abort_with
from ridgeline_core import errors
from ridgeline_core.status import ERROR_KIND_KEY, from_rpc, to_status


def every_class() -> list[type[errors.RidgelineError]]:
    """The documented tree (subclasses elsewhere share a kind and come back as its class)."""
    found, pending = [], [errors.RidgelineError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if cls.__module__ == errors.__name__]


def instance(cls: type[errors.RidgelineError]) -> errors.RidgelineError:
    if issubclass(cls, errors.OverloadedError):
        return cls(f"a {cls.__name__}", 2.5)
    return cls(f"a {cls.__name__}", param="field")


class Failed(grpc.RpcError):
    """A failed call as the client sees it."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing


@pytest.mark.parametrize("cls", every_class(), ids=lambda cls: cls.__name__)
def test_every_class_has_real_statuses_and_comes_back_as_itself(
    cls: type[errors.RidgelineError],
) -> None:
    assert cls.grpc_status in grpc.StatusCode.__members__
    assert 400 <= cls.http_status <= 599
    error = instance(cls)
    status = to_status(error)
    assert status.code.name == cls.grpc_status
    assert (ERROR_KIND_KEY, cls.kind) in status.trailing
    back = from_rpc(Failed(status.code, status.details, status.trailing))
    assert type(back) is cls
    assert str(back) == str(error)
    assert back.status == cls.grpc_status
    if isinstance(error, errors.OverloadedError):
        assert back.retry_after_s == pytest.approx(2.5)


def test_the_broker_and_the_edge_daemon_agree() -> None:
    """An unimplemented strategy was UNIMPLEMENTED from the broker and INVALID_ARGUMENT from
    the edge daemon; both now ask the class."""
    seen: list[grpc.StatusCode] = []

    class Context:
        async def abort(self, code: grpc.StatusCode, details: str, **_: Any) -> None:
            seen.append(code)

    for cls in every_class():
        error = instance(cls)
        asyncio.run(abort_with(Context(), error))
        assert seen[-1] == status_of(error), cls
    assert status_of(errors.UnsupportedError("no")) == grpc.StatusCode.UNIMPLEMENTED
    assert status_of(ValueError("a bug")) == grpc.StatusCode.INTERNAL


def test_http_statuses_and_openai_error_bodies_come_from_the_class() -> None:
    body = openai_api.error_body(errors.InvalidRequestError("bad", param="messages"))
    assert body["error"]["param"] == "messages"
    assert openai_api.status_of(errors.ModelNotPulledError("pull it")) == (
        404,
        "invalid_request_error",
    )
    assert openai_api.status_of(errors.UnsupportedError("n must be 1"))[0] == 400
    assert openai_api.status_of(errors.QueueFullError("busy", 1.0)) == (503, "server_error")


def test_a_status_from_elsewhere_maps_by_its_code() -> None:
    """No kind in the trailers (a proxy, a closed channel): the code decides."""
    cases = {
        grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidRequestError,
        grpc.StatusCode.NOT_FOUND: errors.UnknownModelError,
        grpc.StatusCode.RESOURCE_EXHAUSTED: errors.OverloadedError,
        grpc.StatusCode.UNIMPLEMENTED: errors.UnsupportedError,
        grpc.StatusCode.DEADLINE_EXCEEDED: errors.UnavailableError,
        grpc.StatusCode.INTERNAL: errors.UnavailableError,  # a broker bug: an outage to us
    }
    for code, cls in cases.items():
        back = from_rpc(Failed(code, "from a proxy"))
        assert type(back) is cls and back.status == code.name


def test_the_constructor_is_uniform() -> None:
    error = errors.PromptTooLongError.for_prompt(5000, 2048)
    assert (error.prompt_tokens, error.context_length) == (5000, 2048)
    assert "context holds 2048" in str(error)
    missing = errors.MissingDependencyError.for_module("aiohttp", "edge")
    assert str(missing) == "aiohttp is not installed: pip install 'ridgeline[edge]'"
    assert errors.RateLimitedError("slow down", retry_after_s=3.0).retry_after_s == 3.0
    assert errors.UnavailableError("down", retry_after_s=0.5).retry_after_s == 0.5
