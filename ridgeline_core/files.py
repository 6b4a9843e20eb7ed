"""Files that survive a crash whole, and that only this user may read when they must be private.

The agent and the broker keep small state files that another process, or the next start,
reads back: the escalation budget, pinned brokers, device tokens, the outcome memory, the
answer cache, calibrations, specialist records, the store's records. A torn or empty file
there stops a start ("remove it to reset") or loses a pin, and several hold prompts or
secrets. So every such write goes through here, with one set of guarantees:

* :func:`atomic_write` replaces a file whole. The data goes to a temporary file in the same
  directory, created exclusively (``O_EXCL``) with its final mode, so it is never readable by
  others even for an instant; it is flushed and fsynced, renamed over the target, and the
  directory is fsynced so that the rename itself survives a power cut. On any failure the
  temporary file is removed and the old content stays.
* :func:`private_dir` creates a directory 0700 (whatever the umask). An existing directory
  is left as it is: it may be one the user chose to share. Where whoever can write in the
  directory could swap the files (a socket), ``exclusive`` refuses one that is not private.
* :func:`open_private` and :func:`private_append` open a file that is 0600 even if an older
  version made it wider, for files written in place (SQLite, a JSONL log). They refuse a
  symbolic link (``ELOOP``): narrowing its mode would change whatever file it points to.
* :func:`move_aside` renames a state file found unusable to ``<name>.corrupt-<UTC time>``,
  so that the next start begins afresh and the bad file is kept to look at. A symbolic link
  is moved as the link: what it points to is never touched.

Modes and directory fsync are POSIX (Linux, macOS). Errors are plain :class:`OSError`; each
caller maps them to its own domain error, with its own message.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = [
    "PRIVATE_DIR",
    "PRIVATE_FILE",
    "SharedDirectoryError",
    "atomic_write",
    "fsync_dir",
    "move_aside",
    "open_private",
    "private_append",
    "private_dir",
]

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
_SHARED_WRITE = 0o022  # group- or world-writable
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_TEMPORARY_ATTEMPTS = 16
# fsync of a directory that the filesystem cannot sync (some network and FUSE filesystems)
_NO_DIRECTORY_SYNC = {errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF}


class SharedDirectoryError(PermissionError):
    """An existing directory that must be private belongs to another user, or others may
    write to it."""


def private_dir(path: Path, *, exclusive: bool = False) -> Path:
    """Create ``path`` (and missing parents, as ``mkdir -p`` would) readable by this user
    only; returns it. An existing directory is left as it is, unless ``exclusive``: then it
    must belong to this user and be writable by no one else (:class:`SharedDirectoryError`)."""
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True)
    except FileExistsError:
        if not path.is_dir():
            raise
        if exclusive:
            _check_exclusive(path)
        return path
    os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    return path


def _check_exclusive(path: Path) -> None:
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & _SHARED_WRITE:
        raise SharedDirectoryError(
            errno.EPERM,
            "not this user's, or writable by group or others",
            str(path),
        )


def atomic_write(path: Path, data: bytes | str, *, mode: int | None = PRIVATE_FILE) -> None:
    """Replace ``path`` with ``data`` (text is UTF-8): a reader, or the file after a crash,
    has the old content or the new, never a mix. ``mode`` is exact (the umask does not
    change it); None gives what the umask gives a new file, for files meant to be shared.
    The directory must exist."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    temporary, fd = _create_temporary(path, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)  # the umask may have narrowed it
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_dir(path.parent)


def _create_temporary(path: Path, mode: int | None) -> tuple[Path, int]:
    """A new hidden file next to ``path`` (so the rename stays on one filesystem)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC
    for _ in range(_TEMPORARY_ATTEMPTS):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return temporary, os.open(temporary, flags, 0o666 if mode is None else mode)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


def fsync_dir(path: Path) -> None:
    """Make the directory's entries durable (a rename into it, a file created in it)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIRECTORY_SYNC:
            raise
    finally:
        os.close(fd)


def open_private(path: Path, flags: int) -> int:
    """A descriptor for the file at ``path``, opened with ``flags`` (``os.O_RDWR``, ...) and
    created if missing. The file is 0600 afterwards, even one an older version made wider;
    a file created here is durable in its directory. A symbolic link at ``path`` is
    refused (OSError ELOOP), never followed."""
    flags |= _CLOEXEC | _NOFOLLOW
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        created = True
    except FileExistsError:
        fd = os.open(path, flags)
        created = False
    try:
        os.fchmod(fd, PRIVATE_FILE)
        if created:
            fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def private_append(path: Path) -> Iterator[io.BufferedWriter]:
    """The private file at ``path`` (see :func:`open_private`) open for appending; what the
    block wrote is on disk when it ends without an error."""
    with os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND), "ab") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def move_aside(path: Path, siblings: Sequence[str] = ()) -> Path:
    """Rename ``path`` to ``<name>.corrupt-<UTC time>`` (``-<n>`` added while that is
    taken) and each existing ``<name><suffix>`` of ``siblings`` (a write-ahead log) to the
    same name with its suffix; returns the new path. A symbolic link is renamed, never
    followed. The rename is durable in the directory."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while os.path.lexists(aside):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        n += 1
    os.replace(path, aside)
    for suffix in siblings:
        side = path.with_name(path.name + suffix)
        if os.path.lexists(side):
            os.replace(side, aside.with_name(aside.name + suffix))
    fsync_dir(path.parent)
    return aside
