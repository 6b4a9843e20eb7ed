"""The semantic answer cache in the agent: real ONNX embeddings, a real broker process.

A broker answer is cached with its prompt's embedding; a paraphrase gets it back with
``source: "cache"``, an unrelated prompt does not; the cache survives a new agent (a
restart), never stores a private prompt, and can be cleared from the command line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run
from conftest import SMOLLM2, MiniLM

from edge_agent import EdgeAgent, EdgeSettings
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

QUESTION = "What is the capital of France?"
PARAPHRASE = "Tell me the capital of France"  # cosine 0.96 with QUESTION
NEAR_MISS = "What is the capital of Germany?"  # 0.66: similar words, another answer
UNRELATED = "How many legs does a spider have?"  # 0.11


@pytest.fixture(scope="module")
def broker(
    gemma_path: Path,
    smollm2_path: Path,  # the local model, for the tests that answer locally
    shared_broker: BrokerProcess,
) -> BrokerProcess:
    return shared_broker  # one for the session (conftest.py)


def edge_settings(model_store: ModelStore, root: Path, address: str, **cache: Any) -> EdgeSettings:
    return EdgeSettings.model_validate(
        {
            "models": {"store_dir": str(model_store.root), "default": SMOLLM2},
            "runtime": {"threads": 2},
            "generation": {"max_tokens": 48},
            "broker": {"address": address, "plaintext": True},
            "budget": {"state_file": str(root / "budget.json")},
            "telemetry": {"sources": []},
            "embeddings": {"threads": 2},
            "cache": {"enabled": True, "path": str(root / "cache.sqlite"), **cache},
        }
    )


def test_paraphrase_hits_unrelated_misses_and_the_cache_survives_a_restart(
    minilm: MiniLM, broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    edge = edge_settings(model_store, tmp_path, broker.address)
    with EdgeAgent(edge, background=False) as agent:
        first = agent.ask(QUESTION, mode="cloud")
        assert first.source == "cloud", first.decision.reason
        assert first.finish_reason in ("stop", "stop_sequence")
        assert first.decision.timings.cache_ms is not None  # looked up, missed
        assert first.decision.cache is None

        hit = agent.ask(PARAPHRASE)
        assert hit.source == "cache", hit.decision.reason
        assert hit.text == first.text
        assert hit.model == first.model
        cache = hit.decision.cache
        assert cache is not None
        assert cache.prompt == QUESTION and cache.source == "cloud"
        assert 0.9 <= cache.similarity < 1.0
        assert hit.decision.path == "cache"
        assert hit.decision.broker is None and hit.decision.confidence is None

        miss = agent.ask(UNRELATED, mode="cloud")
        assert miss.source == "cloud"
        near = agent.ask(NEAR_MISS, mode="cloud")
        assert near.source == "cloud"

    with EdgeAgent(edge, background=False) as restarted:
        again = restarted.ask(PARAPHRASE)
        assert again.source == "cache"
        assert again.text == first.text
        assert restarted.cache is not None and restarted.cache.stats()["entries"] == 3


def test_private_prompts_are_never_cached(
    minilm: MiniLM, broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    edge = edge_settings(model_store, tmp_path, broker.address)
    with EdgeAgent(edge, background=False) as agent:
        secret = agent.ask("What is my bank's routing number?", mode="cloud", private=True)
        assert secret.source == "cloud"
        assert secret.decision.timings.cache_ms is None  # not even looked up
        assert agent.cache is not None and agent.cache.stats()["entries"] == 0
        again = agent.ask("What is my bank's routing number?", mode="cloud")
        assert again.source == "cloud"


def test_local_answers_are_cached_only_when_asked_and_mode_local_skips_the_cache(
    minilm: MiniLM, broker: BrokerProcess, model_store: ModelStore, tmp_path: Path
) -> None:
    edge = edge_settings(model_store, tmp_path, broker.address, store="all")
    with EdgeAgent(edge, background=False) as agent:
        first = agent.ask(QUESTION, threshold=0.0)  # τ 0: the local answer stands
        assert first.source == "local"
        assert agent.ask(PARAPHRASE, threshold=0.0).source == "cache"
        assert agent.ask(PARAPHRASE, mode="local").source == "local"
        # other options that shape the text: another scope
        assert agent.ask(PARAPHRASE, threshold=0.0, max_tokens=5).source != "cache"
        # mode cloud is not answered with a cached local answer
        assert agent.ask(PARAPHRASE, mode="cloud").source == "cloud"


def test_a_cache_that_cannot_open_does_not_stop_answers(
    smollm2_path: Path, model_store: ModelStore, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    edge = edge_settings(model_store, tmp_path, "")
    edge = edge.model_copy(
        update={"cache": edge.cache.model_copy(update={"path": blocker / "cache.sqlite"})}
    )
    with EdgeAgent(edge, background=False) as agent:
        answer = agent.ask(QUESTION, threshold=0.0)
        assert answer.source == "local" and "Paris" in answer.text
        assert answer.decision.cache is None


def test_cli_cache_stats_and_clear(
    minilm: MiniLM, broker: BrokerProcess, model_store: ModelStore, edge_env: dict[str, str],
    tmp_path: Path,
) -> None:  # fmt: skip
    env = dict(
        edge_env,
        RIDGELINE_EDGE_CACHE__ENABLED="true",
        RIDGELINE_EDGE_CACHE__PATH=str(tmp_path / "cli-cache.sqlite"),
        RIDGELINE_EDGE_EMBEDDINGS__THREADS="2",
    )
    asked = run(
        "edge-agent", "ask", "--json", "--dev", "--broker", broker.address, "--mode", "cloud",
        QUESTION, env=env,
    )  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    stats = run("edge-agent", "cache", "stats", "--json", env=env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["entries"] == 1
    hit = run("edge-agent", "ask", "--json", PARAPHRASE, env=env)
    assert hit.returncode == 0, hit.stderr
    assert json.loads(hit.stdout)["source"] == "cache"
    cleared = run("edge-agent", "cache", "clear", env=env)
    assert cleared.returncode == 0 and "removed 1" in cleared.stdout
    after = run("edge-agent", "cache", "stats", "--json", env=env)
    assert json.loads(after.stdout)["entries"] == 0
