"""The pool's book of loaded copies: which copies of a model are loaded, which are lent,
and who may load one more. One condition variable guards it; loading itself happens
outside it, so a model being verified or loaded blocks only requests for that model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from ..cancel import CancelToken
from .base import Runtime
from .types import LoadOptions

__all__ = ["Copies", "CopyKey", "LoanBook"]


@dataclass(frozen=True)
class CopyKey:
    name: str
    sha256: str
    options: LoadOptions


@dataclass
class Copies:
    """The copies of one model: loaded, free to lend, being loaded, lent."""

    runtimes: list[Runtime] = field(default_factory=list)
    free: list[Runtime] = field(default_factory=list)
    loading: int = 0  # copies being loaded now
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)


class Shelf:
    """The loaded copies by model, under one condition variable."""

    def __init__(self) -> None:
        self.entries: dict[CopyKey, Copies] = {}
        self.changed = threading.Condition()
        self.closed = False

    def loaded(self) -> list[str]:
        with self.changed:
            return sorted(key.name for key, entry in self.entries.items() if entry.runtimes)

    def busy(self) -> int:
        with self.changed:
            return sum(entry.leases for entry in self.entries.values())

    def take_idle(self, idle_s: float) -> tuple[list[str], list[Runtime]]:
        """Remove the models no request used for ``idle_s`` seconds: their names and
        copies (for the caller to free outside the lock)."""
        now = time.monotonic()
        names, runtimes = [], []
        with self.changed:
            for key, entry in list(self.entries.items()):
                idle = entry.leases == 0 and entry.loading == 0
                if idle and entry.runtimes and now - entry.last_used >= idle_s:
                    runtimes += entry.runtimes
                    names.append(key.name)
                    del self.entries[key]
        return sorted(names), runtimes

    def close(self) -> list[Runtime]:
        """Refuse every later loan; the free copies, for the caller to free. Lent copies
        are freed when they come back (:meth:`LoanBook.give_back` says so)."""
        with self.changed:
            self.closed = True
            entries, self.entries = list(self.entries.values()), {}
            self.changed.notify_all()
        return [runtime for entry in entries for runtime in entry.free]


class LoanBook(Shelf):
    """Lends free copies, up to ``instances`` copies of a model; closes what comes back
    after the model was unloaded or the pool closed."""

    def __init__(self, instances: int) -> None:
        if instances < 1:
            raise ValueError(f"instances must be at least 1, not {instances}")
        super().__init__()
        self.instances = instances

    def take(self, key: CopyKey, cancel: CancelToken | None) -> Runtime | Copies:
        """A free copy, lent; or, when one more may be loaded, the model's :class:`Copies`
        with a load reserved (finish with :meth:`add` or :meth:`unreserve`). Waits while
        every copy is busy."""
        with self.changed:
            while True:
                if cancel is not None:
                    cancel.check()
                if self.closed:
                    raise RuntimeError("the runtime pool is closed")
                entry = self.entries.setdefault(key, Copies())
                if entry.free:
                    entry.leases += 1
                    return entry.free.pop()
                if len(entry.runtimes) + entry.loading < self.instances:
                    entry.loading += 1
                    return entry
                self.changed.wait(None if cancel is None else 0.2)

    def unreserve(self, entry: Copies) -> None:
        with self.changed:
            entry.loading -= 1
            self.changed.notify_all()

    def add(self, key: CopyKey, entry: Copies, runtime: Runtime) -> bool:
        """Lend the copy just loaded; False when the pool closed meanwhile."""
        with self.changed:
            entry.loading -= 1
            self.changed.notify_all()
            if self.closed:
                return False
            entry.runtimes.append(runtime)
            entry.leases += 1
            self.entries[key] = entry  # unloaded meanwhile: it is back
            return True

    def give_back(self, key: CopyKey, runtime: Runtime) -> bool:
        """False when the model was unloaded while lent: the caller frees the copy."""
        with self.changed:
            entry = self.entries.get(key)
            if entry is None or runtime not in entry.runtimes:
                return False
            entry.leases -= 1
            entry.free.append(runtime)
            entry.last_used = time.monotonic()
            self.changed.notify_all()
            return True
