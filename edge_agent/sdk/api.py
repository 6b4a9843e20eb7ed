"""The methods the in-process agent and the daemon client share.

:class:`~edge_agent.agent.EdgeAgent` answers in this process; :class:`~edge_agent.sdk.client.
EdgeClient` asks a running ``edge-agent serve``. Both are :class:`Answerer`: the same
``ask``, ``stream`` and ``models``, each with an ``_async`` twin, the same options and the
same typed results, so an app can move between the two by changing one line.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from typing_extensions import Unpack

from ridgeline_core.cancel import CancelToken
from ridgeline_core.runtime import ChatMessage

if TYPE_CHECKING:
    from ..agent import Answer

__all__ = [
    "Answerer",
    "AskOptions",
    "Done",
    "ModelInfo",
    "Prompt",
    "Reset",
    "StreamEvent",
    "TextChunk",
    "threaded_stream",
]

Prompt = str | Sequence[ChatMessage] | Sequence[Mapping[str, str]]


class AskOptions(TypedDict, total=False):
    """Per-request options; unset ones come from the settings."""

    model: str | None  # local model (default: models.default)
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    seed: int | None
    stop: Sequence[str] | None  # added to the model's and the settings' stop sequences
    mode: Literal["auto", "local", "cloud"] | None
    threshold: float | None  # a fixed τ instead of the policy's
    deadline_s: float | None  # longest wait for the broker
    private: bool  # never store this prompt or its answer in the semantic cache


@dataclass(frozen=True)
class TextChunk:
    """More of the answer's text."""

    text: str


@dataclass(frozen=True)
class Reset:
    """The broker failed mid-answer: drop the text streamed so far; the local answer
    follows."""

    reason: str


@dataclass(frozen=True)
class Done:
    """The end of the stream: the whole answer with its decision record."""

    answer: Answer


StreamEvent = TextChunk | Reset | Done


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
    :meth:`_events`, the stream of one request that stops when its token is cancelled."""

    @abstractmethod
    def _events(
        self, prompt: Prompt, cancel: CancelToken, options: AskOptions
    ) -> Iterator[StreamEvent]: ...

    @abstractmethod
    def models(self) -> list[ModelInfo]:
        """The local models this agent knows."""

    def ask(self, prompt: Prompt, **options: Unpack[AskOptions]) -> Answer:
        """Answer ``prompt`` (a question, or a chat ending with the user's turn)."""
        return _answer_of(self._events(prompt, CancelToken(), options))

    def stream(self, prompt: Prompt, **options: Unpack[AskOptions]) -> Iterator[StreamEvent]:
        """The answer as it becomes final: ``TextChunk``s, a ``Reset`` when streamed broker
        text must be dropped, and ``Done`` with the answer. Closing the iterator before
        ``Done`` cancels the request."""
        cancel = CancelToken()
        events = self._events(prompt, cancel, options)
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

        Each stream is pumped by a thread of its own (not the loop's default executor,
        whose few threads would cap how many requests an app can have in flight)."""
        cancel = CancelToken()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[StreamEvent | BaseException | None] = asyncio.Queue()

        def deliver(item: StreamEvent | BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.cancel("the event loop closed")

        def pump() -> None:
            try:
                for event in self._events(prompt, cancel, options):
                    deliver(event)
            except BaseException as exc:
                deliver(exc)
            else:
                deliver(None)

        threading.Thread(target=pump, name="ridgeline-stream", daemon=True).start()
        finished = False
        try:
            while True:
                item = await events.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                yield item
        finally:
            if not finished:
                cancel.cancel("the stream was closed before its end")

    async def models_async(self) -> list[ModelInfo]:
        return await asyncio.to_thread(self.models)


def _answer_of(events: Iterator[StreamEvent]) -> Answer:
    for event in events:
        if isinstance(event, Done):
            return event.answer
    raise RuntimeError("the stream ended without an answer")


def threaded_stream(
    run: Callable[[Callable[[str], None], Callable[[str], None]], Answer],
    cancel: CancelToken,
) -> Iterator[StreamEvent]:
    """Run ``run(on_text, on_reset)`` on a thread (it must honour ``cancel``) and yield
    its events."""
    events: queue.Queue[StreamEvent | BaseException] = queue.Queue()

    def work() -> None:
        try:
            answer = run(
                lambda text: events.put(TextChunk(text)),
                lambda reason: events.put(Reset(reason)),
            )
        except BaseException as exc:
            events.put(exc)
        else:
            events.put(Done(answer))

    thread = threading.Thread(target=work, name="ridgeline-answer", daemon=True)
    thread.start()
    while True:
        event = events.get()
        if isinstance(event, BaseException):
            raise event
        yield event
        if isinstance(event, Done):
            return
