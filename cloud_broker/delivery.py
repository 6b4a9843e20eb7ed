"""Delivering a generation to a client that may read slowly, or not at all.

The generation runs in its own task into a buffer (:class:`BufferedGeneration`; bounded,
since an answer is at most ``max_tokens`` pieces), so the model's slot is freed when the
model is done, however slowly the client reads. Each write waits at most
``limits.write_stall_s`` (:class:`BoundedWriter`): a client that reads nothing for that
long (a zero flow-control window, a stopped process) has its generation cancelled, which
frees the slot, and its call ended with :class:`~ridgeline_core.errors.SlowClientError`
(DEADLINE_EXCEEDED). So no stream holds a slot it does not consume.

grpc.aio can neither take back a message the transport has not sent nor reset the
stream, and a status waits behind the messages before it. So the status is left on the
call for grpc to send once the handler returns: the client reads it after the pending
message when it reads again. One that never does keeps only that transport state (no
slot, no handler) until its connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine
from typing import Any, Generic, TypeVar

import grpc.aio

from ridgeline_core import errors
from ridgeline_core.status import to_status

__all__ = ["BoundedWriter", "BufferedGeneration"]

T = TypeVar("T")

_END = object()


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


class BufferedGeneration(Generic[T]):
    """``source`` run to its end in a task of its own; iterate to read what it gave,
    and :meth:`close` to stop it (the source's cleanup runs before close returns)."""

    def __init__(self, source: AsyncGenerator[T, None]) -> None:
        self._items: asyncio.Queue[Any] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(source))

    async def _run(self, source: AsyncGenerator[T, None]) -> None:
        try:
            async with contextlib.aclosing(source) as items:
                async for item in items:
                    self._items.put_nowait(item)
        except Exception as exc:  # the reader raises it; cancellation ends the task
            self._items.put_nowait(_Failed(exc))
        else:
            self._items.put_nowait(_END)

    async def __aiter__(self) -> AsyncIterator[T]:
        while (item := await self._items.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item

    async def close(self) -> None:
        """Cancel the generation if it still runs, and wait until it has stopped."""
        self._task.cancel()
        await asyncio.wait((self._task,))


class BoundedWriter:
    """Writes to a streaming call, each write bounded by ``stall_s``."""

    def __init__(self, context: grpc.aio.ServicerContext, stall_s: float) -> None:
        self._context = context
        self._stall_s = stall_s
        self._opened = False

    async def open(self) -> None:
        """Send the response headers now: a status can then follow a message the client
        has not read (grpc would otherwise send the headers with it, and fail)."""
        await self._bounded(self._context.send_initial_metadata(()))
        self._opened = True

    async def write(self, message: Any) -> None:
        await self._bounded(self._context.write(message))

    async def _bounded(self, operation: Coroutine[Any, Any, None]) -> None:
        # not asyncio.wait_for: before Python 3.12 it swallows a cancellation (the client
        # left) that comes as the write completes, and the call would go on writing
        writing = asyncio.ensure_future(operation)
        writing.add_done_callback(_retrieve)
        try:
            done, _ = await asyncio.wait((writing,), timeout=self._stall_s)
        finally:
            writing.cancel()  # cancelled, timed out or done: nothing is left waiting
        if not done:
            raise errors.SlowClientError(
                f"the client read nothing for {self._stall_s:g} s (limits.write_stall_s): "
                "its generation was stopped"
            )
        try:
            writing.result()
        except (grpc.aio.InternalError, grpc.aio.UsageError):
            # the call is over (the client left as the write started): end as cancelled,
            # which grpc expects of a call it has cancelled, without a status to send
            raise asyncio.CancelledError from None

    def end(self, error: errors.SlowClientError) -> None:
        """Leave ``error``'s status on the call, for grpc to send after what is pending;
        without headers sent, there is nothing to send it after: drop the call."""
        if not self._opened:
            raise asyncio.CancelledError  # grpc ends the call without a status
        status = to_status(error)
        self._context.set_code(status.code)
        self._context.set_details(status.details)
        self._context.set_trailing_metadata(status.trailing)


def _retrieve(task: asyncio.Future[None]) -> None:
    """Mark a write's failure seen: a write given up on is not read by anyone."""
    if not task.cancelled():
        task.exception()
