"""The daemon's unix socket: a private directory, and no stale socket file in the way."""

from __future__ import annotations

import socket
from pathlib import Path

from ridgeline_core.errors import ConfigError
from ridgeline_core.files import SharedDirectoryError, private_dir

__all__ = ["prepare_socket"]


def prepare_socket(path: Path) -> None:
    """A private directory for the socket, and no stale socket file in the way.

    The directory must be ours and not writable by others: whoever can write there could
    replace the socket and receive the requests (and API keys) meant for the daemon."""
    try:
        private_dir(path.parent, exclusive=True)
    except SharedDirectoryError:
        raise ConfigError(
            f"daemon.grpc: {path.parent} must belong to this user and not be writable by "
            "group or others (chmod 700 it, or choose another socket path)"
        ) from None
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_socket():
        raise ConfigError(f"daemon.grpc: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # left by a daemon that did not exit cleanly
    else:
        raise ConfigError(f"daemon.grpc: another daemon is serving unix:{path}")
    finally:
        probe.close()
