"""A content-addressed model store with sha256 verification before use.

Layout under the store root::

    blobs/sha256/<digest>            the model file, read-only
    blobs/sha256/<digest>.verified   stat fingerprint of the last full verification
    tmp/                             partial downloads, never loaded
    locks/<digest>.lock              one pull of a digest at a time

A blob only appears under ``blobs/`` after its digest and size were checked.
Before a load, :meth:`ModelStore.open_verified` re-hashes the file unless it is
provably unchanged since the last full check: the fingerprint includes the
inode's change time (ctime), which any write or ``touch`` updates and which a
user cannot set back, and it counts only if the check ran at least a second after
that change (so coarse kernel timestamps cannot hide a write). A file that fails
the check is never handed to a runtime.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, ModelNotPulledError, SourceError
from ..progress import NULL_PROGRESS, Progress
from .fetch import CHUNK, FetchContext, HashingWriter, fetch_source
from .manifest import ModelManifest, check_digest

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ModelStore", "PullResult"]

STAMP_SETTLE_NS = 1_000_000_000


@dataclass(frozen=True)
class PullResult:
    path: Path
    fetched: bool  # False when the verified file was already there
    size: int
    seconds: float


class ModelStore:
    def __init__(self, root: Path, fetch_context: FetchContext | None = None) -> None:
        self.root = root.expanduser().resolve()
        self._blobs = self.root / "blobs" / "sha256"
        self._tmp = self.root / "tmp"
        self._locks = self.root / "locks"
        self._fetch_context = fetch_context or FetchContext(work_dir=self._tmp)

    def blob_path(self, digest: str) -> Path:
        """Where a digest lives; refuses anything that is not a plain sha256."""
        check_digest(digest)
        path = self._blobs / digest
        if path.parent != self._blobs:  # defence in depth; the pattern already ensures it
            raise IntegrityError(f"digest {digest!r} escapes the store")
        return path

    def is_present(self, manifest: ModelManifest) -> bool:
        return self.blob_path(manifest.sha256).is_file()

    def pull(
        self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS, force: bool = False
    ) -> PullResult:
        """Fetch the model unless a verified copy is already stored."""
        started = time.monotonic()
        target = self.blob_path(manifest.sha256)
        with self._lock(manifest.sha256):
            if target.exists() and not force:
                try:
                    self.verify(manifest, progress)
                    return PullResult(target, False, manifest.size, time.monotonic() - started)
                except IntegrityError:
                    pass  # fetch a good copy over the bad one
            self._check_space(manifest.size)
            self._tmp.mkdir(parents=True, exist_ok=True)
            partial = self._tmp / f"{manifest.sha256}.{os.getpid()}.partial"
            try:
                with partial.open("wb") as out:
                    writer = HashingWriter(out, progress)
                    fetch_source(manifest.source, manifest, writer, progress, self._fetch_context)
                self._check_fetched(manifest, writer)
                partial.chmod(0o444)
                self._blobs.mkdir(parents=True, exist_ok=True)
                self._stamp_path(target).unlink(missing_ok=True)
                if target.exists():
                    target.chmod(0o644)
                os.replace(partial, target)
                self._write_stamp(target)
            finally:
                partial.unlink(missing_ok=True)
        return PullResult(target, True, manifest.size, time.monotonic() - started)

    def verify(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """Hash the stored file in full; raise :class:`IntegrityError` on any mismatch."""
        path = self._existing_blob(manifest)
        stat = path.stat()
        if stat.st_size != manifest.size:
            self._stamp_path(path).unlink(missing_ok=True)
            raise IntegrityError(
                f"{manifest.name}: stored file is {stat.st_size} bytes, expected {manifest.size}; "
                f"it is corrupt or was modified "
                f"(re-fetch with: models pull {manifest.name} --force)"
            )
        digest = hashlib.sha256()
        progress.start(f"verifying {manifest.name}", stat.st_size)
        try:
            with path.open("rb") as stream:
                buffer = bytearray(CHUNK)
                view = memoryview(buffer)
                while n := stream.readinto(view):
                    digest.update(view[:n])
                    progress.advance(n)
        finally:
            progress.finish()
        if digest.hexdigest() != manifest.sha256:
            self._stamp_path(path).unlink(missing_ok=True)
            raise IntegrityError(
                f"{manifest.name}: sha256 mismatch (expected {manifest.sha256}, found "
                f"{digest.hexdigest()}); the file is corrupt or was tampered with and will not be "
                f"loaded (re-fetch with: models pull {manifest.name} --force)"
            )
        self._write_stamp(path)
        return path

    def open_verified(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """The model's path, checked: a full hash unless unchanged since the last one."""
        path = self._existing_blob(manifest)
        if self._stamp_matches(path):
            return path
        return self.verify(manifest, progress)

    def remove(self, manifest: ModelManifest) -> int:
        """Delete the stored file; return the bytes freed (0 if it was not there)."""
        path = self.blob_path(manifest.sha256)
        with self._lock(manifest.sha256):
            self._stamp_path(path).unlink(missing_ok=True)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return 0
        return size

    # -- internals ---------------------------------------------------------------

    def _existing_blob(self, manifest: ModelManifest) -> Path:
        path = self.blob_path(manifest.sha256)
        if not path.is_file():
            raise ModelNotPulledError(
                f"model {manifest.name!r} is not in the store {self.root} "
                f"(run: edge-agent models pull {manifest.name})"
            )
        return path

    def _check_fetched(self, manifest: ModelManifest, writer: HashingWriter) -> None:
        if writer.size != manifest.size or writer.digest.hexdigest() != manifest.sha256:
            raise IntegrityError(
                f"{manifest.name}: fetched {writer.size} bytes with sha256 "
                f"{writer.digest.hexdigest()}, manifest expects {manifest.size} bytes with "
                f"sha256 {manifest.sha256}; nothing was stored"
            )

    def _check_space(self, needed: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.root).free
        if free < needed:
            raise SourceError(
                f"not enough disk space in {self.root}: need {needed / 1e6:.0f} MB, "
                f"{free / 1e6:.0f} MB free"
            )

    @staticmethod
    def _stamp_path(path: Path) -> Path:
        return path.with_name(path.name + ".verified")

    @staticmethod
    def _fingerprint(path: Path) -> dict[str, int]:
        st = path.stat()
        return {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino,
            "device": st.st_dev,
        }

    def _write_stamp(self, path: Path) -> None:
        stamp = self._stamp_path(path)
        tmp = stamp.with_name(stamp.name + f".{os.getpid()}")
        record = {**self._fingerprint(path), "verified_ns": time.time_ns()}
        tmp.write_text(json.dumps(record))
        os.replace(tmp, stamp)

    def _stamp_matches(self, path: Path) -> bool:
        try:
            recorded = json.loads(self._stamp_path(path).read_text())
            verified_ns = int(recorded.pop("verified_ns"))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        current = self._fingerprint(path)
        # Coarse timestamps (older kernels tick every few ms) could hide a write made in
        # the same tick as the change the stamp recorded; trust the stamp only when the
        # verification came well after the file's last change.
        settled = verified_ns - current["ctime_ns"] >= STAMP_SETTLE_NS
        return settled and recorded == current

    @contextlib.contextmanager
    def _lock(self, digest: str) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        self._locks.mkdir(parents=True, exist_ok=True)
        with (self._locks / f"{digest}.lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
