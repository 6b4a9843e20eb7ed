"""Loads each model on first use, lends it to one request at a time, unloads it when idle.

A loaded llama.cpp model runs one generation at a time. With ``instances`` above one the
pool loads up to that many copies of a model (the weights are memory-mapped, so copies
share them; each has its own context) and lends each to one request, so that many
requests generate in parallel. A request that finds every copy busy waits for one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..cancel import CancelToken
from ..progress import NULL_PROGRESS, Progress
from ..store import ManifestCatalog, ModelStore
from .base import Runtime, load_runtime
from .pool_loans import Copies, CopyKey, LoanBook
from .types import LoadOptions

__all__ = ["RuntimePool"]


class RuntimePool:
    """Models by name, loaded on first use from a verified file, lent one request at a
    time (up to ``instances`` copies each), unloaded when idle."""

    def __init__(
        self,
        catalog: ManifestCatalog,
        store: ModelStore,
        options: LoadOptions,
        *,
        instances: int = 1,
    ) -> None:
        self._book = LoanBook(instances)  # ValueError below one
        self.catalog = catalog
        self.store = store
        self.options = options
        self.instances = instances
        self._copies = _CopyLoader(catalog, store, options)

    @contextlib.contextmanager
    def lease(
        self, name: str, progress: Progress = NULL_PROGRESS, cancel: CancelToken | None = None
    ) -> Iterator[Runtime]:
        """A loaded copy of ``name`` that no one else uses until the block ends.

        The file is verified against its sha256 before its first load. A model being
        verified or loaded blocks only requests for that model. A cancelled ``cancel``
        ends the wait for a busy copy (RequestCancelledError).
        """
        key = self._copies.key(name)
        runtime = _borrow(self._book, key, cancel, lambda: self._copies.load(key, progress))
        try:
            yield runtime
        finally:
            if not self._book.give_back(key, runtime):
                runtime.close()  # unloaded while lent: free it now that it is back

    def get(self, name: str, progress: Progress = NULL_PROGRESS) -> Runtime:
        """A loaded copy of ``name`` for work that takes the model's own lock each time
        (calibration, evaluation); requests go through :meth:`lease`."""
        with self.lease(name, progress) as runtime:
            return runtime  # the copy stays loaded; only its lease ends

    def loaded(self) -> list[str]:
        return self._book.loaded()

    def busy(self) -> int:
        """Copies lent out now, over all models."""
        return self._book.busy()

    def unload_idle(self, idle_s: float) -> list[str]:
        """Unload models no request has used for ``idle_s`` seconds; returns their names."""
        names, runtimes = self._book.take_idle(idle_s)
        for runtime in runtimes:
            runtime.close()
        return names

    def close(self) -> None:
        for runtime in self._book.close():
            runtime.close()


@dataclass(frozen=True)
class _CopyLoader:
    """Which copies a model name means (its file's sha256 and the load options) and
    loading one more from the verified file."""

    catalog: ManifestCatalog
    store: ModelStore
    options: LoadOptions

    def key(self, name: str) -> CopyKey:
        manifest = self.catalog.get(name)
        return CopyKey(manifest.name, manifest.sha256, self.options)

    def load(self, key: CopyKey, progress: Progress) -> Runtime:
        manifest = self.catalog.get(key.name)
        return load_runtime(manifest, self.store.open_verified(manifest, progress), key.options)


def _borrow(
    book: LoanBook, key: CopyKey, cancel: CancelToken | None, load: Callable[[], Runtime]
) -> Runtime:
    """A free copy of the model, or one ``load``ed for this request when one more may be."""
    taken = book.take(key, cancel)
    if not isinstance(taken, Copies):
        return taken
    try:
        runtime = load()
    except BaseException:
        book.unreserve(taken)
        raise
    if not book.add(key, taken, runtime):
        runtime.close()  # the pool closed while this copy loaded: free it, do not lend it
        raise RuntimeError("the runtime pool is closed")
    return runtime
