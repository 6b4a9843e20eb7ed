"""The HTTP API's one middleware: who may call (API key, loopback Host), what a body must
be (JSON), and every error as an OpenAI error body with its precise status.

aiohttp is imported when the app is built, not with this module (it is an extra).
"""

from __future__ import annotations

import contextvars
import hmac
import ipaddress
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

__all__ = ["INTERNAL", "guard", "read_json", "started"]

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

# when the middleware let the request in (a context variable: the handler runs in the
# middleware's task; aiohttp warns about plain string keys in the request's storage)
_STARTED: contextvars.ContextVar[float] = contextvars.ContextVar("started")


def started() -> float:
    """The ``perf_counter()`` at which the current request reached the middleware."""
    return _STARTED.get()


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
        _STARTED.set(time.perf_counter())
        try:
            _admit(request, api_key, loopback)
            response: web.StreamResponse = await handler(request)
            return response
        except errors.RidgelineError as error:
            if not isinstance(error, errors.RequestCancelledError):
                metrics.record_error(error.kind)
            refusal: web.Response = error_response(error, request.path)
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


def error_response(error: errors.RidgelineError, path: str = "") -> Any:
    """The error as an OpenAI error response (``path``: the endpoint, for its wording)."""
    from aiohttp import web

    status, _ = openai_api.status_of(error)
    headers = {}
    if isinstance(error, errors.OverloadedError):
        headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
    noun = "prompt" if path == "/v1/completions" else "messages"
    body = openai_api.error_body(error, prompt_noun=noun)
    return web.json_response(body, status=status, headers=headers)


async def read_json(request: web.Request) -> Any:
    """The body as JSON (without NaN and Infinity, which Python's parser would accept),
    nested at most :data:`MAX_DEPTH` deep, its strings all text (no lone surrogate)."""
    try:
        value = await request.json(loads=_strict_json)
    except RecursionError:
        raise errors.InvalidRequestError(_TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    _check_parsed(value)
    return value


MAX_DEPTH = 64  # request bodies nest a handful of levels; deeper is a stack-exhaustion probe
_TOO_DEEP = f"the request body is nested too deeply (at most {MAX_DEPTH} levels)"


def _check_parsed(value: Any) -> None:
    """Walk the parsed body (without recursion): depth and strings, keys included."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, list | dict):
            if depth > MAX_DEPTH:
                raise errors.InvalidRequestError(_TOO_DEEP)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError as exc:  # JSON's \ud800 escapes a half of a character
        code = ord(text[exc.start])
        raise errors.InvalidRequestError(
            f"the request body has a lone surrogate (\\u{code:04x}) in a string: a "
            "character outside the Basic Multilingual Plane is a pair of \\u escapes"
        ) from None


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
    if not is_loopback_host(request.host):
        raise errors.PermissionDeniedError(
            f"Host {request.host!r} is not this machine's loopback name; the daemon serves "
            "loopback clients only unless it has an API key"
        )


def is_loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback: ``localhost``, a literal
    127.0.0.0/8 address or ``[::1]``, each with an optional port. Only literals: a name
    that merely starts like one (``127.0.0.1.attacker.example``) resolves wherever its
    owner wants, which is what DNS rebinding uses."""
    name, colon, port = host.rpartition(":") if ":" in host else (host, "", "")
    if name.startswith("[") and not name.endswith("]"):  # "[::1]" without a port
        name, colon, port = host, "", ""
    if colon and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        return False
    if name.startswith("[") and name.endswith("]"):
        return _loopback_address(name[1:-1], version=6)
    name = name.lower().removesuffix(".")
    return name == "localhost" or _loopback_address(name, version=4)


def _loopback_address(text: str, *, version: int) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return address.version == version and address.is_loopback


def _check_key(request: Any, key: str | None) -> None:
    if key is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    try:
        token = given.strip().encode()
    except UnicodeEncodeError:  # bytes that are not UTF-8 (aiohttp escapes them): not the key
        token = b""
    if scheme.lower() != "bearer" or not hmac.compare_digest(token, key.encode()):
        raise errors.UnauthenticatedError(
            "missing or wrong API key: send 'Authorization: Bearer <daemon.api_key>'"
        )
