"""Specialist classifiers: training on the shipped home-intents examples with the real
all-MiniLM-L6-v2 ONNX encoder, local answers, and escalation to a real broker whose LLM
chooses among the labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run
from conftest import SMOLLM2, MiniLM

from edge_agent import EdgeAgent, EdgeSettings
from edge_agent.knowledge.specialists import (
    Example,
    SpecialistRecord,
    TrainOptions,
    load_examples,
    train_specialist,
)
from ridgeline_core.errors import (
    EmptyPromptError,
    InvalidRequestError,
    ModelError,
    UnknownModelError,
)
from ridgeline_core.store import ModelStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "specialists" / "home-intents"
# The held-out accuracy the README reports is measured by this test's training run; the
# floor sits a little under it so a change that costs accuracy fails here.
HELDOUT_ACCURACY_FLOOR = 0.85


def edge_settings(
    model_store: ModelStore, root: Path, address: str = "", **sections: dict[str, Any]
) -> EdgeSettings:
    data: dict[str, Any] = {
        "models": {"store_dir": str(model_store.root), "default": SMOLLM2},
        "runtime": {"threads": 2},
        "budget": {"state_file": str(root / "budget.json")},
        "telemetry": {"sources": []},
        "specialists": {"dir": str(root / "specialists")},
        "embeddings": {"threads": 2},
    }
    if address:
        data["broker"] = {"address": address, "plaintext": True}
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return EdgeSettings.model_validate(data)


@pytest.fixture(scope="module")
def trained(
    minilm: MiniLM, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, SpecialistRecord]:
    """home-intents trained once for the module; returns the state root and its record."""
    root = tmp_path_factory.mktemp("specialists")
    with EdgeAgent(edge_settings(model_store, root), background=False) as agent:
        record = train_specialist(
            "home-intents",
            load_examples(EXAMPLES / "train.jsonl"),
            agent.embedder,
            agent.store,
            agent.specialists.directory,
            heldout=load_examples(EXAMPLES / "heldout.jsonl"),
            description="intents of a smart-home voice assistant",
        )
    return root, record


@pytest.fixture(scope="module")
def broker(
    gemma_path: Path, model_store: ModelStore, shared_broker: BrokerProcess
) -> BrokerProcess:
    return shared_broker  # one for the session (conftest.py)


pytestmark = pytest.mark.model


def test_training_reports_heldout_accuracy_above_the_floor(
    trained: tuple[Path, SpecialistRecord],
) -> None:
    _, record = trained
    assert len(record.labels) == 12
    heldout = record.metrics["heldout"]
    assert heldout["n"] == 180
    assert heldout["accuracy"] >= HELDOUT_ACCURACY_FLOOR, heldout
    # calibration: the probabilities mean what they say, within a few points
    assert heldout["ece"] < 0.1, heldout
    # the threshold keeps most answers local, and those are mostly right
    assert 0.3 <= record.threshold < 1.0
    assert heldout["coverage"] > 0.5, heldout
    assert heldout["accuracy_kept"] > heldout["accuracy"], heldout
    assert record.temperature > 0
    assert record.encoder == "all-minilm-l6-v2" and record.encoder_variant == "int8"


def test_a_clear_request_is_answered_locally(
    trained: tuple[Path, SpecialistRecord], model_store: ModelStore
) -> None:
    root, record = trained
    with EdgeAgent(edge_settings(model_store, root), background=False) as agent:
        result = agent.classify("home-intents", "switch off the bedroom lights")
        assert result.label == "lights_off"
        assert result.source == "local"
        assert result.probability is not None and result.probability >= record.threshold
        assert result.decision.broker is None
        assert result.decision.top[0]["label"] == "lights_off"
        assert "≥ τ" in result.decision.reason
        # the same specialist loads once and answers the next text too
        assert agent.classify("home-intents", "what's the forecast for tomorrow").label == (
            "weather_query"
        )


def test_an_unsure_classification_escalates_to_the_broker_llm_within_the_labels(
    trained: tuple[Path, SpecialistRecord], model_store: ModelStore, broker: BrokerProcess
) -> None:
    root, record = trained
    edge = edge_settings(model_store, root, broker.address)
    with EdgeAgent(edge, background=False) as agent:
        # τ 1.0: no local probability is enough, so the broker decides
        result = agent.classify("home-intents", "hmm, can you do the thing", threshold=1.0)
    assert result.source == "cloud"
    assert result.label in record.labels
    assert result.probability is None
    decision = result.decision
    assert decision.path == "cloud"
    assert decision.broker is not None and decision.broker.model == "gemma3-270m"
    assert decision.local_probability < 1.0
    assert "< τ 1.00" in decision.reason and "chose among the labels" in decision.reason


def test_without_a_broker_an_unsure_answer_is_local(
    trained: tuple[Path, SpecialistRecord], model_store: ModelStore
) -> None:
    # One route() for ask and classify: a device with no broker configured works alone, so
    # its answers are local (local-degraded is for a broker that should have answered).
    root, _ = trained
    with EdgeAgent(edge_settings(model_store, root), background=False) as agent:
        result = agent.classify("home-intents", "do the thing", threshold=1.0)
    assert result.source == "local"
    assert "no broker is configured" in result.decision.reason


def test_cli_classify_json_and_errors(
    trained: tuple[Path, SpecialistRecord],
    model_store: ModelStore,
    edge_env: dict[str, str],
    broker: BrokerProcess,
) -> None:
    root, record = trained
    env = dict(edge_env, RIDGELINE_EDGE_SPECIALISTS__DIR=str(root / "specialists"))
    result = run(
        "edge-agent", "classify", "home-intents", "set a timer for ten minutes", "--json",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["label"] == "set_timer" and answer["source"] == "local"
    assert answer["decision"]["threshold"] == pytest.approx(record.threshold)
    escalated = run(
        "edge-agent", "classify", "home-intents", "play something", "--json", "--mode", "cloud",
        "--dev", "--broker", broker.address, env=env,
    )  # fmt: skip
    assert escalated.returncode == 0, escalated.stderr
    cloud = json.loads(escalated.stdout)
    assert cloud["source"] == "cloud" and cloud["label"] in record.labels
    missing = run("edge-agent", "classify", "no-such", "hello", "--json", env=env)
    assert missing.returncode != 0
    error = json.loads(missing.stdout)["error"]
    assert "unknown specialist 'no-such'" in error["message"]
    listed = run("edge-agent", "specialists", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["specialists"]
    assert [r["name"] for r in rows] == ["home-intents"]


def test_bad_requests_are_refused_clearly(
    trained: tuple[Path, SpecialistRecord], model_store: ModelStore
) -> None:
    root, _ = trained
    with EdgeAgent(edge_settings(model_store, root), background=False) as agent:
        with pytest.raises(EmptyPromptError, match="empty"):
            agent.classify("home-intents", "   ")
        with pytest.raises(UnknownModelError, match="unknown specialist 'nope'"):
            agent.classify("nope", "hello")
        with pytest.raises(InvalidRequestError, match="invalid model name"):
            agent.classify("../etc/passwd", "hello")
        with pytest.raises(InvalidRequestError, match="threshold"):
            agent.classify("home-intents", "hello", threshold=1.5)
        with pytest.raises(InvalidRequestError, match="deadline_s"):
            agent.classify("home-intents", "hello", deadline_s=0)


def test_a_specialist_trained_on_another_encoder_is_refused(
    trained: tuple[Path, SpecialistRecord], model_store: ModelStore, tmp_path: Path
) -> None:
    root, _ = trained
    edge = edge_settings(
        model_store, root, embeddings={"variant": "fp32", "threads": 2}
    )  # the head was trained on int8 embeddings
    with EdgeAgent(edge, background=False) as agent, pytest.raises(ModelError, match="again"):
        agent.classify("home-intents", "lights on")


def test_training_refuses_bad_examples(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    few = [Example("turn on the light", "on"), Example("lights off", "off")] * 2
    with EdgeAgent(edge_settings(model_store, tmp_path), background=False) as agent:
        with pytest.raises(InvalidRequestError, match="too few examples"):
            train_specialist(
                "tiny", few, agent.embedder, agent.store, tmp_path, options=TrainOptions()
            )
        one_label = [Example(f"text {i}", "only") for i in range(10)]
        with pytest.raises(InvalidRequestError, match="at least 2 labels"):
            train_specialist("tiny", one_label, agent.embedder, agent.store, tmp_path)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 1|:1: not JSON"),
        ('{"text": "", "label": "a"}', "text must be a non-empty string"),
        ('{"text": "hi", "label": "../x"}', "label '../x' must be"),
        ('{"text": "hi", "label": "a", "extra": 1}', "expected"),
        ("[1, 2]", "expected"),
    ],
)
def test_load_examples_names_the_bad_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "examples.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InvalidRequestError, match=message):
        load_examples(path)


def test_the_shipped_examples_are_well_formed() -> None:
    train = load_examples(EXAMPLES / "train.jsonl")
    heldout = load_examples(EXAMPLES / "heldout.jsonl")
    labels = {e.label for e in train}
    assert len(labels) >= 10
    for label in labels:
        assert sum(e.label == label for e in train) >= 40
    assert {e.label for e in heldout} == labels
    assert not {e.text.lower() for e in train} & {e.text.lower() for e in heldout}


def test_a_spent_budget_keeps_unsure_classifications_local(
    trained: tuple[Path, SpecialistRecord], model_store: ModelStore, broker: BrokerProcess
) -> None:
    root, _ = trained
    edge = edge_settings(
        model_store, root, broker.address, budget={"requests_per_hour": 0}
    )  # nothing may escalate
    with EdgeAgent(edge, background=False) as agent:
        result = agent.classify("home-intents", "hmm, can you do the thing", threshold=1.0)
    assert result.source == "local"
    assert result.decision.broker is None
    assert "budget is spent" in result.decision.reason
