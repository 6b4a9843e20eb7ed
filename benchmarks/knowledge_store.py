"""The knowledge store's search at 1k, 10k and 100k chunks: Ridgeline's own (a float32
matrix in memory, texts in SQLite) against sqlite-vec and usearch. Run:

    .venv/bin/python benchmarks/knowledge_store.py [--sizes 1000,10000,100000] [--queries 300]

sqlite-vec and usearch are measured when installed (``pip install sqlite-vec apsw
usearch``; apsw because Python's own sqlite3 here is built without loadable extensions).
Vectors are random unit vectors of 384 dimensions (all-MiniLM-L6-v2's), each chunk with
about 500 characters of text; latency is one k=5 search, from the question's vector to
the five passages' texts. ``recall@5`` compares each store's top 5 with the exact one.
``embed`` is the question's embedding with the int8 encoder (once, not per size), which
a request pays on top. ``rss`` is the process's growth while the store is open.
Check the load average first (it is printed): on a busy machine the figures mean little.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DIM, K = 384, 5
Search = Callable[[np.ndarray], list[str]]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def texts(n: int) -> list[str]:
    return [f"chunk {i}: " + "lorem ipsum dolor sit amet " * 18 for i in range(n)]


def ridgeline(directory: Path, vectors: np.ndarray, chunk_texts: list[str]) -> Search:
    from edge_agent.knowledge.library.chunking import Chunk
    from edge_agent.knowledge.library.search import LoadedCollection
    from edge_agent.knowledge.library.store import CollectionFile

    file = CollectionFile("bench", directory / "bench", create=True)
    step = 1000  # one "source" per thousand chunks
    for start in range(0, len(chunk_texts), step):
        chunks = [Chunk("Heading", t) for t in chunk_texts[start : start + step]]
        file.replace_source(f"/s/{start}.md", "0" * 64, 1, chunks, vectors[start : start + step])
    loaded = LoadedCollection(file, DIM)
    return lambda q: [p.text for p in loaded.passages(loaded.nearest(q, K))]


def sqlite_vec(directory: Path, vectors: np.ndarray, chunk_texts: list[str]) -> Search:
    import apsw
    import sqlite_vec as vec

    db = apsw.Connection(str(directory / "vec.sqlite"))
    db.enable_load_extension(True)
    db.load_extension(vec.loadable_path())
    db.execute(
        f"create virtual table v using vec0(e float[{DIM}] distance_metric=cosine, +text text)"
    )
    with db:
        db.executemany(
            "insert into v(rowid, e, text) values (?, ?, ?)",
            ((i, vectors[i].tobytes(), chunk_texts[i]) for i in range(len(chunk_texts))),
        )
    query = "select text from v where e match ? and k = ? order by distance"
    return lambda q: [r[0] for r in db.execute(query, (q.tobytes(), K))]


def usearch(directory: Path, vectors: np.ndarray, chunk_texts: list[str]) -> Search:
    import sqlite3

    from usearch.index import Index

    index = Index(ndim=DIM, metric="cos", dtype="f32")
    index.add(np.arange(len(vectors)), vectors)
    index.save(str(directory / "index.usearch"))
    db = sqlite3.connect(directory / "texts.sqlite")
    db.execute("create table t(id integer primary key, text text)")
    db.executemany("insert into t values (?, ?)", enumerate(chunk_texts))
    db.commit()

    def search(q: np.ndarray) -> list[str]:
        keys = [int(k) for k in index.search(q, K).keys]
        marks = ",".join("?" * len(keys))
        return [r[0] for r in db.execute(f"select text from t where id in ({marks})", keys)]

    return search


STORES: dict[str, Callable[[Path, np.ndarray, list[str]], Search]] = {
    "ridgeline (numpy + sqlite)": ridgeline,
    "sqlite-vec 0.1 (apsw)": sqlite_vec,
    "usearch hnsw f32": usearch,
}


def measure(
    name: str, n: int, queries: np.ndarray, rng: np.random.Generator
) -> dict[str, Any] | None:
    vectors, chunk_texts = unit_rows(rng, n), texts(n)
    with tempfile.TemporaryDirectory() as tmp:
        gc.collect()
        before = rss_bytes()
        started = time.perf_counter()
        try:
            search = STORES[name](Path(tmp), vectors, chunk_texts)
        except ImportError as exc:
            print(f"  {name}: not installed ({exc.name})", file=sys.stderr)
            return None
        build = time.perf_counter() - started
        grown = rss_bytes() - before
        search(queries[0])  # warm
        times = []
        for q in queries:
            t = time.perf_counter()
            search(q)
            times.append((time.perf_counter() - t) * 1000)
        exact = [set(np.argsort(-(vectors @ q))[:K]) for q in queries[:50]]
        got = [{int(t.split(":")[0].split()[1]) for t in search(q)} for q in queries[:50]]
        recall = statistics.mean(len(e & g) / K for e, g in zip(exact, got, strict=True))
        disk = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
    return {
        "store": name, "chunks": n, "p50_ms": statistics.median(times),
        "p99_ms": float(np.percentile(times, 99)), "recall": recall, "build_s": build,
        "disk_mb": disk / 1e6, "rss_mb": grown / 1e6,
    }  # fmt: skip


def embed_ms(rounds: int) -> float | None:
    try:
        from edge_agent.knowledge.embeddings import Embedder
        from edge_agent.settings import EmbeddingSettings, load_edge_settings

        settings = load_edge_settings(config_file=None, env=os.environ).settings
        embedder = Embedder(
            EmbeddingSettings(threads=2), settings.models.catalog(), settings.models.store()
        )
        embedder.embed_one("warm up")
    except Exception as exc:  # no built encoder here: say so, measure the rest
        print(f"  question embedding not measured: {exc}", file=sys.stderr)
        return None
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        embedder.embed_one(f"How many days of annual leave does staff member {i} get?")
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rng = np.random.default_rng(7)
    queries = unit_rows(rng, args.queries)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for name in STORES:
            if (row := measure(name, n, queries, rng)) is not None:
                rows.append(row)
    print("\n| store | chunks | p50 ms | p99 ms | recall@5 | build s | disk MB | rss MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['store']} | {r['chunks']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['recall']:.2f} | {r['build_s']:.1f} | {r['disk_mb']:.1f} | {r['rss_mb']:.1f} |"
        )
    if (ms := embed_ms(50)) is not None:
        print(f"\nquestion embedding (int8 encoder, 2 threads): p50 {ms:.2f} ms")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
