"""The OpenAI-compatible HTTP API, ``/v1/classify``, ``/health`` and ``/metrics`` (aiohttp).

Handlers are thin: parse with :mod:`.openai_api`, run through the :class:`Dispatcher`,
format the answer. Errors become OpenAI error bodies with precise statuses in one
middleware. A client that disconnects cancels its request (aiohttp cancels the handler;
the job's token stops the generation at its next token).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ridgeline_core import errors

from ..agent import EdgeAgent
from ..request.events import Done, TextChunk
from . import openai_api, specialist_api
from .dispatch import Dispatcher, Job
from .metrics import DaemonMetrics

__all__ = ["build_app"]

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any]]


def build_app(
    agent: Callable[[], EdgeAgent],
    dispatcher: Dispatcher,
    metrics: DaemonMetrics,
    api_key: Callable[[], str | None],
    max_request_bytes: int,
    loopback: bool,
) -> Any:
    """The aiohttp application. ``loopback``: the daemon listens on a loopback address
    only; without an API key it then also refuses requests whose Host header names
    another machine (DNS rebinding: a web page reaching 127.0.0.1 through its own name)."""
    from aiohttp import web

    def error_response(error: errors.RidgelineError) -> web.Response:
        status, _ = openai_api.status_of(error)
        headers = {}
        if isinstance(error, errors.OverloadedError):
            headers["Retry-After"] = str(max(1, round(error.retry_after_s)))
        return web.json_response(openai_api.error_body(error), status=status, headers=headers)

    @web.middleware
    async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        request["started"] = time.perf_counter()
        try:
            if request.path != "/health":
                key = api_key()
                _check_key(request, key)
                if key is None and loopback:
                    _check_host(request)
            if request.method == "POST" and request.content_type != "application/json":
                raise errors.InvalidRequestError(
                    f"Content-Type must be application/json, not {request.content_type!r}"
                )
            response: web.StreamResponse = await handler(request)
            return response
        except errors.RidgelineError as error:
            if not isinstance(error, errors.RequestCancelledError):
                metrics.record_error(error.kind)
            return error_response(error)
        except web.HTTPException as http:
            refused: errors.RidgelineError
            if http.status == 413:
                refused = errors.InvalidRequestError(
                    f"the request body is over daemon.max_request_bytes ({max_request_bytes})"
                )
            elif http.status in (404, 405):
                refused = errors.UnsupportedError(f"{request.method} {request.path}: {http.reason}")
            else:
                raise
            return web.json_response(openai_api.error_body(refused), status=http.status)
        except Exception:  # a bug: say so in the API's format, keep the traceback in the log
            log.exception("%s %s failed", request.method, request.path)
            metrics.record_error("internal")
            return web.json_response(_INTERNAL, status=500)

    async def read_json(request: web.Request) -> Any:
        try:
            return await request.json(loads=_strict_json)
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc

    def roles() -> dict[str, str]:
        return {m.name: m.role for m in agent().catalog}  # no file checks per request

    async def answer(request: web.Request, call: openai_api.Call, chat: bool) -> web.StreamResponse:
        job = await dispatcher.start(call.prompt, call.options, text=call.stream)
        if call.stream:
            return await stream(request, call, job, chat)
        result = await job.answer()
        body = (openai_api.chat_response if chat else openai_api.completion_response)(call, result)
        headers = openai_api.decision_headers(result)
        # the daemon's time for this request and the pipeline's part (browsers' dev tools
        # and curl -v show it; benchmarks/daemon.py splits the overhead with it)
        handled = (time.perf_counter() - request["started"]) * 1000
        pipeline = result.decision.timings.total_ms
        headers["Server-Timing"] = f"daemon;dur={handled:.2f}, pipeline;dur={pipeline:.2f}"
        return web.json_response(body, headers=headers)

    async def stream(
        request: web.Request, call: openai_api.Call, job: Job, chat: bool
    ) -> web.StreamResponse:
        """SSE. Headers go out with the first event, so an error before it (the model is
        not pulled, its file fails verification) still gets its own status."""
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        model = call.options.model or agent().settings.models.default

        async def send(data: dict[str, Any]) -> None:
            if not response.prepared:
                await response.prepare(request)
                if chat:
                    opening = openai_api.chat_chunk(call, model, role=True)
                    await response.write(b"data: " + json.dumps(opening).encode() + b"\n\n")
            await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")

        try:
            async for event in job:
                if isinstance(event, TextChunk):
                    if chat:
                        await send(openai_api.chat_chunk(call, model, text=event.text))
                    else:
                        await send(openai_api.completion_chunk(call, model, text=event.text))
                elif isinstance(event, Done):
                    if chat:
                        await send(openai_api.chat_chunk(call, model, answer=event.answer))
                    else:
                        await send(openai_api.completion_chunk(call, model, answer=event.answer))
                    if call.include_usage:
                        await send(openai_api.usage_chunk(call, event.answer, chat))
        except errors.RidgelineError as error:
            if not response.prepared:
                raise  # nothing sent yet: a plain error response with its status
            metrics.record_error(error.kind)
            await send(openai_api.error_body(error))  # headers are gone: say it in the stream
        except Exception:
            if not response.prepared:
                raise
            log.exception("streaming %s failed", request.path)
            metrics.record_error("internal")
            await send(_INTERNAL)
        finally:
            job.close()  # a client that left mid-stream cancels the generation
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        call = openai_api.parse_chat(await read_json(request), request.headers, roles())
        return await answer(request, call, chat=True)

    async def completions(request: web.Request) -> web.StreamResponse:
        call = openai_api.parse_completion(await read_json(request), request.headers, roles())
        return await answer(request, call, chat=False)

    async def models(request: web.Request) -> web.Response:
        return web.json_response(openai_api.models_response(agent().models()))

    async def model(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = {m.name: m for m in agent().models()}.get(name)
        if found is None:
            raise errors.UnknownModelError(f"The model {name!r} does not exist")
        return web.json_response(openai_api.models_response([found])["data"][0])

    async def embeddings(request: web.Request) -> web.Response:
        call = specialist_api.parse_embeddings(await read_json(request))
        a = agent()
        name = a.embedder.name
        if call.model not in openai_api.DEFAULT_MODEL_ALIASES and call.model != name:
            try:
                a.catalog.get(call.model)  # unknown: 404 model_not_found
            except errors.ManifestError as exc:  # a path-like name: the request is wrong
                raise errors.InvalidRequestError(str(exc)) from None
            raise errors.UnsupportedError(
                f"{call.model} is not the daemon's embedding model; it serves {name} "
                "(embeddings.model)"
            )
        # ONNX Runtime releases the GIL: off the event loop, on a worker thread
        vectors, tokens = await asyncio.to_thread(a.embedder.embed_counted, call.texts)
        return web.json_response(
            specialist_api.embeddings_response(name, vectors, tokens, call.encoding_format)
        )

    async def classify(request: web.Request) -> web.Response:
        call = specialist_api.parse_classify(await read_json(request))
        result = await asyncio.to_thread(agent().classify, call.specialist, call.text, call.options)
        return web.json_response(result.to_dict())

    async def health(request: web.Request) -> web.Response:
        a = agent()
        admission = dispatcher.admission
        body = {
            "status": "draining" if dispatcher.draining else "ok",
            "models_loaded": a.pool.loaded(),
            "running": admission.running,
            "queued": admission.waiting,
            "slots": admission.slots,
            "threshold": a.decide_threshold().value,
        }
        return web.json_response(body, status=503 if dispatcher.draining else 200)

    async def prometheus(request: web.Request) -> web.Response:
        text, content_type = metrics.render()
        response = web.Response(body=text)
        response.headers["Content-Type"] = content_type
        return response

    app = web.Application(middlewares=[errors_and_auth], client_max_size=max_request_bytes)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/classify", classify)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{name}", model)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    return app


def _strict_json(text: str) -> Any:
    """JSON without NaN and Infinity, which Python's parser would otherwise accept."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


_INTERNAL = {
    "error": {
        "message": "internal error (see the daemon's log)",
        "type": "server_error",
        "param": None,
        "code": "internal",
    }
}

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


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
