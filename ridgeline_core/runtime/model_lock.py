"""One user of a loaded model at a time.

A native model is not safe to use from two threads at once, and freeing it under a
running generation crashes the process. The lock serialises users, turns a second use
from the thread that is already generating into an error (not a deadlock), refuses
every use once the model is closed, and lets ``close`` wait for the current user.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from ..errors import ModelError

__all__ = ["ModelLock"]


class ModelLock:
    """Guards one loaded model (``name`` is used in messages)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._closed = False

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Exclusive use of the model; refuses once it is closed."""
        if self._owner == threading.get_ident():
            raise ModelError("a generation is already running on this model in this thread")
        with self._lock:
            if self._closed:
                raise ModelError(f"{self._name} was unloaded")
            yield

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """:meth:`using` for a generation: this thread owns the model until it ends."""
        with self.using():
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None

    def close(self, free: Callable[[], None], wait_s: float = 60.0) -> bool:
        """Refuse new users, then ``free()`` once the current one is done. False when a
        generation still holds the model after ``wait_s`` (abandoned without close):
        nothing is freed, a leak rather than a crash."""
        self._closed = True
        if not self._lock.acquire(timeout=wait_s):
            return False
        try:
            free()
        finally:
            self._lock.release()
        return True
