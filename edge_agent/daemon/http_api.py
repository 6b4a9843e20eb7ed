"""The OpenAI-compatible HTTP API, ``/v1/embeddings``, ``/v1/classify``, ``/health``,
``/metrics`` and ``/openapi.json`` (aiohttp); ``/v1/responses`` is :mod:`.responses_http`.

Handlers are thin: parse the declared body (:mod:`.bodies` through :mod:`.openai_api` and
:mod:`.specialist_api`), run through the :class:`Dispatcher`, format the answer. Who may
call and every error's status are handled once, in :mod:`.http_guard`; streaming answers
are :mod:`.http_sse`. A client that disconnects cancels its request (aiohttp cancels the
handler; the job's token stops the generation at its next token).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ridgeline_core import errors

from ..agent import EdgeAgent
from . import openai_api, openapi, specialist_api
from .dispatch import Dispatcher
from .http_guard import guard, read_json, started
from .http_sse import stream_answer
from .metrics import DaemonMetrics
from .responses_http import ResponsesRoute

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["build_app"]


def build_app(
    agent: Callable[[], EdgeAgent],
    dispatcher: Dispatcher,
    metrics: DaemonMetrics,
    api_key: Callable[[], str | None],
    max_request_bytes: int,
    loopback: bool,
    *,
    write_stall_s: float = 30.0,
) -> Any:
    """The aiohttp application (see :func:`.http_guard.guard` for ``loopback``;
    ``write_stall_s``: :mod:`.http_sse`)."""
    from aiohttp import web

    middleware = guard(metrics, api_key, max_request_bytes, loopback)
    app = web.Application(middlewares=[middleware], client_max_size=max_request_bytes)
    openai = OpenAIRoutes(agent, dispatcher, metrics)
    openai.write_stall_s = write_stall_s
    own = RidgelineRoutes(agent, dispatcher, metrics)
    app.router.add_post("/v1/chat/completions", openai.chat_completions)
    app.router.add_post("/v1/completions", openai.completions)
    app.router.add_get("/v1/models", openai.models)
    app.router.add_get("/v1/models/{name}", openai.model)
    responses = ResponsesRoute(agent, dispatcher, metrics, write_stall_s)
    app.router.add_post("/v1/responses", responses.create)
    app.router.add_post("/v1/embeddings", own.embeddings)
    app.router.add_post("/v1/classify", own.classify)
    app.router.add_get("/health", own.health)
    app.router.add_get("/metrics", own.prometheus)
    app.router.add_get("/openapi.json", openapi.serve)
    return app


class _Routes:
    def __init__(
        self, agent: Callable[[], EdgeAgent], dispatcher: Dispatcher, metrics: DaemonMetrics
    ) -> None:
        self.agent = agent  # the current agent (a reload replaces it)
        self.dispatcher = dispatcher
        self.metrics = metrics


class OpenAIRoutes(_Routes):
    """OpenAI's completions and models endpoints."""

    write_stall_s = 30.0  # how long a streamed answer waits for its client to take data

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        call = openai_api.parse_chat(await read_json(request), request.headers, self._roles())
        return await self._answer(request, call, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        call = openai_api.parse_completion(await read_json(request), request.headers, self._roles())
        return await self._answer(request, call, chat=False)

    async def models(self, request: web.Request) -> web.Response:
        from aiohttp import web

        return web.json_response(openai_api.models_response(self.agent().models()))

    async def model(self, request: web.Request) -> web.Response:
        from aiohttp import web

        name = request.match_info["name"]
        found = {m.name: m for m in self.agent().models()}.get(name)
        if found is None:
            raise errors.UnknownModelError(f"The model {name!r} does not exist")
        return web.json_response(openai_api.models_response([found])["data"][0])

    def _roles(self) -> dict[str, str]:
        return {m.name: m.role for m in self.agent().catalog}  # no file checks per request

    async def _answer(
        self, request: web.Request, call: openai_api.Call, *, chat: bool
    ) -> web.StreamResponse:
        from aiohttp import web

        job = await self.dispatcher.start(
            call.prompt, call.options, text=call.stream, decided=call.stream
        )
        if call.stream:
            settings = self.agent().settings
            model = call.options.model or settings.models.default
            return await stream_answer(
                request,
                call,
                job,
                chat=chat,
                model=(model, settings.broker.model),
                metrics=self.metrics,
                stall_s=self.write_stall_s,
            )
        result = await job.answer()
        body = (openai_api.chat_response if chat else openai_api.completion_response)(call, result)
        headers = openai_api.decision_headers(result)
        # the daemon's time for this request and the pipeline's part (browsers' dev tools
        # and curl -v show it; benchmarks/daemon.py splits the overhead with it)
        handled = (time.perf_counter() - started()) * 1000
        pipeline = result.decision.timings.total_ms
        headers["Server-Timing"] = f"daemon;dur={handled:.2f}, pipeline;dur={pipeline:.2f}"
        return web.json_response(body, headers=headers)


class RidgelineRoutes(_Routes):
    """The ONNX endpoints, health and metrics."""

    async def embeddings(self, request: web.Request) -> web.Response:
        from aiohttp import web

        call = specialist_api.parse_embeddings(await read_json(request))
        a = self.agent()
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

    async def classify(self, request: web.Request) -> web.Response:
        from aiohttp import web

        call = specialist_api.parse_classify(await read_json(request))
        agent = self.agent()
        result = await asyncio.to_thread(agent.classify, call.specialist, call.text, call.options)
        return web.json_response(result.to_dict())

    async def health(self, request: web.Request) -> web.Response:
        from aiohttp import web

        a, in_flight = self.agent(), self.dispatcher.in_flight
        admission = in_flight.admission
        body = {
            "status": "draining" if in_flight.draining else "ok",
            "models_loaded": a.pool.loaded(),
            "running": admission.running,
            "queued": admission.waiting,
            "slots": admission.slots,
            "threshold": a.decide_threshold().value,
        }
        return web.json_response(body, status=503 if in_flight.draining else 200)

    async def prometheus(self, request: web.Request) -> web.Response:
        from aiohttp import web

        text, content_type = self.metrics.render()
        response = web.Response(body=text)
        response.headers["Content-Type"] = content_type
        return response
