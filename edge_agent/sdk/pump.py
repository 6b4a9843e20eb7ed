"""A blocking event stream, iterated on a thread of its own, delivered to an event loop.

The request's blocking work runs on one thread per stream, not on the loop's default
executor, whose few threads would cap how many requests an app has in flight. The
thread hands each event to the loop; leaving the async iteration early cancels the
request through its token.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TypeVar

from ridgeline_core.cancel import CancelToken

__all__ = ["on_the_loop"]

T = TypeVar("T")


async def on_the_loop(
    events: Callable[[], Iterator[T]], cancel: CancelToken
) -> AsyncGenerator[T, None]:
    """The items of ``events()`` (run on a new thread) as an async iterator."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[T | BaseException | None] = asyncio.Queue()

    def deliver(item: T | BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.cancel("the event loop closed")

    def pump() -> None:
        try:
            for event in events():
                deliver(event)
        except BaseException as exc:
            deliver(exc)
        else:
            deliver(None)

    threading.Thread(target=pump, name="ridgeline-stream", daemon=True).start()
    finished = False
    try:
        while True:
            item = await queue.get()
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
