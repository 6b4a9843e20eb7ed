"""The HTTP API's one middleware: who may call (API key, loopback Host), what a body must
be (JSON), and every error as an OpenAI error body with its precise status.

aiohttp is imported when the app is built, not with this module (it is an extra).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ridgeline_core import errors

from . import openai_api
from .metrics import DaemonMetrics

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["INTERNAL", "guard", "read_json"]

log = logging.getLogger("edge_agent.daemon.http_api")

Handler = Callable[[Any], Awaitable[Any]]

INTERNAL = {
    "error": {
        "message": "internal error (see the daemon's log)",
        "type": "server_error",
        "param": None,
        "code": "internal",
    }
}

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def guard(
    metrics: DaemonMetrics,
    api_key: Callable[[], str | None],
    max_request_bytes: int,
    loopback: bool,
) -> Any:
    """The middleware. ``loopback``: the daemon listens on a loopback address only; without
    an API key it then also refuses requests whose Host header names another machine (DNS
    rebinding: a web page reaching 127.0.0.1 through its own name)."""
    from aiohttp import web

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request["started"] = time.perf_counter()
        try:
            _admit(request, api_key, loopback)
            response: web.StreamResponse = await handler(request)
            return response
        except errors.RidgelineError as error:
            if not isinstance(error, errors.RequestCancelledError):
                metrics.record_error(error.kind)
            refusal: web.Response = error_response(error)
            return refusal
        except web.HTTPException as http:
            refused = _refusal(request, http, max_request_bytes)
            if refused is None:
                raise
            return web.json_response(openai_api.error_body(refused), status=http.status)
        except Exception:  # a bug: say so in the API's format, keep the traceback in the log
            log.exception("%s %s failed", request.method, request.path)
            metrics.record_error("internal")
            return web.json_response(INTERNAL, status=500)

    return middleware


def error_response(error: errors.RidgelineError) -> Any:
    from aiohttp import web

    status, _ = openai_api.status_of(error)
    headers = {}
    if isinstance(error, errors.OverloadedError):
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    return web.json_response(openai_api.error_body(error), status=status, headers=headers)


async def read_json(request: web.Request) -> Any:
    """The body as JSON (without NaN and Infinity, which Python's parser would accept)."""
    try:
        return await request.json(loads=_strict_json)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc


def _admit(request: web.Request, api_key: Callable[[], str | None], loopback: bool) -> None:
    if request.path != "/health":
        key = api_key()
        _check_key(request, key)
        if key is None and loopback:
            _check_host(request)
    if request.method == "POST" and request.content_type != "application/json":
        raise errors.InvalidRequestError(
            f"Content-Type must be application/json, not {request.content_type!r}"
        )


def _refusal(request: Any, http: Any, max_request_bytes: int) -> errors.RidgelineError | None:
    if http.status == 413:
        return errors.InvalidRequestError(
            f"the request body is over daemon.max_request_bytes ({max_request_bytes})"
        )
    if http.status in (404, 405):
        return errors.UnsupportedError(f"{request.method} {request.path}: {http.reason}")
    return None


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _check_host(request: Any) -> None:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    if host.lower() not in _LOOPBACK_HOSTS and not host.startswith("127."):
        raise errors.PermissionDeniedError(
            f"Host {request.host!r} is not this machine's loopback name; the daemon serves "
            "loopback clients only unless it has an API key"
        )


def _check_key(request: Any, key: str | None) -> None:
    if key is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise errors.UnauthenticatedError(
            "missing or wrong API key: send 'Authorization: Bearer <daemon.api_key>'"
        )
