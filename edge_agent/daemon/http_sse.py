"""An answer as OpenAI server-sent events (``stream: true``).

Headers go out with the first event, so an error before it (the model is not pulled, its
file fails verification) still gets its own status; an error after it is said in the
stream. A client that leaves mid-stream cancels the generation: one cancel, not an
error. So does a client that stops reading: a write that waits ``daemon.write_stall_s``
for the client to take data ends the stream (the connection is dropped) and cancels the
generation, which frees its slot for others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ridgeline_core import errors

from ..request.events import Decided, Done, TextChunk
from . import openai_api
from .dispatch import Job
from .http_guard import INTERNAL
from .metrics import DaemonMetrics

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Stalled", "delivering", "stream_answer", "write_within"]

log = logging.getLogger("edge_agent.daemon.http_api")


class Stalled(Exception):
    """The client took no data for the stall bound."""


async def write_within(response: web.StreamResponse, data: bytes, stall_s: float) -> None:
    """Write ``data``, or raise :class:`Stalled` when the client takes none for ``stall_s``."""
    try:
        await asyncio.wait_for(response.write(data), stall_s)
    except asyncio.TimeoutError:  # TimeoutError's alias from Python 3.11 on
        raise Stalled from None


@contextlib.asynccontextmanager
async def delivering(request: web.Request, job: Job, stall_s: float) -> AsyncIterator[None]:
    """Around a stream's writes: a client that resets the connection or stops reading ends
    it (a stalled one is dropped), and either way the job is closed, which cancels a
    generation still running: one cancel, not an error."""
    try:
        yield
    except ConnectionError:  # the client reset the connection
        pass
    except (Stalled, asyncio.TimeoutError):
        log.warning(
            "the client of %s took no data for %.3g s (daemon.write_stall_s): stream "
            "ended, generation cancelled",
            request.path,
            stall_s,
        )
        _drop(request)
    finally:
        job.close()


class _Sse:
    """One SSE response: the opening chunk before the first event, ``data:`` lines, each
    written within the stall bound."""

    def __init__(
        self,
        request: web.Request,
        call: openai_api.Call,
        chat: bool,
        models: tuple[str, str],
        stall_s: float,
    ) -> None:
        from aiohttp import web

        self.request, self.call, self.chat = request, call, chat
        self.model, self._broker_model = models
        self.stall_s = stall_s
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
                await self._write(b"data: " + json.dumps(opening).encode() + b"\n\n")
        await self._write(b"data: " + json.dumps(data).encode() + b"\n\n")

    async def _write(self, data: bytes) -> None:
        await write_within(self.response, data, self.stall_s)

    def decided(self, path: str) -> None:
        """The route is chosen: chunks from now on name the model that answers, the
        broker's when it is configured (``broker.model``); with the broker's default the
        name is known only with the answer, in the last chunk."""
        if path in ("cloud", "skipped-local") and self._broker_model:
            self.model = self._broker_model

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

    async def end(self) -> None:
        await self._write(b"data: [DONE]\n\n")
        await asyncio.wait_for(self.response.write_eof(), self.stall_s)


async def stream_answer(
    request: web.Request,
    call: openai_api.Call,
    job: Job,
    *,
    chat: bool,
    model: tuple[str, str],
    metrics: DaemonMetrics,
    stall_s: float = 30.0,
) -> web.StreamResponse:
    """Stream ``job``'s answer; ``model``: the local model and the broker's (empty: its
    default), which chunks name before the answer says which one answered."""
    sse = _Sse(request, call, chat, model, stall_s)
    async with delivering(request, job, stall_s):
        await _relay(sse, job, metrics)
        await sse.end()
    return sse.response


def _drop(request: web.Request) -> None:
    """Drop the connection: nothing more can reach a client that does not read."""
    if request.transport is not None:
        request.transport.abort()


async def _relay(sse: _Sse, job: Job, metrics: DaemonMetrics) -> None:
    """The job's events as SSE; a failure of the job is said in the stream once headers
    are out. Failures to write (the client left or stalled) propagate."""
    try:
        async for event in job:
            if isinstance(event, TextChunk):
                await sse.text(event.text)
            elif isinstance(event, Decided):
                sse.decided(event.path)
            elif isinstance(event, Done):
                await sse.done(event)
    except (ConnectionError, Stalled):
        raise
    except errors.RidgelineError as error:
        if not sse.response.prepared:
            raise  # nothing sent yet: a plain error response with its status
        metrics.record_error(error.kind)
        await sse.send(openai_api.error_body(error))  # headers are gone: say it in the stream
    except Exception:
        if not sse.response.prepared:
            raise
        log.exception("streaming %s failed", sse.request.path)
        metrics.record_error("internal")
        await sse.send(INTERNAL)
