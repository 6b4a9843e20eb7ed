"""The store's files: content-addressed blobs, the pull locks, scratch space.

``blobs/sha256/<digest>`` holds a file only after its digest and size were checked; it is
read-only and stamped as verified (:mod:`.stamps`). ``tmp/`` holds partial downloads and
scratch directories, never loaded. ``locks/<digest>.lock`` lets one process at a time
pull a digest. An OSError on any of these is a StoreError naming the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import IntegrityError, StoreError
from .fetch import sha256_file
from .manifest import check_digest
from .stamps import drop_stamp, write_stamp

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["BlobFiles", "StoreArea", "store_errors"]


@contextlib.contextmanager
def store_errors(root: Path, action: str) -> Iterator[None]:
    """The one place an OSError on the store's own files becomes a StoreError naming the
    store (``root``) and what it could not do (``action``)."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise StoreError(
            f"model store {root}: cannot {action}: {exc.strerror or exc}{where}"
        ) from exc


class StoreArea:
    """The store's working area: ``tmp/`` (partial files, scratch directories, never
    loaded), ``locks/`` (one pull of a digest at a time) and the StoreError that names
    the store for an OSError on any of its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.locks = root / "locks"

    @contextlib.contextmanager
    def scratch(self, prefix: str) -> Iterator[Path]:
        """A temporary directory under tmp/ (the blobs' disk), removed on exit."""
        with self.errors("make a scratch directory"):
            self.tmp.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.tmp, prefix=prefix) as path:
            yield Path(path)

    def check_space(self, needed: int) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.tmp).free
        if free < needed:
            raise StoreError(
                f"not enough disk space in {self.root}: need {needed / 1e6:.0f} MB, "
                f"{free / 1e6:.0f} MB free"
            )

    def remove_debris(self, digest: str) -> None:
        """Leftovers of an interrupted pull of ``digest`` (we hold its lock, so none is live)."""
        if not self.tmp.is_dir():
            return
        for leftover in self.tmp.glob(f"{digest}.*.partial"):
            leftover.unlink(missing_ok=True)
        for leftover in self.tmp.glob(f"wheel-{digest[:16]}-*"):
            shutil.rmtree(leftover, ignore_errors=True)

    def errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        """An OSError on the store's own files is a StoreError naming the store."""
        return store_errors(self.root, action)

    @contextlib.contextmanager
    def lock(self, digest: str) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover
            yield
            return
        with self.errors("take the pull lock"):
            self.locks.mkdir(parents=True, exist_ok=True)
            handle = (self.locks / f"{digest}.lock").open("a")
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class BlobFiles(StoreArea):
    """``blobs/sha256/``: checked files, read-only and stamped, added and removed under
    their digest's lock."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.blobs = root / "blobs" / "sha256"

    def path(self, digest: str) -> Path:
        """Where a digest lives; refuses anything that is not a plain sha256."""
        check_digest(digest)
        path = self.blobs / digest
        if path.parent != self.blobs:  # defence in depth; the pattern already ensures it
            raise IntegrityError(f"digest {digest!r} escapes the store")
        return path

    def install(self, partial: Path, target: Path) -> None:
        """Move a checked file into blobs/, read-only, and stamp it as verified."""
        started_ns = time.time_ns()
        partial.chmod(0o444)
        self.blobs.mkdir(parents=True, exist_ok=True)
        drop_stamp(target)
        if target.exists():
            target.chmod(0o644)
        os.replace(partial, target)
        write_stamp(target, started_ns=started_ns)

    def add_file(self, source: Path) -> tuple[str, int]:
        """Copy a file made on this machine into blobs/; its sha256 and size."""
        digest = sha256_file(source)
        target = self.path(digest)
        with self.lock(digest), self.errors("store a built file"):
            self.tmp.mkdir(parents=True, exist_ok=True)
            partial = self.tmp / f"{digest}.{os.getpid()}.partial"
            try:
                shutil.copyfile(source, partial)
                if sha256_file(partial) != digest:
                    raise StoreError(f"{source} changed while it was copied into the store")
                self.install(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return digest, target.stat().st_size

    def remove(self, digest: str, label: str) -> int:
        """Delete a blob and its stamp; the bytes freed (0 if it was not there)."""
        path = self.path(digest)
        with self.lock(digest), self.errors(f"remove {label}"):
            drop_stamp(path)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return 0
        return size
