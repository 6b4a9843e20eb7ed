"""An answer as OpenAI server-sent events (``stream: true``).

Headers go out with the first event, so an error before it (the model is not pulled, its
file fails verification) still gets its own status; an error after it is said in the
stream. A client that leaves mid-stream cancels the generation.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from ridgeline_core import errors

from ..request.events import Done, TextChunk
from . import openai_api
from .dispatch import Job
from .http_guard import INTERNAL
from .metrics import DaemonMetrics

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["stream_answer"]

log = logging.getLogger("edge_agent.daemon.http_api")


class _Sse:
    """One SSE response: the opening chunk before the first event, ``data:`` lines."""

    def __init__(self, request: web.Request, call: openai_api.Call, chat: bool, model: str):
        from aiohttp import web

        self.request, self.call, self.chat, self.model = request, call, chat, model
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )

    async def send(self, data: dict[str, Any]) -> None:
        response = self.response
        if not response.prepared:
            await response.prepare(self.request)
            if self.chat:
                opening = openai_api.chat_chunk(self.call, self.model, role=True)
                await response.write(b"data: " + json.dumps(opening).encode() + b"\n\n")
        await response.write(b"data: " + json.dumps(data).encode() + b"\n\n")

    async def text(self, text: str) -> None:
        call, model = self.call, self.model
        if self.chat:
            await self.send(openai_api.chat_chunk(call, model, text=text))
        else:
            await self.send(openai_api.completion_chunk(call, model, text=text))

    async def done(self, event: Done) -> None:
        call, model, answer = self.call, self.model, event.answer
        if self.chat:
            await self.send(openai_api.chat_chunk(call, model, answer=answer))
        else:
            await self.send(openai_api.completion_chunk(call, model, answer=answer))
        if call.include_usage:
            await self.send(openai_api.usage_chunk(call, answer, self.chat))

    async def end(self) -> web.StreamResponse:
        await self.response.write(b"data: [DONE]\n\n")
        await self.response.write_eof()
        return self.response


async def stream_answer(
    request: web.Request,
    call: openai_api.Call,
    job: Job,
    *,
    chat: bool,
    model: str,
    metrics: DaemonMetrics,
) -> web.StreamResponse:
    sse = _Sse(request, call, chat, model)
    try:
        async for event in job:
            if isinstance(event, TextChunk):
                await sse.text(event.text)
            elif isinstance(event, Done):
                await sse.done(event)
    except errors.RidgelineError as error:
        if not sse.response.prepared:
            raise  # nothing sent yet: a plain error response with its status
        metrics.record_error(error.kind)
        await sse.send(openai_api.error_body(error))  # headers are gone: say it in the stream
    except Exception:
        if not sse.response.prepared:
            raise
        log.exception("streaming %s failed", request.path)
        metrics.record_error("internal")
        await sse.send(INTERNAL)
    finally:
        job.close()  # a client that left mid-stream cancels the generation
    return await sse.end()
