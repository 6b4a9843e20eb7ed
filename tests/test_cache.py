"""The semantic answer cache: matching, scopes, expiry, eviction, persistence, recovery."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import stat
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge_agent.knowledge.cache import SemanticCache, _ScopeIndex
from ridgeline_core.errors import StoreError

T0 = 1_700_000_000.0
DIM = 256
SCOPE = "model-a/system-1"
ANSWER = {"text": "Paris.", "model": "cloud", "source": "cloud"}

OpenCache = Callable[..., SemanticCache]  # the open_cache fixture: SemanticCache's options


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class BagOfWords:
    """A deterministic embedder: hashed word counts, normalised. Records what it embedded."""

    def __init__(self, dim: int = DIM) -> None:
        self.dim = dim
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, text: str) -> npt.NDArray[np.float32]:
        with self._lock:
            self.calls.append(text)
        v = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()):
            v[zlib.crc32(word.encode()) % self.dim] += 1.0
        norm = np.linalg.norm(v)
        return v / norm if norm else v


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def embed() -> BagOfWords:
    return BagOfWords()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "answer-cache.sqlite"


@pytest.fixture
def open_cache(path: Path, embed: BagOfWords, clock: FakeClock) -> Iterator[OpenCache]:
    """Open caches on the test's path, embedder and clock; each is closed afterwards."""
    made: list[SemanticCache] = []

    def make(**options: Any) -> SemanticCache:
        options.setdefault("encoder", "bow/256")
        options.setdefault("clock", clock)
        cache = SemanticCache(options.pop("path", path), options.pop("embed", embed), **options)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


def entry_hits(path: Path, prompt: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        row = conn.execute("SELECT hits FROM entries WHERE prompt = ?", (prompt,)).fetchone()
    return int(row[0])


def test_hit_on_identical_and_similar_text(open_cache: OpenCache, clock: FakeClock) -> None:
    cache = open_cache()
    assert cache.put("What is the capital of France?", SCOPE, ANSWER)
    clock.advance(30)

    same = cache.lookup("what is the capital of france", SCOPE)
    assert same is not None
    assert same.prompt == "What is the capital of France?"
    assert same.similarity == pytest.approx(1.0, abs=1e-6)
    assert same.answer == ANSWER
    assert same.age_s == pytest.approx(30)

    similar = cache.lookup("What is the capital city of France?", SCOPE)
    assert similar is not None
    assert 0.9 <= similar.similarity < 1.0
    assert similar.answer == ANSWER


def test_miss_below_threshold(open_cache: OpenCache) -> None:
    cache = open_cache(similarity=0.95)
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    assert cache.lookup("How do I bake sourdough bread?", SCOPE) is None
    # ~0.93 similar: enough for the default 0.9, not for 0.95
    assert cache.lookup("What is the capital city of France?", SCOPE) is None


def test_best_match_wins(open_cache: OpenCache) -> None:
    cache = open_cache(similarity=0.5)
    cache.put("capital of france", SCOPE, {"text": "Paris"})
    cache.put("capital of germany", SCOPE, {"text": "Berlin"})
    cache.put("capital of italy", SCOPE, {"text": "Rome"})
    hit = cache.lookup("the capital of germany", SCOPE)
    assert hit is not None
    assert hit.answer == {"text": "Berlin"}


def test_scope_isolation(open_cache: OpenCache) -> None:
    cache = open_cache()
    cache.put("What is the capital of France?", "model-a", {"text": "Paris"})
    cache.put("What is the capital of France?", "model-b", {"text": "Paris, France."})
    assert cache.lookup("What is the capital of France?", "model-c") is None
    a = cache.lookup("What is the capital of France?", "model-a")
    b = cache.lookup("What is the capital of France?", "model-b")
    assert a is not None and a.answer == {"text": "Paris"}
    assert b is not None and b.answer == {"text": "Paris, France."}


def test_put_of_the_same_prompt_replaces_it(open_cache: OpenCache) -> None:
    cache = open_cache()
    cache.put("What is the capital of France?", SCOPE, {"text": "old"})
    assert cache.lookup("What is the capital of France?", SCOPE) is not None  # loads the scope
    cache.put("What is the capital of France?", SCOPE, {"text": "new"})
    hit = cache.lookup("What is the capital of France?", SCOPE)
    assert hit is not None and hit.answer == {"text": "new"}
    assert cache.stats()["entries"] == 1


def test_ttl_expiry(open_cache: OpenCache, clock: FakeClock) -> None:
    cache = open_cache(ttl_s=100)
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    clock.advance(99)
    assert cache.lookup("What is the capital of France?", SCOPE) is not None
    clock.advance(1)  # age == ttl_s: expired
    assert cache.lookup("What is the capital of France?", SCOPE) is None
    assert cache.stats()["entries"] == 0  # deleted by the lookup that found it expired


def test_put_sweeps_expired_entries(open_cache: OpenCache, clock: FakeClock) -> None:
    cache = open_cache(ttl_s=100)
    cache.put("old question one", "s1", ANSWER)
    cache.put("old question two", "s2", ANSWER)
    clock.advance(150)
    cache.put("a new question", "s3", ANSWER)
    assert cache.stats()["entries"] == 1


def test_lru_eviction_order(open_cache: OpenCache, clock: FakeClock, path: Path) -> None:
    cache = open_cache(max_entries=3)
    for prompt in ("alpha one", "bravo two", "charlie three"):
        cache.put(prompt, SCOPE, {"text": prompt})
        clock.advance(1)
    assert cache.lookup("alpha one", SCOPE) is not None  # alpha is now the most recently used
    assert entry_hits(path, "alpha one") == 1
    clock.advance(1)

    cache.put("delta four", SCOPE, {"text": "delta four"})  # bravo is least recently used
    assert cache.stats()["entries"] == 3
    assert cache.lookup("bravo two", SCOPE) is None
    clock.advance(1)
    cache.put("echo five", SCOPE, {"text": "echo five"})  # then charlie
    assert cache.lookup("charlie three", SCOPE) is None
    for kept in ("alpha one", "delta four", "echo five"):
        hit = cache.lookup(kept, SCOPE)
        assert hit is not None and hit.answer == {"text": kept}


def test_private_is_never_stored_nor_embedded(open_cache: OpenCache, embed: BagOfWords) -> None:
    cache = open_cache()
    assert cache.put("my bank password is hunter2", SCOPE, ANSWER, private=True) is False
    assert embed.calls == []
    assert cache.stats()["entries"] == 0
    assert cache.lookup("my bank password is hunter2", SCOPE) is None


def test_a_passed_vector_is_not_embedded_again(open_cache: OpenCache, embed: BagOfWords) -> None:
    cache = open_cache()
    vector = BagOfWords()("What is the capital of France?")
    cache.put("What is the capital of France?", SCOPE, ANSWER, vector=vector)
    assert cache.lookup("What is the capital of France?", SCOPE, vector=vector) is not None
    assert embed.calls == []


def test_survives_reopen(open_cache: OpenCache, clock: FakeClock) -> None:
    first = open_cache()
    first.put("What is the capital of France?", SCOPE, ANSWER)
    first.close()
    clock.advance(5)
    second = open_cache()
    hit = second.lookup("What is the capital of France?", SCOPE)
    assert hit is not None
    assert hit.answer == ANSWER
    assert hit.age_s == pytest.approx(5)


def test_clear_empties_and_persists(open_cache: OpenCache) -> None:
    cache = open_cache()
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    cache.put("How tall is Everest?", "other", ANSWER)
    assert cache.lookup("What is the capital of France?", SCOPE) is not None
    assert cache.clear() == 2
    assert cache.lookup("What is the capital of France?", SCOPE) is None
    cache.close()
    reopened = open_cache()
    assert reopened.stats()["entries"] == 0
    assert reopened.clear() == 0


def test_encoder_change_drops_entries(
    open_cache: OpenCache, caplog: pytest.LogCaptureFixture
) -> None:
    old = open_cache(encoder="bow/256")
    old.put("What is the capital of France?", SCOPE, ANSWER)
    old.close()
    with caplog.at_level(logging.INFO, logger="edge_agent.knowledge.cache"):
        new = open_cache(encoder="minilm/int8", embed=BagOfWords(dim=64))
    assert "bow/256" in caplog.text and "dropped its 1 entries" in caplog.text
    assert new.stats()["entries"] == 0
    assert new.lookup("What is the capital of France?", SCOPE) is None
    new.put("What is the capital of France?", SCOPE, ANSWER)  # another dimension is fine now
    assert new.lookup("What is the capital of France?", SCOPE) is not None


def test_corrupt_file_is_moved_aside(
    open_cache: OpenCache, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir(mode=0o700)
    garbage = b"this is not a database\x00\xff" * 200
    path.write_bytes(garbage)
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.cache"):
        cache = open_cache()
    assert "unreadable" in caplog.text
    aside = list(path.parent.glob(f"{path.name}.corrupt-*"))
    assert len(aside) == 1
    assert aside[0].read_bytes() == garbage
    assert cache.put("What is the capital of France?", SCOPE, ANSWER)
    assert cache.lookup("What is the capital of France?", SCOPE) is not None


def test_stats_counts(open_cache: OpenCache, path: Path) -> None:
    cache = open_cache(similarity=0.8, ttl_s=60, max_entries=5)
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    cache.put("How tall is Everest?", SCOPE, ANSWER)
    cache.lookup("What is the capital of France?", SCOPE)
    cache.lookup("What is the capital of France?", SCOPE)
    cache.lookup("Who wrote Hamlet?", SCOPE)
    stats = cache.stats()
    assert stats["entries"] == 2
    assert stats["hits"] == 2
    assert stats["misses"] == 1
    assert stats["bytes"] > 0
    assert stats["path"] == str(path)
    assert stats["encoder"] == "bow/256"
    assert (stats["similarity"], stats["ttl_s"], stats["max_entries"]) == (0.8, 60.0, 5)


def test_file_permissions(open_cache: OpenCache, path: Path) -> None:
    cache = open_cache()
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    wal = path.with_name(path.name + "-wal")
    assert stat.S_IMODE(wal.stat().st_mode) == 0o600


def test_an_existing_wider_file_is_narrowed(open_cache: OpenCache, path: Path) -> None:
    path.parent.mkdir()
    path.touch(mode=0o644)
    path.chmod(0o644)
    open_cache()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_concurrent_puts_and_lookups(open_cache: OpenCache) -> None:
    cache = open_cache(max_entries=50)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(worker: int) -> None:
        try:
            for i in range(40):
                # in step: a worker that ran ahead could see its last answers evicted by the
                # others' later puts, which is the cache working, not a race in it
                start.wait()
                cache.put(f"question {worker} number {i}", f"scope{i % 3}", {"i": i})
                cache.lookup(f"question {worker} number {i}", f"scope{i % 3}")
                cache.lookup(f"question {(worker + 1) % 4} number {i}", f"scope{i % 3}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = cache.stats()
    assert stats["entries"] == 50
    assert stats["hits"] + stats["misses"] == 4 * 40 * 2
    hit = cache.lookup("question 3 number 39", "scope0")
    assert hit is not None and hit.answer == {"i": 39}


def test_sees_another_connections_writes(open_cache: OpenCache) -> None:
    a = open_cache()
    b = open_cache()
    assert b.lookup("What is the capital of France?", SCOPE) is None
    a.put("What is the capital of France?", SCOPE, ANSWER)
    a.put("How tall is Everest?", SCOPE, ANSWER)
    assert b.lookup("What is the capital of France?", SCOPE) is not None  # b had it loaded
    b.clear()
    assert a.lookup("How tall is Everest?", SCOPE) is None


def test_another_connections_hits_do_not_reload_the_matrix(
    open_cache: OpenCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = open_cache()
    b = open_cache()
    a.put("What is the capital of France?", SCOPE, ANSWER)
    loads: list[int] = []
    from_rows = _ScopeIndex.from_rows

    def counting(dim: int, rows: list[tuple[int, bytes, float]]) -> _ScopeIndex:
        loads.append(len(rows))
        return from_rows(dim, rows)

    monkeypatch.setattr(_ScopeIndex, "from_rows", counting)
    for _ in range(3):
        assert b.lookup("What is the capital of France?", SCOPE) is not None
        assert a.lookup("What is the capital of France?", SCOPE) is not None  # a hit: a write
    assert loads == [1, 1]  # each loaded its matrix once; the other's hits kept it valid


def test_wrong_dimension_vector_is_refused(open_cache: OpenCache) -> None:
    cache = open_cache()
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    short = BagOfWords(dim=64)("What is the capital of France?")
    with pytest.raises(ValueError, match=r"64 dimensions .* have 256"):
        cache.lookup("What is the capital of France?", SCOPE, vector=short)
    with pytest.raises(ValueError, match=r"64 dimensions .* have 256"):
        cache.put("Another question", SCOPE, ANSWER, vector=short)
    assert cache.stats()["entries"] == 1


def test_malformed_vectors_are_refused(open_cache: OpenCache) -> None:
    cache = open_cache()
    with pytest.raises(ValueError, match="1-D"):
        cache.put("q", SCOPE, ANSWER, vector=np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="non-zero"):
        cache.lookup("q", SCOPE, vector=np.zeros(DIM, dtype=np.float32))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("similarity", 0.0, r"similarity must be in \(0, 1\]"),
        ("similarity", 1.5, r"similarity must be in \(0, 1\]"),
        ("similarity", float("nan"), r"similarity must be in \(0, 1\]"),
        ("ttl_s", 0, "ttl_s must be > 0"),
        ("max_entries", 0, "max_entries must be >= 1"),
    ],
)
def test_invalid_settings(open_cache: OpenCache, option: str, value: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_cache(**{option: value})


def test_similarity_one_still_hits_the_identical_prompt(open_cache: OpenCache) -> None:
    cache = open_cache(similarity=1.0)
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    assert cache.lookup("What is the capital of France?", SCOPE) is not None
    assert cache.lookup("What is the capital city of France?", SCOPE) is None


def test_context_manager_closes(path: Path, embed: BagOfWords) -> None:
    with SemanticCache(path, embed, encoder="bow/256") as cache:
        cache.put("What is the capital of France?", SCOPE, ANSWER)
    with pytest.raises(StoreError, match="closed"):
        cache.lookup("What is the capital of France?", SCOPE)
    cache.close()  # twice is fine


def test_corruption_found_in_use_is_recovered(
    open_cache: OpenCache, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = open_cache()
    for i in range(100):
        first.put(f"question number {i}", SCOPE, {"text": "x" * 500})
    first.close()
    page = 4096
    size = path.stat().st_size
    with path.open("r+b") as handle:  # keep the header and the meta table (pages 1-3)
        handle.seek(3 * page)
        handle.write(b"\xff" * (size - 3 * page))

    cache = open_cache()  # the metadata still reads fine
    assert list(path.parent.glob("*.corrupt-*")) == []
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.cache"):
        assert cache.lookup("question number 7", SCOPE) is None  # the entries are not
    assert "malformed" in caplog.text
    assert len(list(path.parent.glob(f"{path.name}.corrupt-*"))) == 1
    assert cache.put("question number 7", SCOPE, ANSWER)
    assert cache.lookup("question number 7", SCOPE) is not None


# -- metadata and rows that break the schema's promises (issue 16) ----------------------------


def _edit(path: Path, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for statement in statements:
            conn.execute(statement)
        conn.commit()


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE meta SET value = 'three' WHERE key = 'dim'",
        "UPDATE meta SET value = '0' WHERE key = 'dim'",
        "UPDATE meta SET value = '-4' WHERE key = 'dim'",
        "UPDATE meta SET value = '1e9' WHERE key = 'dim'",
        "UPDATE meta SET value = x'00ff' WHERE key = 'dim'",
        "UPDATE meta SET value = 'many' WHERE key = 'generation'",
    ],
)
def test_corrupt_metadata_moves_the_file_aside_once(
    open_cache: OpenCache, path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    first = open_cache()
    first.put("What is the capital of France?", SCOPE, ANSWER)
    first.close()
    _edit(path, damage)
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.cache"):
        cache = open_cache()
        assert cache.lookup("What is the capital of France?", SCOPE) is None
        assert cache.put("What is the capital of France?", SCOPE, ANSWER)
        assert cache.lookup("What is the capital of France?", SCOPE) is not None
        assert cache.stats()["entries"] == 1
    assert caplog.text.count("WARNING") == 1 and "unreadable" in caplog.text
    assert len(list(path.parent.glob(f"{path.name}.corrupt-*"))) == 1


def test_corrupt_metadata_written_while_open_is_recovered(
    open_cache: OpenCache, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = open_cache()
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    _edit(path, "UPDATE meta SET value = 'x' WHERE key = 'generation'")
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.cache"):
        assert cache.lookup("What is the capital of France?", SCOPE) is None
    assert "unreadable" in caplog.text
    assert len(list(path.parent.glob(f"{path.name}.corrupt-*"))) == 1
    assert cache.put("What is the capital of France?", SCOPE, ANSWER)


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE entries SET created = 'yesterday' WHERE prompt LIKE 'What%'",
        "UPDATE entries SET created = 9e999 WHERE prompt LIKE 'What%'",
        "UPDATE entries SET vector = 'text, not a vector' WHERE prompt LIKE 'What%'",
    ],
)
def test_entries_with_unreadable_columns_are_dropped_once(
    open_cache: OpenCache, path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    first = open_cache()
    first.put("What is the capital of France?", SCOPE, ANSWER)
    first.put("How tall is Mount Everest?", SCOPE, ANSWER)
    first.close()
    _edit(path, damage)
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.cache"):
        cache = open_cache()
        assert cache.lookup("What is the capital of France?", SCOPE) is None
        assert cache.lookup("How tall is Mount Everest?", SCOPE) is not None  # kept
        assert cache.lookup("What is the capital of France?", SCOPE) is None
    assert caplog.text.count("WARNING") == 1 and "malformed" in caplog.text
    assert cache.stats()["entries"] == 1


def test_an_entry_damaged_after_loading_is_dropped_at_its_hit(
    open_cache: OpenCache, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = open_cache()
    cache.put("What is the capital of France?", SCOPE, ANSWER)
    assert cache.lookup("What is the capital of France?", SCOPE) is not None  # loaded
    _edit(path, "UPDATE entries SET created = 'soon'")  # no generation bump: still loaded
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.cache"):
        assert cache.lookup("What is the capital of France?", SCOPE) is None
    assert "unreadable" in caplog.text
    assert cache.stats()["entries"] == 0


def test_a_symlinked_cache_file_is_moved_aside_and_its_target_untouched(
    open_cache: OpenCache, path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_text("not a cache")
    target.chmod(0o644)
    path.parent.mkdir(mode=0o700)
    path.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="edge_agent.knowledge.cache"):
        cache = open_cache()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # never chmod'ed through the link
    assert target.read_text() == "not a cache"
    (aside,) = path.parent.glob(f"{path.name}.corrupt-*")
    assert aside.is_symlink() and aside.resolve() == target.resolve()
    assert "symbolic link" in caplog.text
    assert path.exists() and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cache.put("What is the capital of France?", SCOPE, ANSWER)


def test_a_symlinked_write_ahead_log_is_moved_aside(
    open_cache: OpenCache, path: Path, tmp_path: Path
) -> None:
    open_cache().close()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"")
    wal = path.with_name(path.name + "-wal")
    wal.unlink(missing_ok=True)
    wal.symlink_to(target)
    cache = open_cache()
    assert cache.put("What is the capital of France?", SCOPE, ANSWER)
    assert target.read_bytes() == b""  # nothing written through the link
    assert not wal.is_symlink()
