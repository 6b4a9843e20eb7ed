"""ridgeline_core.files: atomic, durable writes and private files and directories."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ridgeline_core.files import (
    SharedDirectoryError,
    atomic_write,
    move_aside,
    open_private,
    private_append,
    private_dir,
)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Nothing masked: a mode the code does not set explicitly would show up as 0666/0777."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def leftovers(directory: Path, keep: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != keep)


class FsyncLog:
    """Stands in for os.fsync and records what kind of file each call synced."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: list[tuple[str, int]] = []  # ("file" | "dir", inode)
        real = os.fsync

        def fsync(fd: int) -> None:
            info = os.fstat(fd)
            self.synced.append(("dir" if stat.S_ISDIR(info.st_mode) else "file", info.st_ino))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


# -- atomic_write ----------------------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
def test_atomic_write_makes_a_0600_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write(target, '{"a": "é"}')
    assert target.read_bytes() == '{"a": "é"}'.encode()
    assert mode(target) == 0o600
    assert leftovers(tmp_path, keep="state.json") == []


@pytest.mark.usefixtures("permissive_umask")
def test_atomic_write_narrows_a_file_that_was_wider(tmp_path: Path) -> None:
    target = tmp_path / "tokens.json"
    target.write_text("old")
    target.chmod(0o644)
    atomic_write(target, b"new")
    assert target.read_bytes() == b"new"
    assert mode(target) == 0o600


def test_atomic_write_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)  # would strip the owner's write bit
    try:
        atomic_write(tmp_path / "a", b"x", mode=0o640)
    finally:
        os.umask(old)
    assert mode(tmp_path / "a") == 0o640


def test_atomic_write_without_a_mode_follows_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "shared.json", b"{}", mode=None)
    finally:
        os.umask(old)
    assert mode(tmp_path / "shared.json") == 0o644


def test_atomic_write_syncs_the_file_and_then_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = FsyncLog(monkeypatch)
    target = tmp_path / "pins.json"
    atomic_write(target, b"data")
    assert log.synced == [("file", target.stat().st_ino), ("dir", tmp_path.stat().st_ino)]


class HalfWriter:
    """A file object that writes half of what it is given, then fails as a full disk does."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def __enter__(self) -> HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def fileno(self) -> int:
        return int(self._handle.fileno())

    def write(self, data: bytes) -> int:
        self._handle.write(data[: len(data) // 2])
        self._handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self._handle.flush()


def test_a_write_that_fails_midway_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "budget.json"
    atomic_write(target, b'{"escalations": []}')
    real = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: HalfWriter(real(fd, *a, **k)))
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b'{"escalations": [[1700000000.0, 120]]}')
    assert target.read_bytes() == b'{"escalations": []}'
    assert leftovers(tmp_path, keep="budget.json") == []


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_a_failure_before_the_rename_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    target = tmp_path / "memory.jsonl"
    target.write_bytes(b"old\n")

    def fail(*args: object) -> None:
        raise KeyboardInterrupt  # not only OSError: any interruption cleans up

    monkeypatch.setattr(os, where, fail)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, b"new\n")
    monkeypatch.undo()
    assert target.read_bytes() == b"old\n"
    assert leftovers(tmp_path, keep="memory.jsonl") == []


def test_atomic_write_needs_the_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        atomic_write(tmp_path / "missing" / "file", b"x")


# -- private_dir -------------------------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
def test_private_dir_creates_0700_with_its_parents(tmp_path: Path) -> None:
    target = tmp_path / "state" / "ridgeline"
    assert private_dir(target) == target
    assert mode(target) == 0o700
    assert (tmp_path / "state").is_dir()  # a parent is made as mkdir -p makes it


def test_private_dir_is_0700_even_under_a_umask_that_strips_the_owner(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        private_dir(tmp_path / "d")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d") == 0o700


def test_private_dir_leaves_an_existing_directory_as_it_is(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    private_dir(shared)
    assert mode(shared) == 0o755  # it may be one the user chose to share


def test_private_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(FileExistsError):
        private_dir(tmp_path / "f")


@pytest.mark.parametrize("existing", [0o770, 0o757, 0o777])
def test_an_exclusive_dir_refuses_one_others_can_write(tmp_path: Path, existing: int) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(existing)
    with pytest.raises(SharedDirectoryError) as caught:
        private_dir(run, exclusive=True)
    assert isinstance(caught.value, PermissionError)
    assert caught.value.filename == str(run)


def test_an_exclusive_dir_accepts_a_private_or_readable_one(tmp_path: Path) -> None:
    for name, existing in (("a", 0o700), ("b", 0o755)):
        path = tmp_path / name
        path.mkdir()
        path.chmod(existing)
        private_dir(path, exclusive=True)
    private_dir(tmp_path / "new", exclusive=True)


# -- open_private and private_append ------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
def test_open_private_creates_0600_and_syncs_the_directory_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = FsyncLog(monkeypatch)
    target = tmp_path / "cache.sqlite"
    os.close(open_private(target, os.O_RDWR))
    assert mode(target) == 0o600
    assert log.synced == [("dir", tmp_path.stat().st_ino)]
    os.close(open_private(target, os.O_RDWR))
    assert len(log.synced) == 1  # an existing file: nothing new in the directory


def test_open_private_narrows_a_wider_file_and_keeps_its_content(tmp_path: Path) -> None:
    target = tmp_path / "old.sqlite"
    target.write_bytes(b"content")
    target.chmod(0o644)
    fd = open_private(target, os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"content"
    finally:
        os.close(fd)
    assert mode(target) == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_private_append_appends_and_syncs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "outcomes.jsonl"
    with private_append(target) as handle:
        assert handle.tell() == 0
        handle.write(b"one\n")
    log = FsyncLog(monkeypatch)
    with private_append(target) as handle:
        assert handle.tell() == 4
        handle.write(b"two\n")
    assert target.read_bytes() == b"one\ntwo\n"
    assert mode(target) == 0o600
    assert log.synced == [("file", target.stat().st_ino)]


def test_open_private_refuses_a_symbolic_link_and_leaves_its_target(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("theirs")
    target.chmod(0o644)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError) as refused:
        open_private(link, os.O_RDWR)
    assert refused.value.errno == errno.ELOOP
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OSError):
        open_private(dangling, os.O_WRONLY)
    assert not (tmp_path / "nowhere").exists()  # not created through the link


def test_move_aside_renames_the_file_its_siblings_and_a_link_as_a_link(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_text("bad")
    (tmp_path / "state.db-wal").write_text("log")
    first = move_aside(state, ("-wal", "-shm"))
    assert first.name.startswith("state.db.corrupt-") and first.read_text() == "bad"
    assert first.with_name(first.name + "-wal").read_text() == "log"
    assert not state.exists() and not (tmp_path / "state.db-wal").exists()
    target = tmp_path / "target"
    target.write_text("theirs")
    state.symlink_to(target)
    second = move_aside(state)
    assert second != first and second.name.startswith("state.db.corrupt-")  # a free name
    assert second.is_symlink() and target.read_text() == "theirs"
    assert not os.path.lexists(state)
