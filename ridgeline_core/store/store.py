"""A content-addressed model store with sha256 verification before use.

Layout under the store root::

    blobs/sha256/<digest>            the model file, read-only
    blobs/sha256/<digest>.verified   stat fingerprint of the last full verification
    tmp/                             partial downloads, never loaded
    builds/<name>.json               what `models build` made of a model (digests of
                                     its inputs and of each built file, a blob too)
    locks/<digest>.lock              one pull of a digest at a time

A blob only appears under ``blobs/`` after its digest and size were checked.
Before a load, :meth:`ModelStore.open_verified` re-hashes the file unless it is
unchanged since the last full check: the fingerprint includes the inode's change
time (ctime), which any write or ``touch`` updates and which cannot be set back,
and it counts only if that check started at least a second after the change (so
coarse kernel timestamps cannot hide a write) and the file did not change while
it was hashed. A file that fails the check is never handed to a runtime.

Threat model: this catches corruption and any modification of the model file by
someone who does not also rewrite the stamp next to it. Whoever can write the
store can forge a stamp; ``models verify`` always hashes in full.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path

from ..progress import NULL_PROGRESS, Progress
from .blobs import BlobFiles
from .built import BuiltFiles
from .checker import BlobChecker, CheckedModels
from .fetch import FetchContext
from .manifest import ModelManifest
from .pulls import PullResult, Pulls
from .records import BuildRecord, BuildRecords, BuiltFile

__all__ = [
    "STAMP_SETTLE_NS",
    "BlobChecker",
    "BuildRecord",
    "BuiltFile",
    "ModelStore",
    "PullResult",
]

log = logging.getLogger(__name__)

STAMP_SETTLE_NS = 1_000_000_000  # a stamp counts for a hash started this long after a change


class ModelStore(BuiltFiles, CheckedModels):
    """The store under ``root``: pull and remove models; verify and open them through
    :class:`~ridgeline_core.store.checker.CheckedModels`, and what ``models build`` made
    through :class:`~ridgeline_core.store.built.BuiltFiles`."""

    def __init__(
        self,
        root: Path,
        fetch_context: FetchContext | None = None,
        pull_command: str = "models pull",
    ) -> None:
        self.root = root.expanduser().resolve()
        self._pull_command = pull_command
        self._files = BlobFiles(self.root)
        self._records = BuildRecords(self.root)
        self._fetch_context = fetch_context or FetchContext(work_dir=self._files.tmp)

    def blob_path(self, digest: str) -> Path:
        """Where a digest lives; refuses anything that is not a plain sha256."""
        return self._files.path(digest)

    def is_present(self, manifest: ModelManifest) -> bool:
        """The model file and every file that goes with it are stored."""
        return all(self.blob_path(part.sha256).is_file() for part in manifest.parts())

    def pull(
        self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS, force: bool = False
    ) -> PullResult:
        """Fetch the model and its files, each unless a verified copy is already stored."""
        return Pulls(self._files, lambda: self._checker, self._fetch_context).pull(
            manifest, progress, force
        )

    @property
    def _checker(self) -> BlobChecker:
        # STAMP_SETTLE_NS is read here, on each use, so that a test can change it.
        return BlobChecker(self._files, self._pull_command, STAMP_SETTLE_NS)

    def remove(self, manifest: ModelManifest, keep: Collection[str] = ()) -> int:
        """Delete the stored files and builds; return the bytes freed (0 if none was there).

        Companion files whose sha256 is in ``keep`` stay (another model uses them: a
        merged encoder shares its tokenizer with the models it was merged from); the
        model file itself goes, as asked."""
        freed = self._remove_build(manifest)
        model, *companions = manifest.parts()
        parts = [model, *(p for p in companions if p.sha256 not in keep)]
        return freed + sum(self._files.remove(p.sha256, p.label) for p in parts)
