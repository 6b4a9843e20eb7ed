"""The content-addressed model store, with small synthetic files (no real models).

Wheel sources are exercised against the real package index elsewhere
(tests/test_models_e2e.py); here only path, parts and url sources.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import flip_byte

from ridgeline_core.errors import (
    IntegrityError,
    ManifestError,
    ModelNotPulledError,
    SourceError,
    StoreError,
)
from ridgeline_core.store import FetchContext, ModelManifest, ModelStore
from ridgeline_core.store import store as store_module


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_manifest(source: dict[str, Any], data: bytes, **changes: Any) -> ModelManifest:
    fields: dict[str, Any] = {
        "name": "tiny",
        "runtime": "llama.cpp",
        "format": "gguf",
        "role": "chat",
        "license": "MIT",
        "sha256": sha256(data),
        "size": len(data),
        "source": source,
    }
    fields.update(changes)
    return ModelManifest.from_dict(fields)


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, bytes]:
    data = os.urandom(5000)
    path = tmp_path / "src" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(data)
    return path, data


@pytest.fixture
def manifest(payload: tuple[Path, bytes]) -> ModelManifest:
    path, data = payload
    return make_manifest({"kind": "path", "path": str(path)}, data)


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "store")


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


class RecordingProgress:
    def __init__(self) -> None:
        self.started: list[str] = []

    def start(self, description: str, total: int | None) -> None:
        self.started.append(description)

    def advance(self, amount: int) -> None:
        pass

    def finish(self) -> None:
        pass


# -- pull, verify, open ---------------------------------------------------------------


def test_pull_copies_and_verifies(
    store: ModelStore, manifest: ModelManifest, payload: tuple[Path, bytes]
) -> None:
    assert not store.is_present(manifest)
    result = store.pull(manifest)
    assert result.fetched is True
    assert result.size == len(payload[1])
    assert result.path == store.blob_path(manifest.sha256)
    assert result.path == store.root / "blobs" / "sha256" / manifest.sha256
    assert result.path.read_bytes() == payload[1]
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o444
    assert store.is_present(manifest)
    assert files_under(store.root / "tmp") == []
    assert store.verify(manifest) == result.path
    assert store.open_verified(manifest) == result.path


def test_second_pull_does_not_fetch(store: ModelStore, manifest: ModelManifest) -> None:
    first = store.pull(manifest)
    second = store.pull(manifest)
    assert second.fetched is False
    assert second.path == first.path
    assert second.path.read_bytes() == first.path.read_bytes()


def test_store_root_is_resolved(tmp_path: Path, manifest: ModelManifest) -> None:
    store = ModelStore(tmp_path / "a" / ".." / "store")
    assert store.root == (tmp_path / "store").resolve()
    assert store.pull(manifest).path.is_relative_to(store.root)


@pytest.mark.parametrize("field", ["sha256", "size"])
def test_wrong_digest_or_size_stores_nothing(
    store: ModelStore, payload: tuple[Path, bytes], field: str
) -> None:
    path, data = payload
    wrong: dict[str, Any] = (
        {"sha256": sha256(data + b"x")} if field == "sha256" else {"size": len(data) + 1}
    )
    bad = make_manifest({"kind": "path", "path": str(path)}, data, **wrong)
    with pytest.raises(IntegrityError, match="nothing was stored"):
        store.pull(bad)
    assert files_under(store.root / "blobs") == []
    assert files_under(store.root / "tmp") == []
    assert not store.is_present(bad)
    with pytest.raises(ModelNotPulledError):
        store.open_verified(bad)


def test_verify_detects_a_flipped_byte(store: ModelStore, manifest: ModelManifest) -> None:
    blob = store.pull(manifest).path
    store.open_verified(manifest)  # leaves a fresh verification stamp
    flip_byte(blob, 2500)
    with pytest.raises(IntegrityError, match="sha256 mismatch") as info:
        store.verify(manifest)
    assert "models pull tiny --force" in str(info.value)
    with pytest.raises(IntegrityError):
        store.open_verified(manifest)


def test_open_verified_notices_tampering_after_a_stamp(
    store: ModelStore, manifest: ModelManifest
) -> None:
    """The stamp from the last full check must not let a modified file through."""
    blob = store.pull(manifest).path
    assert store.open_verified(manifest) == blob
    flip_byte(blob, 0)
    with pytest.raises(IntegrityError):
        store.open_verified(manifest)
    with pytest.raises(IntegrityError):  # and it stays refused
        store.open_verified(manifest)


def test_open_verified_sees_tampering_that_restores_mtime(
    store: ModelStore, manifest: ModelManifest
) -> None:
    """mtime can be set back with utime; ctime cannot, so the stamp still mismatches."""
    blob = store.pull(manifest).path
    before = blob.stat()
    flip_byte(blob, 100)
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(IntegrityError):
        store.open_verified(manifest)


def test_open_verified_uses_the_stamp_then_rehashes_after_a_touch(
    store: ModelStore, manifest: ModelManifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "STAMP_SETTLE_NS", 0)
    blob = store.pull(manifest).path
    quiet = RecordingProgress()
    assert store.open_verified(manifest, quiet) == blob
    assert not any(d.startswith("verifying") for d in quiet.started)  # fast path
    os.utime(blob)  # changes ctime: the next open must hash in full
    touched = RecordingProgress()
    assert store.open_verified(manifest, touched) == blob
    assert any(d.startswith("verifying") for d in touched.started)


def test_a_stamp_written_right_after_a_change_is_not_trusted(
    store: ModelStore, manifest: ModelManifest
) -> None:
    """Coarse kernel timestamps could hide a write in the same tick: re-hash instead."""
    store.pull(manifest)
    progress = RecordingProgress()
    store.open_verified(manifest, progress)
    assert any(d.startswith("verifying") for d in progress.started)


def test_truncated_file_is_detected(store: ModelStore, manifest: ModelManifest) -> None:
    blob = store.pull(manifest).path
    blob.chmod(0o644)
    os.truncate(blob, manifest.size - 1)
    with pytest.raises(IntegrityError, match="bytes, expected"):
        store.verify(manifest)
    with pytest.raises(IntegrityError):
        store.open_verified(manifest)


def test_pull_over_a_corrupted_blob_fetches_a_good_copy(
    store: ModelStore, manifest: ModelManifest, payload: tuple[Path, bytes]
) -> None:
    blob = store.pull(manifest).path
    flip_byte(blob, 10)
    result = store.pull(manifest)
    assert result.fetched is True
    assert result.path.read_bytes() == payload[1]
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o444
    assert store.open_verified(manifest) == result.path


def test_pull_over_a_truncated_blob_fetches_a_good_copy(
    store: ModelStore, manifest: ModelManifest, payload: tuple[Path, bytes]
) -> None:
    blob = store.pull(manifest).path
    blob.chmod(0o644)
    blob.write_bytes(b"")
    assert store.pull(manifest).fetched is True
    assert blob.read_bytes() == payload[1]


def test_force_pull_refetches(
    store: ModelStore, manifest: ModelManifest, payload: tuple[Path, bytes]
) -> None:
    store.pull(manifest)
    result = store.pull(manifest, force=True)
    assert result.fetched is True
    assert result.path.read_bytes() == payload[1]
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o444
    assert files_under(store.root / "tmp") == []
    assert store.open_verified(manifest) == result.path


def test_failed_force_pull_keeps_the_good_copy(
    store: ModelStore, manifest: ModelManifest, payload: tuple[Path, bytes]
) -> None:
    path, data = payload
    blob = store.pull(manifest).path
    path.unlink()  # the source is gone
    with pytest.raises(SourceError):
        store.pull(manifest, force=True)
    assert blob.read_bytes() == data
    assert store.open_verified(manifest) == blob


def test_missing_model_is_not_pulled(store: ModelStore, manifest: ModelManifest) -> None:
    with pytest.raises(ModelNotPulledError, match="models pull") as info:
        store.open_verified(manifest)
    assert "tiny" in str(info.value)
    assert info.value.exit_code == 5
    with pytest.raises(ModelNotPulledError, match="models pull"):
        store.verify(manifest)


def test_remove_returns_bytes_freed(store: ModelStore, manifest: ModelManifest) -> None:
    blob = store.pull(manifest).path
    assert store.remove(manifest) == manifest.size
    assert not blob.exists()
    assert not store.is_present(manifest)
    assert [p for p in files_under(store.root / "blobs")] == []  # stamp removed too
    assert store.remove(manifest) == 0
    with pytest.raises(ModelNotPulledError):
        store.open_verified(manifest)


def test_remove_on_an_empty_store(store: ModelStore, manifest: ModelManifest) -> None:
    assert store.remove(manifest) == 0


@pytest.mark.parametrize(
    "digest",
    ["", "abc", "../" + "a" * 61, "/" + "a" * 63, "A" * 64, "g" * 64, "a" * 65, "a" * 32 + "/.."],
)
def test_blob_path_refuses_bad_digests(store: ModelStore, digest: str) -> None:
    with pytest.raises(ManifestError):
        store.blob_path(digest)


def test_path_source_missing_file_is_a_source_error(store: ModelStore, tmp_path: Path) -> None:
    bad = make_manifest({"kind": "path", "path": str(tmp_path / "absent.gguf")}, b"x" * 10)
    with pytest.raises(SourceError, match=r"cannot read .*absent\.gguf"):
        store.pull(bad)
    assert files_under(store.root / "blobs") == []
    assert files_under(store.root / "tmp") == []


def test_relative_path_resolves_against_manifest_dir(
    store: ModelStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3000)
    manifests = tmp_path / "manifests"
    (manifests / "files").mkdir(parents=True)
    (manifests / "files" / "tiny.gguf").write_bytes(data)
    toml = manifests / "tiny.toml"
    toml.write_text(
        'name = "tiny"\nruntime = "llama.cpp"\nformat = "gguf"\nrole = "chat"\n'
        f'license = "MIT"\nsha256 = "{sha256(data)}"\nsize = {len(data)}\n'
        '[source]\nkind = "path"\npath = "files/tiny.gguf"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resolution must not depend on the working directory
    manifest = ModelManifest.from_file(toml)
    assert store.pull(manifest).path.read_bytes() == data


# -- parts ----------------------------------------------------------------------------


def write_parts(tmp_path: Path, sizes: list[int]) -> list[tuple[Path, bytes]]:
    parts = []
    for index, size in enumerate(sizes):
        data = os.urandom(size)
        path = tmp_path / f"model.part{index:02d}"
        path.write_bytes(data)
        parts.append((path, data))
    return parts


def test_parts_are_concatenated_in_order(store: ModelStore, tmp_path: Path) -> None:
    parts = write_parts(tmp_path, [1000, 2500, 7])
    whole = b"".join(data for _, data in parts)
    manifest = make_manifest(
        {
            "kind": "parts",
            "parts": [{"kind": "path", "path": str(path)} for path, _ in parts],
        },
        whole,
    )
    result = store.pull(manifest)
    assert result.path.read_bytes() == whole


def test_parts_in_the_wrong_order_fail_the_whole_digest(store: ModelStore, tmp_path: Path) -> None:
    parts = write_parts(tmp_path, [1000, 2000])
    whole = b"".join(data for _, data in parts)
    manifest = make_manifest(
        {"kind": "parts", "parts": [{"kind": "path", "path": str(p)} for p, _ in reversed(parts)]},
        whole,
    )
    with pytest.raises(IntegrityError):
        store.pull(manifest)
    assert files_under(store.root / "blobs") == []


# -- url sources over a real loopback HTTP server ------------------------------------


Served = bytes | str | tuple[int, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    # bytes: the body; str: redirect there; (declared length, body): a lying
    # Content-Length (the connection closes early), or with -1 an endless body
    files: ClassVar[dict[str, Served]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.requests.append(self.path)
        body = self.files.get(self.path)
        if isinstance(body, tuple):
            declared, chunk = body
            self.send_response(200)
            if declared >= 0:
                self.send_header("Content-Length", str(declared))
            self.end_headers()
            try:
                for _ in range(1 if declared >= 0 else 64):  # endless: stops at 64 chunks
                    self.wfile.write(chunk)
            except OSError:
                pass  # the client hung up, as it should
            self.close_connection = True
            return
        if isinstance(body, str):
            self.send_response(302)
            self.send_header("Location", body)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins the request threads
    block_on_close = True


class FileServer:
    def __init__(self, files: dict[str, Served]) -> None:
        handler = type("Handler", (_Handler,), {"files": files, "requests": []})
        self.handler = handler
        self.server = _Server(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> list[str]:
        return self.handler.requests  # type: ignore[no-any-return]


@pytest.fixture
def http_files() -> dict[str, Served]:
    return {}


@pytest.fixture
def file_server(http_files: dict[str, Served]) -> Iterator[FileServer]:
    server = FileServer(http_files)
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=10)


def test_url_source_is_downloaded(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    data = os.urandom(6000)
    http_files["/models/tiny.gguf"] = data
    manifest = make_manifest({"kind": "url", "url": file_server.url("/models/tiny.gguf")}, data)
    result = store.pull(manifest)
    assert result.fetched is True
    assert result.path.read_bytes() == data
    assert file_server.requests == ["/models/tiny.gguf"]
    assert store.pull(manifest).fetched is False
    assert file_server.requests == ["/models/tiny.gguf"]  # no second download


def test_url_404_is_a_source_error(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    data = b"never served"
    manifest = make_manifest({"kind": "url", "url": file_server.url("/missing.gguf")}, data)
    with pytest.raises(SourceError, match="HTTP 404"):
        store.pull(manifest)
    assert files_under(store.root / "blobs") == []
    assert files_under(store.root / "tmp") == []


def test_url_with_wrong_content_is_an_integrity_error(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    data = os.urandom(2048)
    http_files["/tiny.gguf"] = os.urandom(2048)  # same size, other bytes
    manifest = make_manifest({"kind": "url", "url": file_server.url("/tiny.gguf")}, data)
    with pytest.raises(IntegrityError):
        store.pull(manifest)
    assert files_under(store.root / "blobs") == []
    assert files_under(store.root / "tmp") == []


def test_unreachable_url_is_a_source_error(tmp_path: Path) -> None:
    # A port nobody listens on: bind, read the port, close.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manifest = make_manifest(
        {"kind": "url", "url": f"http://127.0.0.1:{port}/x.gguf"}, b"abc", name="unreachable"
    )
    fast = ModelStore(tmp_path / "fast", FetchContext(work_dir=tmp_path / "work", url_timeout_s=5))
    with pytest.raises(SourceError, match="download of"):
        fast.pull(manifest)


def test_url_parts_check_each_part(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    chunks = [os.urandom(1200), os.urandom(800), os.urandom(5)]
    for index, chunk in enumerate(chunks):
        http_files[f"/part{index}"] = chunk
    whole = b"".join(chunks)
    parts = [
        {"kind": "url", "url": file_server.url(f"/part{i}"), "sha256": sha256(chunk)}
        for i, chunk in enumerate(chunks)
    ]
    manifest = make_manifest({"kind": "parts", "parts": parts}, whole)
    assert store.pull(manifest).path.read_bytes() == whole
    assert file_server.requests == ["/part0", "/part1", "/part2"]


def test_wrong_part_digest_is_an_integrity_error(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    chunks = [os.urandom(1000), os.urandom(1000), os.urandom(1000)]
    for index, chunk in enumerate(chunks):
        http_files[f"/part{index}"] = chunk
    whole = b"".join(chunks)
    parts = [
        {"kind": "url", "url": file_server.url(f"/part{i}"), "sha256": sha256(chunk)}
        for i, chunk in enumerate(chunks)
    ]
    parts[1]["sha256"] = sha256(b"something else")  # the whole digest is still right
    manifest = make_manifest({"kind": "parts", "parts": parts}, whole)
    with pytest.raises(IntegrityError, match="part 2 of tiny"):
        store.pull(manifest)
    assert file_server.requests == ["/part0", "/part1"]  # stops at the bad part
    assert files_under(store.root / "blobs") == []
    assert files_under(store.root / "tmp") == []


def test_parts_mixing_path_and_url(
    store: ModelStore,
    file_server: FileServer,
    http_files: dict[str, Served],
    tmp_path: Path,
) -> None:
    local = os.urandom(700)
    (tmp_path / "local.part").write_bytes(local)
    remote = os.urandom(900)
    http_files["/remote.part"] = remote
    manifest = make_manifest(
        {
            "kind": "parts",
            "parts": [
                {"kind": "url", "url": file_server.url("/remote.part"), "sha256": sha256(remote)},
                {"kind": "path", "path": str(tmp_path / "local.part")},
            ],
        },
        remote + local,
    )
    assert store.pull(manifest).path.read_bytes() == remote + local


def test_redirect_away_from_the_manifest_url_is_refused(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    """Plain http is allowed only for the loopback URL in the manifest, not for wherever
    it redirects (only https targets are followed)."""
    data = os.urandom(512)
    http_files["/real.gguf"] = data
    http_files["/moved.gguf"] = file_server.url("/real.gguf")
    manifest = make_manifest({"kind": "url", "url": file_server.url("/moved.gguf")}, data)
    with pytest.raises(SourceError, match="redirected to a non-https address"):
        store.pull(manifest)
    assert file_server.requests == ["/moved.gguf"]  # the plain-http target was never asked
    assert files_under(store.root / "blobs") == []
    assert files_under(store.root / "tmp") == []


def test_a_download_cut_short_is_a_source_error(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    data = os.urandom(4096)
    http_files["/short.gguf"] = (len(data), data[:100])
    manifest = make_manifest({"kind": "url", "url": file_server.url("/short.gguf")}, data)
    with pytest.raises(SourceError, match="stopped after 100 of 4096 bytes"):
        store.pull(manifest)
    assert files_under(store.root / "blobs") == []


def test_an_endless_download_stops_at_the_manifest_size(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    data = os.urandom(4096)
    http_files["/endless.gguf"] = (-1, os.urandom(1 << 16))
    manifest = make_manifest({"kind": "url", "url": file_server.url("/endless.gguf")}, data)
    with pytest.raises(SourceError, match="more than the expected 4096 bytes"):
        store.pull(manifest)
    assert files_under(store.root / "tmp") == []


def test_a_declared_length_above_the_manifest_size_is_refused_up_front(
    store: ModelStore, file_server: FileServer, http_files: dict[str, Served]
) -> None:
    data = os.urandom(4096)
    http_files["/big.gguf"] = os.urandom(8192)
    manifest = make_manifest({"kind": "url", "url": file_server.url("/big.gguf")}, data)
    with pytest.raises(SourceError, match="8192 bytes, more than the manifest's 4096"):
        store.pull(manifest)


def test_a_store_that_cannot_be_created_is_a_store_error(
    tmp_path: Path, manifest: ModelManifest
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot"):
        ModelStore(blocker / "store").pull(manifest)


def test_a_stamp_that_cannot_be_written_only_costs_a_rehash(
    store: ModelStore, manifest: ModelManifest
) -> None:
    """A store the agent may read but not write (a shared or system store) still works."""
    blob = store.pull(manifest).path
    stamp = blob.with_name(blob.name + ".verified")
    stamp.unlink()
    stamp.mkdir()  # writing the stamp now fails, as in a read-only store
    progress = RecordingProgress()
    assert store.open_verified(manifest, progress) == blob
    assert store.open_verified(manifest, progress) == blob
    assert sum(d.startswith("verifying") for d in progress.started) == 2


def test_leftovers_of_an_interrupted_pull_are_cleaned(
    store: ModelStore, manifest: ModelManifest
) -> None:
    tmp = store.root / "tmp"
    tmp.mkdir(parents=True)
    (tmp / f"{manifest.sha256}.4242.partial").write_bytes(b"half a model")
    (tmp / f"wheel-{manifest.sha256[:16]}-dead").mkdir()
    store.pull(manifest)
    assert list(tmp.iterdir()) == []


def test_concurrent_pulls_fetch_once(store: ModelStore, manifest: ModelManifest) -> None:
    results: list[Any] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            results.append(store.pull(manifest))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sorted(r.fetched for r in results) == [False, False, False, True]
    assert store.open_verified(manifest).read_bytes() == results[0].path.read_bytes()
