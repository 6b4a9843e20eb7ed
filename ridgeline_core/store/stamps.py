"""Verification stamps: a file's stat fingerprint at its last full hash, beside it.

A stamp counts only if the file is unchanged since (size, times, inode: the inode's change
time moves on any write or ``touch`` and cannot be set back), the hash started at least a
second after the file's last change (so coarse kernel timestamps cannot hide a write), and
the file did not change while it was hashed (the caller stamps only then).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..files import atomic_write

__all__ = ["drop_stamp", "fingerprint", "stamp_matches", "write_stamp"]

log = logging.getLogger("ridgeline_core.store.store")


def stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def fingerprint(path: Path) -> dict[str, int]:
    st = path.stat()
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
    }


def write_stamp(path: Path, started_ns: int) -> None:
    """Record a verification that started at ``started_ns``; best effort (a read-only
    store still works, it just hashes on every load)."""
    stamp = stamp_path(path)
    record = {**fingerprint(path), "verified_ns": started_ns}
    try:
        atomic_write(stamp, json.dumps(record), mode=None)
    except OSError as exc:
        log.debug("cannot write %s: %s", stamp, exc)


def drop_stamp(path: Path) -> None:
    try:
        stamp_path(path).unlink(missing_ok=True)
    except OSError as exc:
        log.debug("cannot remove the stamp of %s: %s", path, exc)


def stamp_matches(path: Path, settle_ns: int) -> bool:
    """The stamp holds: the file is as it was hashed, and the hash started ``settle_ns``
    or more after the file's last change."""
    try:
        recorded = json.loads(stamp_path(path).read_text())
        verified_ns = int(recorded.pop("verified_ns"))
        current = fingerprint(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    # Coarse timestamps (older kernels tick every few ms) could hide a write made in
    # the same tick as the change the stamp recorded; trust the stamp only when the
    # verification started well after the file's last change.
    settled = verified_ns - current["ctime_ns"] >= settle_ns
    return settled and recorded == current
