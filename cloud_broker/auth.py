"""Device tokens: issued once, stored only as SHA-256 hashes, one per device id.

A token is 256 random bits (``rl_`` + URL-safe base64), so a plain SHA-256 is
enough to store it: there is nothing to brute-force the way there is with a
password, and checking a call costs one hash and one dictionary lookup. The
file is JSON, written atomically with mode 0600; the broker re-reads it when
it changes, so ``cloud-broker tokens add|revoke`` take effect without a restart.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from ridgeline_core.errors import ConfigError, InvalidRequestError, UnauthenticatedError
from ridgeline_core.files import atomic_write, private_dir

__all__ = [
    "DEVICE_PATTERN",
    "TokenFile",
    "TokenStore",
    "TokenTable",
    "current_device",
    "hash_token",
]

DEVICE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_TOKEN_PREFIX = "rl_"
_RELOAD_CHECK_S = 1.0

# the authenticated device of the call being served (set by the auth interceptor)
current_device: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ridgeline_device", default=None
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_device_id(device_id: str) -> str:
    if not DEVICE_PATTERN.fullmatch(device_id):
        raise InvalidRequestError(
            f"invalid device id {device_id!r}: use 1-128 of A-Z a-z 0-9 . _ : - "
            "(starting with a letter or digit)"
        )
    return device_id


@dataclass(frozen=True)
class DeviceEntry:
    device_id: str
    sha256: str
    created: str


class TokenFile:
    """Reads and edits the hashed-token file (the ``cloud-broker tokens`` commands)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, DeviceEntry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read tokens file {self.path}: {exc}") from None
        try:
            devices = data["devices"]
            return {
                device: DeviceEntry(device, entry["sha256"], entry.get("created", ""))
                for device, entry in devices.items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"tokens file {self.path} is malformed: {exc!r}") from None

    def _save(self, entries: dict[str, DeviceEntry]) -> None:
        data = {
            "version": 1,
            "devices": {
                e.device_id: {"sha256": e.sha256, "created": e.created}
                for e in sorted(entries.values(), key=lambda e: e.device_id)
            },
        }
        private_dir(self.path.parent)
        atomic_write(self.path, json.dumps(data, indent=2) + "\n")

    def add(self, device_id: str, *, replace: bool = False) -> str:
        """Issue a token for ``device_id`` and store its hash; returns the token (shown once)."""
        check_device_id(device_id)
        entries = self.load()
        if device_id in entries and not replace:
            raise ConfigError(
                f"device {device_id!r} already has a token; use --replace to issue a new one"
            )
        token = _TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        entries[device_id] = DeviceEntry(device_id, hash_token(token), created)
        self._save(entries)
        return token

    def revoke(self, device_id: str) -> None:
        entries = self.load()
        if entries.pop(device_id, None) is None:
            raise ConfigError(f"device {device_id!r} has no token")
        self._save(entries)


class TokenTable:
    """Token hashes to device ids, and the check of a call's ``authorization`` metadata.

    :class:`TokenStore` keeps it in step with the tokens file; a broker front on Ray
    (:mod:`cloud_broker.on_ray.limits`) replaces it with what the shared limits hold."""

    def __init__(self, by_hash: dict[str, str] | None = None) -> None:
        self._by_hash: dict[str, str] = dict(by_hash or {})

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def by_hash(self) -> dict[str, str]:
        return dict(self._by_hash)

    def replace(self, by_hash: dict[str, str]) -> None:
        self._by_hash = dict(by_hash)

    def refresh(self) -> None:
        """Called before each check; the table itself has nothing to re-read."""

    def authenticate(self, authorization: str | None) -> str:
        """The device id of a ``Bearer`` token; raises UnauthenticatedError otherwise."""
        self.refresh()
        if not authorization:
            raise UnauthenticatedError(
                "missing device token: send metadata 'authorization: Bearer <token>'"
            )
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise UnauthenticatedError("authorization metadata must be 'Bearer <token>'")
        device = self._by_hash.get(hash_token(token.strip()))
        if device is None:
            raise UnauthenticatedError("unknown or revoked device token")
        return device


class TokenStore(TokenTable):
    """The broker's view of the token file: hash -> device, refreshed when the file changes."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = TokenFile(path)
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self.reload()

    def reload(self) -> None:
        try:
            st = self._file.path.stat()
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise ConfigError(f"cannot read tokens file {self._file.path}: {exc}") from None
        if stamp == self._stamp and self._stamp is not None:
            return
        entries = self._file.load()
        self._by_hash = {entry.sha256: entry.device_id for entry in entries.values()}
        self._stamp = stamp

    def refresh(self) -> None:
        """Re-read the file when it changed, at most once a second; on a bad file keep
        serving with the tokens we have (the next change retries)."""
        now = time.monotonic()
        if now - self._checked > _RELOAD_CHECK_S:
            self._checked = now
            with contextlib.suppress(ConfigError):
                self.reload()
