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
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, ModelNotPulledError
from ..progress import NULL_PROGRESS, Progress
from .blobs import BlobFiles
from .built import BuiltFiles
from .fetch import FetchContext, sha256_file
from .manifest import ModelManifest
from .pulls import PullResult, Pulls
from .records import BuildRecord, BuildRecords, BuiltFile
from .stamps import drop_stamp, fingerprint, stamp_matches, write_stamp

__all__ = ["STAMP_SETTLE_NS", "BuildRecord", "BuiltFile", "ModelStore", "PullResult"]

log = logging.getLogger(__name__)

STAMP_SETTLE_NS = 1_000_000_000  # a stamp counts for a hash started this long after a change


class ModelStore(BuiltFiles):
    """The store under ``root``: pull, verify, open and remove models (and, through
    :class:`~ridgeline_core.store.built.BuiltFiles`, what ``models build`` made)."""

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
        return BlobChecker(self._files, self._pull_command)

    def verify(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """Hash the stored files in full; raise :class:`IntegrityError` on any mismatch.

        Returns the model file's path."""
        for part in manifest.parts():
            self._checker.verify(part, progress)
        return self.blob_path(manifest.sha256)

    def open_verified(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """The model file's path, checked: a full hash unless unchanged since the last one.

        Files that go with the model are checked too; :meth:`open_files` returns them."""
        return self.open_files(manifest, progress)["model"]

    def open_files(
        self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS
    ) -> dict[str, Path]:
        """Every file of the model, checked like :meth:`open_verified`, by name
        (``"model"`` for the model file, then the names in ``manifest.files``)."""
        return {
            part.file_label or "model": self._checker.open(part, progress)
            for part in manifest.parts()
        }

    def remove(self, manifest: ModelManifest) -> int:
        """Delete the stored files and builds; return the bytes freed (0 if none was there)."""
        freed = self._remove_build(manifest)
        return freed + sum(self._files.remove(p.sha256, p.label) for p in manifest.parts())


class BlobChecker:
    """Checks a stored file before it is used: its size and sha256 in full, or its stamp
    when the file is unchanged since its last full check."""

    def __init__(self, files: BlobFiles, pull_command: str) -> None:
        self._files = files
        self._pull_command = pull_command

    def open(self, manifest: ModelManifest, progress: Progress, hint: str | None = None) -> Path:
        path = self._existing(manifest)
        if stamp_matches(path, STAMP_SETTLE_NS):
            return path
        return self.verify(manifest, progress, hint)

    def open_blob(self, digest: str, size: int, label: str, hint: str, *, full: bool) -> Path:
        view: ModelManifest = _BlobView(name=label, sha256=digest, size=size)  # type: ignore[assignment]
        if not self._files.path(digest).is_file():
            raise ModelNotPulledError(f"{label} is not in the store {self._files.root} ({hint})")
        if full:
            return self.verify(view, NULL_PROGRESS, hint)
        return self.open(view, NULL_PROGRESS, hint)

    def verify(self, manifest: ModelManifest, progress: Progress, hint: str | None = None) -> Path:
        path = self._existing(manifest)
        hint = hint or f"re-fetch with: {self._pull_command} {manifest.name} --force"
        with self._files.errors(f"read {manifest.label}"):
            started_ns = time.time_ns()
            before = fingerprint(path)
            if before["size"] != manifest.size:
                drop_stamp(path)
                raise IntegrityError(
                    f"{manifest.label}: stored file is {before['size']} bytes, expected "
                    f"{manifest.size}; it is corrupt or was modified ({hint})"
                )
            digest = _hash(path, manifest.label, before["size"], progress)
            if digest != manifest.sha256:
                drop_stamp(path)
                raise IntegrityError(
                    f"{manifest.label}: sha256 mismatch (expected {manifest.sha256}, found "
                    f"{digest}); the file is corrupt or was tampered with and will not be "
                    f"loaded ({hint})"
                )
            # Stamp only what was hashed: a file changed while hashing gets no stamp.
            if fingerprint(path) == before:
                write_stamp(path, started_ns)
        return path

    def _existing(self, manifest: ModelManifest) -> Path:
        path = self._files.path(manifest.sha256)
        if not path.is_file():
            what = f"model {manifest.name!r}" if manifest.file_label is None else manifest.label
            raise ModelNotPulledError(
                f"{what} is not in the store {self._files.root} "
                f"(run: {self._pull_command} {manifest.name})"
            )
        return path


def _hash(path: Path, label: str, size: int, progress: Progress) -> str:
    progress.start(f"verifying {label}", size)
    try:
        return sha256_file(path, progress)
    finally:
        progress.finish()


@dataclass(frozen=True)
class _BlobView:
    """Enough of a manifest to verify a blob that no manifest names (a build's output)."""

    name: str
    sha256: str
    size: int
    file_label: str | None = None

    @property
    def label(self) -> str:
        return self.name
