"""Local knowledge on datasets/knowledge-v1 with SmolLM2: what retrieval adds, how well it
finds the passage and the collection, what confidence learns from it, and what each
privacy setting lets reach the broker. Run:

    .venv/bin/python benchmarks/knowledge.py [--split test] [--limit N] [--no-privacy]
                                             [--routing-only]

Needs SmolLM2 and the built encoder in the edge agent's store (``edge-agent models pull``,
``edge-agent models build all-minilm-l6-v2``); the collections are ingested into a
temporary directory. Answers are greedy (temperature 0), 48 tokens at most, judged by the
project's matcher (an accepted answer appears in the reply).

- accuracy: the test questions answered with no knowledge, with retrieval from all
  chunks (every collection is an expert: the best passages of any), and with expert
  selection (the best collection only), ``knowledge.passages`` passages each;
- retrieval: recall@k (a passage from the question's source file that holds an accepted
  answer is among the first k of all chunks) and expert selection accuracy;
- routing: with each source file a memory expert of its own (20), how often the one
  chosen holds the answer, by what the score reads: the best chunk, + profiles, + judged
  answers (benchmarks/knowledge_routing.py says how);
- confidence: held-out AUROC of a logistic calibration fitted on the train split, with and
  without the retrieval features (answers with expert selection);
- privacy: a real broker process in front of an upstream that records what it receives;
  questions about the handbook (which holds the contacts page) asked in mode cloud under
  each setting; what reached the upstream is searched for the passages' text and for
  personal data.

Check the load average first (it is printed): a busy machine slows the model, not the
figures of accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
DATA = ROOT / "datasets" / "knowledge-v1"
SETTINGS = ("never", "question-only", "redacted", "allowed")

from knowledge_routing import routing_figures  # noqa: E402  (beside this file)


def agent_settings(root: Path, **extra: Any) -> Any:
    from edge_agent import EdgeSettings
    from edge_agent.settings import load_edge_settings

    base = load_edge_settings(config_file=None, env=os.environ).settings
    return EdgeSettings.model_validate(
        {
            "models": {"store_dir": str(base.models.store_dir), "default": "smollm2-135m-instruct"},
            "runtime": {"threads": 2},
            "generation": {"max_tokens": 48, "temperature": 0.0},
            "budget": {"state_file": str(root / "budget.json")},
            "telemetry": {"sources": []},
            "embeddings": {"threads": 2},
            "knowledge": {"dir": str(root / "knowledge")},
            **extra,
        }
    )


def ingest(agent: Any) -> dict[str, Any]:
    rows = {}
    for directory in sorted((DATA / "collections").iterdir()):
        started = time.perf_counter()
        report = agent.library.add(directory.name, [directory])
        rows[directory.name] = {"files": len(report.added), "chunks": report.chunks,
                                "seconds": time.perf_counter() - started}  # fmt: skip
    return rows


def holds_answer(passage: Any, item: Any) -> bool:
    text = passage.text.lower()
    return Path(passage.source).name == item.source and any(a.lower() in text for a in item.answers)


def retrieval_figures(agent: Any, items: Sequence[Any]) -> dict[str, float]:
    from edge_agent.knowledge.library import AUTO, retrieve

    s = agent.settings.knowledge
    hits = {1: 0, 3: 0, 5: 0}
    chosen_right = 0
    for item in items:
        vector = agent.embedder.embed_one(item.prompt)
        pooled = retrieve(agent.library, vector, [AUTO], experts=16, passages=5, min_similarity=-1)
        for k in hits:
            hits[k] += any(holds_answer(p, item) for p in pooled.passages[:k])
        picked = retrieve(agent.library, vector, [AUTO], experts=1, passages=s.passages,
                          min_similarity=s.min_similarity)  # fmt: skip
        chosen_right += [e.name for e in picked.experts if e.chosen] == [item.collection]
    n = len(items)
    return {**{f"recall@{k}": v / n for k, v in hits.items()}, "experts": chosen_right / n}


def answer_all(
    agent: Any, items: Sequence[Any], experts: int | None, library: Any = None
) -> list[Any]:
    """Observations of the local model on ``items`` (None: without knowledge), answered
    from ``library`` (default: the agent's)."""
    from edge_agent.evaluation import harness
    from edge_agent.knowledge.library import AUTO, retrieve
    from ridgeline_core.cli import CliProgress
    from ridgeline_core.runtime import SamplingParams

    s = agent.settings.knowledge
    knowledge: Callable[[Any], Any] | None = None
    if experts is not None:

        def knowledge(item: Any) -> Any:
            return retrieve(library or agent.library, agent.embedder.embed_one(item.prompt),
                            [AUTO], experts=experts, passages=s.passages,
                            min_similarity=s.min_similarity)  # fmt: skip

    runtime = agent.runtime(agent.settings.models.default)
    return harness.observe(
        runtime, items, system_prompt=agent.settings.generation.system_prompt,
        params=SamplingParams(max_tokens=48, temperature=0.0), probes=set(),
        progress=CliProgress(unit="items"), knowledge=knowledge,
    )  # fmt: skip


def auroc_figures(train: list[Any], test: list[Any]) -> dict[str, float]:
    from edge_agent.evaluation import harness

    plain = tuple(
        f
        for f in harness.KNOWLEDGE_FEATURES
        if not f.startswith(("retriev", "expert", "answer_in"))
    )
    methods = [
        harness.Method("without retrieval features", "logistic", plain, "span and prompt"),
        harness.Method(
            "with retrieval features", "logistic", harness.KNOWLEDGE_FEATURES, "+ retrieval"
        ),
        harness.METHODS["platt"],
    ]
    reports = harness.compare_methods(train, methods, heldout=test)
    return {r.method: r.auroc for r in reports}


def privacy_figures(store_root: Path, items: Sequence[Any], root: Path) -> list[dict[str, Any]]:
    from brokerproc import BrokerProcess
    from recording_upstream import broker_config, recording_upstream
    from support import broker_env

    from edge_agent import EdgeAgent
    from edge_agent.knowledge.redaction import Redactor

    names = _contact_names()
    redactor = Redactor(names)
    rows = []
    with recording_upstream() as upstream:
        env = broker_env(_Store(store_root), root)
        broker = BrokerProcess(["serve", "--dev", "--listen", "127.0.0.1:0"], env,
                               config=broker_config(upstream.base_url), tmp_path=root)  # fmt: skip
        try:
            for setting in SETTINGS:
                edge = agent_settings(
                    root / setting,
                    broker={"address": broker.address, "plaintext": True},
                    knowledge={"dir": str(root / setting / "k"), "redact_names": names},
                )
                with EdgeAgent(edge, background=False) as agent:
                    directory = DATA / "collections" / "kestrel-handbook"
                    agent.library.add("kestrel-handbook", [directory], escalate=setting)
                    upstream.take()
                    sent = leaked = 0
                    found: dict[str, int] = {}
                    for item in items:
                        answer = agent.ask(item.prompt, knowledge="auto", mode="cloud")
                        texts = upstream.texts()
                        sent += bool(texts)
                        info = answer.decision.knowledge
                        retrieved = [] if info is None else info.citations
                        body = "\n".join(texts)
                        leaked += any(_chunk_text(agent, c)[:60] in body for c in retrieved)
                        for kind, count in redactor.redact(body).counts().items():
                            found[kind] = found.get(kind, 0) + count
                rows.append(
                    {
                        "setting": setting,
                        "asked": len(items),
                        "reached_broker": sent,
                        "with_passages": leaked,
                        "personal_data_at_broker": found,
                    }
                )
        finally:
            broker.stop()
    return rows


class _Store:
    def __init__(self, root: Path) -> None:
        self.root = root


def _chunk_text(agent: Any, citation: dict[str, Any]) -> str:
    loaded = agent.library.load(citation["collection"])
    rows = loaded.file.source_chunks(citation["source"])
    return next(r.text for r in rows if r.ordinal == citation["chunk"])


def _contact_names() -> list[str]:
    listed = DATA / "private-names.txt"
    return (
        [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        if listed.exists()
        else []
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--no-privacy", action="store_true")
    parser.add_argument("--routing-only", action="store_true", help="only expert selection")
    args = parser.parse_args()
    from edge_agent import EdgeAgent
    from edge_agent.evaluation.dataset import load_dataset

    items = _with_sources(load_dataset(DATA / f"{args.split}.jsonl"), DATA / f"{args.split}.jsonl")
    train = _with_sources(load_dataset(DATA / "train.jsonl"), DATA / "train.jsonl")
    if args.limit:
        items, train = items[: args.limit], train[: args.limit]
    load = os.getloadavg()[0]
    print(f"load average {load:.2f} on {os.cpu_count()} CPUs; {len(items)} {args.split} questions")
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        EdgeAgent(agent_settings(Path(tmp)), background=False) as agent,
    ):
        if not args.routing_only:
            _answers(agent, items, train, results)
        results["routing"] = routing_figures(
            agent, train, items, Path(tmp) / "file-experts", DATA, answer_all
        )
        store_root = agent.settings.models.store_dir
    if not args.no_privacy and not args.routing_only:
        handbook = [i for i in items if i.collection == "kestrel-handbook"]
        handbook.sort(key=lambda i: i.source != "contacts.md")  # the personal data first
        handbook = handbook[:8]
        with tempfile.TemporaryDirectory() as tmp:
            results["privacy"] = privacy_figures(Path(store_root), handbook, Path(tmp))
    print(json.dumps(results, indent=2, default=str))
    _tables(results)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def _answers(agent: Any, items: list[Any], train: list[Any], results: dict[str, Any]) -> None:
    results["collections"] = ingest(agent)
    results["retrieval"] = retrieval_figures(agent, items)
    plain = answer_all(agent, items, None)
    pooled = answer_all(agent, items, 16)
    experts = answer_all(agent, items, 1)
    results["accuracy"] = {name: sum(o.correct for o in obs) / len(obs)
                           for name, obs in (("no knowledge", plain), ("all chunks", pooled),
                                             ("expert selection", experts))}  # fmt: skip
    results["auroc"] = auroc_figures(answer_all(agent, train, 1), experts)


def _with_sources(items: list[Any], path: Path) -> list[Any]:
    """The items with their ``source`` file (the loader keeps only what the agent reads)."""
    sources = [
        json.loads(line).get("source") for line in path.read_text().splitlines() if line.strip()
    ]
    for item, source in zip(items, sources, strict=True):
        object.__setattr__(item, "source", source)
    return items


def _tables(r: dict[str, Any]) -> None:
    if "accuracy" in r:
        print("\n| answered with | accuracy |\n|---|---:|")
        for name, value in r["accuracy"].items():
            print(f"| {name} | {value:.3f} |")
        print("\n| retrieval | value |\n|---|---:|")
        for name, value in r["retrieval"].items():
            print(f"| {name} | {value:.3f} |")
    print(f"\n| choosing among {r['routing']['experts']} file-sized experts | as written "
          "| without names |\n|---|---:|---:|")  # fmt: skip
    for name, (named, bare) in r["routing"]["accuracy"].items():
        print(f"| {name} | {named:.3f} | {bare:.3f} |")
    for name, value in r.get("auroc", {}).items():
        print(f"| confidence (held-out AUROC), {name} | {value:.3f} |")
    if "privacy" in r:
        print("\n| setting | asked | reached the broker | with passages | personal data there |")
        print("|---|---:|---:|---:|---|")
        for row in r["privacy"]:
            pii = (
                ", ".join(f"{k} {v}" for k, v in sorted(row["personal_data_at_broker"].items()))
                or "none"
            )
            cells = (row["setting"], row["asked"], row["reached_broker"], row["with_passages"], pii)
            print("| " + " | ".join(str(c) for c in cells) + " |")


if __name__ == "__main__":
    main()
