"""Checking stored files before use: a file's size and sha256 hashed in full, or its
stamp trusted when the file is unchanged since its last full check (:mod:`.stamps`).

:class:`BlobChecker` checks one blob; :class:`CheckedModels` is the part of
:class:`~ridgeline_core.store.store.ModelStore` that checks a model's files with it.
A file that fails the check is never handed to a runtime.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, ModelNotPulledError
from ..progress import NULL_PROGRESS, Progress
from .blobs import BlobFiles
from .fetch import sha256_file
from .manifest import ModelManifest
from .stamps import drop_stamp, fingerprint, stamp_matches, write_stamp

__all__ = ["BlobChecker", "CheckedModels"]


class BlobChecker:
    """Checks a stored file before it is used: its size and sha256 in full, or its stamp
    when the file is unchanged since its last full check (one that started at least
    ``settle_ns`` after the file's last change)."""

    def __init__(self, files: BlobFiles, pull_command: str, settle_ns: int) -> None:
        self._files = files
        self._pull_command = pull_command
        self._settle_ns = settle_ns

    def open(self, manifest: ModelManifest, progress: Progress, hint: str | None = None) -> Path:
        path = self._existing(manifest)
        if stamp_matches(path, self._settle_ns):
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


class CheckedModels:
    """A model's stored files, checked before use; the store supplies the checker."""

    _files: BlobFiles

    @property
    def _checker(self) -> BlobChecker:
        raise NotImplementedError

    def verify(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """Hash the stored files in full; raise :class:`IntegrityError` on any mismatch.

        Returns the model file's path."""
        for part in manifest.parts():
            self._checker.verify(part, progress)
        return self._files.path(manifest.sha256)

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
