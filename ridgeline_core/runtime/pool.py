"""Loads each model once and hands the loaded runtime to every later request."""

from __future__ import annotations

import threading
from dataclasses import dataclass

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


class RuntimePool:
    def __init__(self, catalog: ManifestCatalog, store: ModelStore, options: LoadOptions) -> None:
        self.catalog = catalog
        self.store = store
        self.options = options
        self._loaded: dict[_Key, Runtime] = {}
        self._loading: dict[_Key, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, name: str, progress: Progress = NULL_PROGRESS) -> Runtime:
        """The loaded model ``name``: verified against its sha256, loaded on first use.

        A model being verified or loaded blocks only requests for that model.
        """
        manifest = self.catalog.get(name)
        key = _Key(manifest.name, manifest.sha256, self.options)
        with self._lock:
            runtime = self._loaded.get(key)
            if runtime is not None:
                return runtime
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                runtime = self._loaded.get(key)
            if runtime is None:
                path = self.store.open_verified(manifest, progress)
                runtime = load_runtime(manifest, path, self.options)
                with self._lock:
                    self._loaded[key] = runtime
        return runtime

    def loaded(self) -> list[str]:
        with self._lock:
            return sorted(key.name for key in self._loaded)

    def close(self) -> None:
        with self._lock:
            runtimes, self._loaded = list(self._loaded.values()), {}
        for runtime in runtimes:
            runtime.close()
