"""``POST /v1/responses``: the Responses API's handler and its server-sent events.

The request runs through the :class:`~.dispatch.Dispatcher` like a chat completion, and
errors go through the same guard (:mod:`.http_guard`). A stream sends OpenAI's semantic
events, each with its ``event:`` name and a ``sequence_number``; it ends with
``response.completed`` (``response.incomplete`` when cut at ``max_output_tokens``, or
``error`` and ``response.failed``), without ``[DONE]``. As with chat streams the opening
events wait for the first event of the request, so an error before it (a model that is
not pulled) still gets its own status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ridgeline_core import errors

from ..agent import EdgeAgent
from ..request.answer import Answer
from ..request.events import Done, TextChunk
from . import openai_api
from .dispatch import Dispatcher, Job
from .http_guard import INTERNAL, read_json, started
from .http_sse import Stalled, delivering, write_within
from .metrics import DaemonMetrics
from .responses_api import (
    ResponsesCall,
    output_message,
    output_text,
    parse_responses,
    status_of,
)
from .responses_api import response_object as whole

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["ResponsesRoute"]

log = logging.getLogger("edge_agent.daemon.http_api")


class ResponsesRoute:
    """The handler; ``agent`` is the current agent (a reload replaces it)."""

    def __init__(
        self,
        agent: Callable[[], EdgeAgent],
        dispatcher: Dispatcher,
        metrics: DaemonMetrics,
        write_stall_s: float = 30.0,
    ) -> None:
        self.agent, self.dispatcher, self.metrics = agent, dispatcher, metrics
        self.write_stall_s = write_stall_s  # how long a stream waits for its client to read

    async def create(self, request: web.Request) -> web.StreamResponse:
        from aiohttp import web

        roles = {m.name: m.role for m in self.agent().catalog}
        call = parse_responses(await read_json(request), request.headers, roles)
        options = call.chat.options
        job = await self.dispatcher.start(call.chat.prompt, options, text=call.stream)
        if call.stream:
            model = options.model or self.agent().settings.models.default
            return await stream_response(
                request, call, model, job, self.metrics, stall_s=self.write_stall_s
            )
        answer = await job.answer()
        headers = openai_api.decision_headers(answer)
        handled = (time.perf_counter() - started()) * 1000
        pipeline = answer.decision.timings.total_ms
        headers["Server-Timing"] = f"daemon;dur={handled:.2f}, pipeline;dur={pipeline:.2f}"
        return web.json_response(whole(call, answer.model, answer=answer), headers=headers)


class _EventStream:
    """One streamed response: the opening events before the first text, then deltas."""

    def __init__(
        self, request: web.Request, call: ResponsesCall, model: str, stall_s: float
    ) -> None:
        from aiohttp import web

        self.request, self.call, self.model, self.stall_s = request, call, model, stall_s
        self.sequence = 0
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )

    async def send(self, kind: str, **fields: Any) -> None:
        if not self.response.prepared:
            await self.response.prepare(self.request)
            await self._open()
        await self._write(kind, fields)

    async def text(self, text: str) -> None:
        await self.send("response.output_text.delta", **self._at(), delta=text, logprobs=[])

    async def done(self, answer: Answer) -> None:
        call, text, status = self.call, answer.text, status_of(answer)
        await self.send("response.output_text.done", **self._at(), text=text, logprobs=[])
        await self.send("response.content_part.done", **self._at(), part=output_text(text))
        item = output_message(call, status, text)
        await self.send("response.output_item.done", output_index=0, item=item)
        final = whole(call, answer.model, answer=answer)
        await self.send(f"response.{status}", response=final)

    async def failed(self, error: dict[str, Any]) -> None:
        """``error``: an OpenAI error body's ``error`` (message, type, param, code)."""
        code, message, param = error["code"], error["message"], error["param"]
        await self.send("error", code=code, message=message, param=param)
        await self.send("response.failed", response=whole(self.call, self.model, error=error))

    async def _open(self) -> None:
        call, started = self.call, whole(self.call, self.model)
        await self._write("response.created", {"response": started})
        await self._write("response.in_progress", {"response": started})
        item = output_message(call, "in_progress", None)
        await self._write("response.output_item.added", {"output_index": 0, "item": item})
        part = {**self._at(), "part": output_text("")}
        await self._write("response.content_part.added", part)

    async def _write(self, kind: str, fields: dict[str, Any]) -> None:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        data = f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode()
        await write_within(self.response, data, self.stall_s)

    def _at(self) -> dict[str, Any]:
        return {"item_id": self.call.message_id, "output_index": 0, "content_index": 0}


async def stream_response(
    request: web.Request,
    call: ResponsesCall,
    model: str,
    job: Job,
    metrics: DaemonMetrics,
    *,
    stall_s: float = 30.0,
) -> web.StreamResponse:
    """The job's events as the Responses API's server-sent events. A client that resets
    the connection or stops reading for ``stall_s`` ends the stream and cancels the
    generation (:func:`.http_sse.delivering`)."""
    stream = _EventStream(request, call, model, stall_s)
    async with delivering(stream.request, job, stream.stall_s):
        await _relay(stream, job, metrics)
        await asyncio.wait_for(stream.response.write_eof(), stream.stall_s)
    return stream.response


async def _relay(stream: _EventStream, job: Job, metrics: DaemonMetrics) -> None:
    """The events; a failure of the job is said in the stream once headers are out.
    Failures to write (the client left or stalled) propagate."""
    try:
        async for event in job:
            if isinstance(event, TextChunk):
                await stream.text(event.text)
            elif isinstance(event, Done):
                await stream.done(event.answer)
    except (ConnectionError, Stalled):
        raise
    except errors.RidgelineError as error:
        if not stream.response.prepared:
            raise  # nothing sent yet: a plain error response with its status
        metrics.record_error(error.kind)
        await stream.failed(openai_api.error_body(error)["error"])
    except Exception:
        if not stream.response.prepared:
            raise
        log.exception("streaming %s failed", stream.request.path)
        metrics.record_error("internal")
        await stream.failed(INTERNAL["error"])
