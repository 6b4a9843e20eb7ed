"""Cancelling a request that runs on another thread.

A daemon answers on worker threads while the client that asked is served on the event
loop; when that client goes away, its generation should stop at the next token and its
broker call at once, freeing the model for the next request. The request holds a
:class:`CancelToken`; the loop cancels it, the worker checks it between tokens, and the
parts that block (a broker stream) register a callback that interrupts them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import RequestCancelledError

__all__ = ["CancelToken"]


class CancelToken:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self.reason = ""

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "the caller cancelled the request") -> None:
        """Cancel once; later calls do nothing. Runs the registered callbacks."""
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def check(self) -> None:
        """Raise :class:`RequestCancelledError` once cancelled."""
        if self._event.is_set():
            raise RequestCancelledError(self.reason)

    def wait(self, timeout_s: float) -> bool:
        """Sleep up to ``timeout_s``; True (at once) when cancelled meanwhile."""
        return self._event.wait(timeout_s)

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` on cancel (at once if already cancelled); returns an undo."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return lambda: self._forget(callback)
        callback()
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)
