"""The methods the in-process agent and the daemon client share.

:class:`~edge_agent.agent.EdgeAgent` answers in this process; :class:`~edge_agent.sdk.client.
EdgeClient` asks a running ``edge-agent serve``. Both are :class:`Answerer`: the same
``ask``, ``stream`` and ``models``, each with an ``_async`` twin, the same options and the
same typed results, so an app can move between the two by changing one line.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from typing_extensions import Unpack

from ridgeline_core.cancel import CancelToken

from ..request.answer import Answer
from ..request.conversation import Prompt
from ..request.events import Decided, Done, Event, Reset, TextChunk
from ..request.options import AskOptions, RequestOptions
from .pump import on_the_loop

__all__ = [
    "Answerer",
    "AskOptions",
    "Decided",
    "Done",
    "ModelInfo",
    "Prompt",
    "Reset",
    "StreamEvent",
    "TextChunk",
]

StreamEvent = Event


@dataclass(frozen=True)
class ModelInfo:
    name: str
    runtime: str
    role: str
    context_length: int | None
    pulled: bool  # in the store, verified or not
    loaded: bool
    default: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Answerer(ABC):
    """``ask``/``stream``/``models`` and their async twins, over one primitive:
    :meth:`_events`, the events of one request, which stops when its token is cancelled.
    Options are parsed once, here, into :class:`RequestOptions`."""

    @abstractmethod
    def _events(
        self, prompt: Prompt, cancel: CancelToken, options: RequestOptions
    ) -> Iterator[StreamEvent]: ...

    @abstractmethod
    def models(self) -> list[ModelInfo]:
        """The local models this agent knows."""

    def ask(self, prompt: Prompt, **options: Unpack[AskOptions]) -> Answer:
        """Answer ``prompt`` (a question, or a chat ending with the user's turn)."""
        events = self._events(prompt, CancelToken(), RequestOptions.parse(options))
        for event in events:
            if isinstance(event, Done):
                return event.answer
        raise RuntimeError("the stream ended without an answer")

    def stream(self, prompt: Prompt, **options: Unpack[AskOptions]) -> Iterator[StreamEvent]:
        """The answer as it becomes final: ``TextChunk``s, ``Decided`` when the route is
        chosen, a ``Reset`` when streamed broker text must be dropped, and ``Done`` with
        the answer. The work runs in the iterating thread. Closing the iterator before
        ``Done`` cancels the request."""
        return self._stream(prompt, CancelToken(), RequestOptions.parse(options))

    def _stream(
        self, prompt: Prompt, cancel: CancelToken, options: RequestOptions
    ) -> Iterator[StreamEvent]:
        yield from _cancelled_if_left(self._events(prompt, cancel, options), cancel)

    async def ask_async(self, prompt: Prompt, **options: Unpack[AskOptions]) -> Answer:
        """:meth:`ask` without blocking the event loop; cancelling the task cancels the
        request."""
        answer: Answer | None = None
        async for event in self.stream_async(prompt, **options):
            if isinstance(event, Done):
                answer = event.answer
        if answer is None:
            raise RuntimeError("the stream ended without an answer")
        return answer

    async def stream_async(
        self, prompt: Prompt, **options: Unpack[AskOptions]
    ) -> AsyncIterator[StreamEvent]:
        """:meth:`stream` as an async iterator; leaving it early cancels the request.
        The request runs on a thread of its own (:mod:`.pump`)."""
        cancel = CancelToken()
        parsed = RequestOptions.parse(options)
        events = on_the_loop(lambda: self._stream(prompt, cancel, parsed), cancel)
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def models_async(self) -> list[ModelInfo]:
        return await asyncio.to_thread(self.models)


def _cancelled_if_left(events: Iterator[StreamEvent], cancel: CancelToken) -> Iterator[StreamEvent]:
    """``events``; a consumer that stops before ``Done`` cancels the request and closes
    them."""
    finished = False
    try:
        for event in events:
            yield event
            finished = isinstance(event, Done)
        finished = True
    finally:
        if not finished:
            cancel.cancel("the stream was closed before its end")
            close = getattr(events, "close", None)
            if close is not None:
                close()
