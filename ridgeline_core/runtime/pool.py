"""Loads each model on first use, lends it to one request at a time, unloads it when idle.

A loaded llama.cpp model runs one generation at a time. With ``instances`` above one the
pool loads up to that many copies of a model (the weights are memory-mapped, so copies
share them; each has its own context) and lends each to one request, so that many
requests generate in parallel. A request that finds every copy busy waits for one.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..cancel import CancelToken
from ..progress import NULL_PROGRESS, Progress
from ..store import ManifestCatalog, ModelStore
from .base import Runtime, load_runtime
from .types import LoadOptions

__all__ = ["RuntimePool"]


@dataclass(frozen=True)
class _Key:
    name: str
    sha256: str
    options: LoadOptions


@dataclass
class _Entry:
    runtimes: list[Runtime] = field(default_factory=list)
    free: list[Runtime] = field(default_factory=list)
    loading: int = 0  # copies being loaded now
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)


class RuntimePool:
    def __init__(
        self,
        catalog: ManifestCatalog,
        store: ModelStore,
        options: LoadOptions,
        *,
        instances: int = 1,
    ) -> None:
        if instances < 1:
            raise ValueError(f"instances must be at least 1, not {instances}")
        self.catalog = catalog
        self.store = store
        self.options = options
        self.instances = instances
        self._entries: dict[_Key, _Entry] = {}
        self._changed = threading.Condition()
        self._closed = False

    def _key(self, name: str) -> _Key:
        manifest = self.catalog.get(name)
        return _Key(manifest.name, manifest.sha256, self.options)

    @contextlib.contextmanager
    def lease(
        self, name: str, progress: Progress = NULL_PROGRESS, cancel: CancelToken | None = None
    ) -> Iterator[Runtime]:
        """A loaded copy of ``name`` that no one else uses until the block ends.

        The file is verified against its sha256 before its first load. A model being
        verified or loaded blocks only requests for that model. A cancelled ``cancel``
        ends the wait for a busy copy (RequestCancelledError).
        """
        runtime = self._acquire(self._key(name), progress, cancel)
        try:
            yield runtime
        finally:
            self._release(self._key(name), runtime)

    def get(self, name: str, progress: Progress = NULL_PROGRESS) -> Runtime:
        """A loaded copy of ``name`` for work that takes the model's own lock each time
        (calibration, evaluation); requests go through :meth:`lease`."""
        with self.lease(name, progress) as runtime:
            return runtime  # the copy stays loaded; only its lease ends

    def _acquire(self, key: _Key, progress: Progress, cancel: CancelToken | None) -> Runtime:
        with self._changed:
            while True:
                if cancel is not None:
                    cancel.check()
                if self._closed:
                    raise RuntimeError("the runtime pool is closed")
                entry = self._entries.setdefault(key, _Entry())
                if entry.free:
                    runtime = entry.free.pop()
                    entry.leases += 1
                    return runtime
                if len(entry.runtimes) + entry.loading < self.instances:
                    entry.loading += 1
                    break
                self._changed.wait(None if cancel is None else 0.2)
        try:
            manifest = self.catalog.get(key.name)
            path = self.store.open_verified(manifest, progress)
            runtime = load_runtime(manifest, path, key.options)
        except BaseException:
            with self._changed:
                entry.loading -= 1
                self._changed.notify_all()
            raise
        with self._changed:
            entry.loading -= 1
            self._changed.notify_all()
            closed = self._closed
            if not closed:
                entry.runtimes.append(runtime)
                entry.leases += 1
                self._entries[key] = entry  # unloaded meanwhile: it is back
        if closed:  # the pool closed while this copy loaded: free it, do not lend it
            runtime.close()
            raise RuntimeError("the runtime pool is closed")
        return runtime

    def _release(self, key: _Key, runtime: Runtime) -> None:
        with self._changed:
            entry = self._entries.get(key)
            if entry is not None and runtime in entry.runtimes:
                entry.leases -= 1
                entry.free.append(runtime)
                entry.last_used = time.monotonic()
                self._changed.notify_all()
                return
        runtime.close()  # unloaded while lent: free it now that it is back

    def loaded(self) -> list[str]:
        with self._changed:
            return sorted(key.name for key, entry in self._entries.items() if entry.runtimes)

    def busy(self) -> int:
        """Copies lent out now, over all models."""
        with self._changed:
            return sum(entry.leases for entry in self._entries.values())

    def unload_idle(self, idle_s: float) -> list[str]:
        """Unload models no request has used for ``idle_s`` seconds; returns their names."""
        now = time.monotonic()
        unloaded: list[Runtime] = []
        names = []
        with self._changed:
            for key, entry in list(self._entries.items()):
                idle = entry.leases == 0 and entry.loading == 0
                if idle and entry.runtimes and now - entry.last_used >= idle_s:
                    unloaded += entry.runtimes
                    names.append(key.name)
                    del self._entries[key]
        for runtime in unloaded:
            runtime.close()
        return sorted(names)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            entries, self._entries = list(self._entries.values()), {}
            self._changed.notify_all()
        for entry in entries:
            for runtime in entry.free:
                runtime.close()
            # lent copies are closed by _release when their request ends
