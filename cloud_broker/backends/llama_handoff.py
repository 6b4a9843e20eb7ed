"""Text handed from a llama.cpp worker thread to the event loop, one generation at a time.

The worker hands over each token's text as it comes and says when it has ended; the loop
reads what piled up while it was busy as one delta, since every message the broker sends
costs far more than joining strings.
"""

from __future__ import annotations

import asyncio

__all__ = ["Handoff"]

_END = object()


class Handoff:
    """One generation's text: handed over on the worker thread, read on the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pieces: asyncio.Queue[object] = asyncio.Queue()
        self._ended = False

    def emit(self, text: str) -> None:
        """Hand over one piece of text (on the worker thread)."""
        self._loop.call_soon_threadsafe(self._pieces.put_nowait, text)

    def end(self) -> None:
        """No more text is coming (on the worker thread, however the generation ended)."""
        self._loop.call_soon_threadsafe(self._pieces.put_nowait, _END)

    async def delta(self) -> str | None:
        """The text handed over since the last delta, as one; None once it has ended."""
        if self._ended:
            return None
        # tokens that piled up while the loop was busy leave as one delta
        texts = [await self._pieces.get()]
        while not self._pieces.empty():
            texts.append(self._pieces.get_nowait())
        if texts[-1] is _END:
            texts.pop()
            self._ended = True
        return "".join(texts) if texts else None  # type: ignore[arg-type]
