"""`edge-agent calibrate` and `edge-agent eval` end to end: the real SmolLM2, real processes,
a small slice of the project's question set, and a real broker for ``--strong broker``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from brokerproc import BrokerProcess
from clirun import run
from conftest import SMOLLM2
from support import broker_env

from edge_agent.confidence.calibrated import ConfidenceModel, prompt_style
from edge_agent.evaluation.dataset import load_dataset
from ridgeline_core.runtime import Runtime
from ridgeline_core.store import ModelStore

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "datasets" / "ridgeline-qa-v1" / "train.jsonl"
TEST = ROOT / "datasets" / "ridgeline-qa-v1" / "test.jsonl"
CALIBRATION_FILE = "RIDGELINE_EDGE_CONFIDENCE__CALIBRATION_FILE"


def _slice(source: Path, target: Path, n: int) -> Path:
    lines = source.read_text(encoding="utf-8").splitlines()
    # every kind of question, not the first kind only: take every k-th line
    step = max(1, len(lines) // n)
    target.write_text("\n".join(lines[::step][:n]) + "\n", encoding="utf-8")
    return target


def _env(model_store: ModelStore, root: Path) -> dict[str, str]:
    """The broker tests' clean environment, plus the edge agent's store and state."""
    env = broker_env(model_store, root)
    env.update(
        XDG_STATE_HOME=str(root / "state"),
        RIDGELINE_EDGE_MODELS__STORE_DIR=str(model_store.root),
        RIDGELINE_EDGE_RUNTIME__THREADS="2",
    )
    return env


@pytest.fixture(scope="module")
def calibrated(
    smollm2_path: Path, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One real calibration on 24 training questions, reused by the tests below."""
    root = tmp_path_factory.mktemp("calibrate")
    env = _env(model_store, root)
    data = _slice(TRAIN, root / "train-slice.jsonl", 24)
    out, plot = root / "cal.json", root / "cal.png"
    result = run(
        "edge-agent", "calibrate", "--dataset", str(data), "--method", "logistic",
        "--out", str(out), "--plot", str(plot), "--remember", "--json", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    yield {"env": env, "root": root, "out": out, "plot": plot, "data": data,
           "report": json.loads(result.stdout), "stderr": result.stderr}  # fmt: skip


def test_calibrate_remember_keeps_each_outcome_for_the_preroute(
    calibrated: dict[str, Any],
) -> None:
    report = calibrated["report"]
    path = Path(report["remembered"])
    assert path == calibrated["root"] / "state" / "ridgeline" / "outcome-memory.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["prompt"] for r in rows] == [q.prompt for q in load_dataset(calibrated["data"])]
    assert {(r["model"], r["source"]) for r in rows} == {(SMOLLM2, "calibration")}
    assert sum(r["right"] for r in rows) == round(report["local_accuracy"] * len(rows))


def test_calibrate_reports_every_method_and_saves_the_chosen_one(
    calibrated: dict[str, Any], smollm2: Runtime
) -> None:
    report = calibrated["report"]
    assert report["model"] == SMOLLM2
    assert report["questions"] == 24
    assert 0.0 < report["local_accuracy"] < 1.0
    methods = {m["method"]: m for m in report["methods"]}
    assert set(methods) == {"isotonic", "platt", "logistic-fast", "logistic-cheap", "logistic"}
    for m in methods.values():
        assert 0.0 <= m["auroc"] <= 1.0
        assert 0.0 <= m["ece"] <= 1.0
        assert 0.0 <= m["brier"] <= 1.0
        assert m["evaluated_by"].endswith("cross-validation")
        coverage = m["accuracy_at_coverage"]
        assert list(coverage) == ["20%", "40%", "60%", "80%", "100%"]
        assert coverage["100%"] == pytest.approx(report["local_accuracy"])
    # three more short generations per answer cost time the single-score methods do not
    assert methods["logistic"]["seconds_per_answer"] > methods["platt"]["seconds_per_answer"]
    assert report["chosen"] == "logistic"
    model = ConfidenceModel.load(calibrated["out"])
    assert model.model == SMOLLM2
    assert model.method == "logistic"
    assert model.probes == {"short", "short2", "short3", "samples"}
    # and the one-frame method with its samples as the cheap variant, for battery
    assert report["cheap"] == "logistic-cheap"
    assert model.cheap is not None and model.cheap.probes == {"short", "samples"}
    assert model.cheap.info["method"] == "logistic-cheap"
    # the chat prompt the agent uses (manifest system prompt, GGUF template) is the one fitted
    assert model.prompt_style == prompt_style(smollm2, None)
    assert model.info["questions"] == 24
    assert calibrated["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "answering 24 questions" in calibrated["stderr"]  # progress


def test_ask_uses_the_calibrated_probability(calibrated: dict[str, Any]) -> None:
    env = {
        **calibrated["env"],
        CALIBRATION_FILE: str(calibrated["out"]),
        "RIDGELINE_EDGE_CONFIDENCE__PROBES": "always",  # mode local would skip them
    }
    result = run("edge-agent", "ask", "--json", "--mode", "local", "What is 2 plus 2?", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    info = answer["decision"]["confidence_info"]
    assert info["calibrated"] is True
    assert info["method"] == "logistic"
    assert info["probes_ms"] > 0  # the short probes ran
    assert answer["scorer"] == "calibrated:logistic"
    assert 0.0 <= answer["confidence"] <= 1.0
    assert answer["confidence"] != pytest.approx(info["raw"])  # a probability, not the margin


def test_on_battery_the_cheap_variant_runs_one_probe(calibrated: dict[str, Any]) -> None:
    env = {
        **calibrated["env"],
        CALIBRATION_FILE: str(calibrated["out"]),
        "RIDGELINE_EDGE_CONFIDENCE__PROBES": "always",
    }
    root = calibrated["root"]
    answers = {}
    for power, plugged in (("battery", False), ("mains", True)):
        trace = root / f"{power}.jsonl"
        trace.write_text(json.dumps({"t": 0, "power_plugged": plugged}) + "\n")
        result = run(
            "edge-agent", "ask", "--json", "--mode", "local", "--telemetry-trace", str(trace),
            "What is 2 plus 2?", env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        answers[power] = json.loads(result.stdout)
    battery = answers["battery"]["decision"]["confidence_info"]
    mains = answers["mains"]["decision"]["confidence_info"]
    assert battery["variant"] == "cheap (on battery)"
    assert answers["battery"]["scorer"] == "calibrated:logistic/cheap"
    assert mains["variant"] == "full (on mains power)"
    assert answers["mains"]["scorer"] == "calibrated:logistic"
    assert battery["probes_ms"] > 0 and mains["probes_ms"] > 0
    # the same answer, judged by other features: another probability
    assert answers["battery"]["confidence"] != pytest.approx(answers["mains"]["confidence"])


def test_mode_local_skips_the_probes_it_does_not_need(calibrated: dict[str, Any]) -> None:
    env = {**calibrated["env"], CALIBRATION_FILE: str(calibrated["out"])}
    result = run("edge-agent", "ask", "--json", "--mode", "local", "What is 2 plus 2?", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    info = answer["decision"]["confidence_info"]
    assert info["calibrated"] is True
    assert info["method"] == "running"  # the calibrated running probability, no probes
    assert info["probes_ms"] is None
    assert "probes skipped: mode local never escalates" in info["note"]
    assert 0.0 <= answer["confidence"] <= 1.0


def test_another_prompt_style_falls_back_to_the_raw_score(calibrated: dict[str, Any]) -> None:
    env = {
        **calibrated["env"],
        CALIBRATION_FILE: str(calibrated["out"]),
        "RIDGELINE_EDGE_GENERATION__SYSTEM_PROMPT": "You are a pirate.",
    }
    result = run("edge-agent", "ask", "--json", "--mode", "local", "What is 2 plus 2?", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    info = answer["decision"]["confidence_info"]
    assert info["calibrated"] is False
    assert "another chat prompt" in info["note"]
    assert answer["confidence"] == pytest.approx(info["raw"])
    assert answer["scorer"] == "margin"


def test_eval_json_reports_the_decision_and_a_random_baseline(calibrated: dict[str, Any]) -> None:
    env = {
        **calibrated["env"],
        CALIBRATION_FILE: str(calibrated["out"]),
    }
    data = _slice(TEST, calibrated["root"] / "test-slice.jsonl", 12)
    result = run("edge-agent", "eval", "--dataset", str(data), "--json", env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["n"] == 12
    assert out["calibrated"] is True
    assert out["strong"] == "oracle" and out["strong_accuracy"] == 1.0
    for key in ("local_accuracy", "escalation_rate", "hybrid_accuracy", "ece", "apgr"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["threshold"] == pytest.approx(0.55)  # the policy's neutral τ
    # hybrid accuracy at τ: local answers kept above τ, the rest right (oracle)
    assert out["hybrid_accuracy"] >= out["local_accuracy"]
    assert out["random"]["apgr"] == pytest.approx(0.5)
    for key in ("cpt50", "cpt80"):
        assert out[key] is None or 0.0 <= out[key] <= 1.0
    table = run("edge-agent", "eval", "--dataset", str(data), "--limit", "3", env=env)
    assert table.returncode == 0, table.stderr
    assert "random router" in table.stdout and "APGR" in table.stdout
    assert "3/3" in table.stderr  # progress


@pytest.fixture(scope="module")
def broker(
    gemma_path: Path, model_store: ModelStore, shared_broker: BrokerProcess
) -> BrokerProcess:
    return shared_broker  # one for the session (conftest.py)


def test_eval_with_the_broker_as_the_strong_side(
    calibrated: dict[str, Any], broker: BrokerProcess
) -> None:
    data = _slice(TEST, calibrated["root"] / "broker-slice.jsonl", 4)
    items = load_dataset(data)
    result = run(
        "edge-agent", "eval", "--dataset", str(data), "--json", "--strong", "broker",
        "--dev", "--broker", broker.address, "--max-tokens", "24", env=calibrated["env"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["strong"] == "broker"
    assert out["n"] == len(items)
    # the strong side was judged on gemma's real answers, whatever their accuracy
    assert out["strong_accuracy"] in {k / len(items) for k in range(len(items) + 1)}
    assert "asking the broker 4 questions" in result.stderr


def test_eval_with_an_unreachable_broker_says_so(calibrated: dict[str, Any]) -> None:
    data = _slice(TEST, calibrated["root"] / "one.jsonl", 1)
    result = run(
        "edge-agent", "eval", "--dataset", str(data), "--strong", "broker",
        "--dev", "--broker", "127.0.0.1:9", env=calibrated["env"],
    )  # fmt: skip
    assert result.returncode != 0
    assert "the broker did not answer" in result.stderr


def test_bad_datasets_and_targets_are_refused_before_any_work(
    calibrated: dict[str, Any], tmp_path: Path
) -> None:
    env = calibrated["env"]
    missing = run("edge-agent", "calibrate", "--dataset", str(tmp_path / "no.jsonl"), env=env)
    assert missing.returncode != 0
    assert "no such file" in missing.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q?", "answers": "A"}\n')
    result = run("edge-agent", "eval", "--dataset", str(bad), env=env)
    assert result.returncode != 0
    assert "bad.jsonl:1: 'answers' must be a non-empty list" in result.stderr
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run(
        "edge-agent", "calibrate", "--dataset", str(calibrated["data"]),
        "--out", str(not_a_dir / "cal.json"), env=env,
    )  # fmt: skip
    assert result.returncode != 0
    assert "cannot write" in result.stderr and "pass --out FILE" in result.stderr
    assert "answering" not in result.stderr  # refused before the model ran


def test_one_sided_outcomes_cannot_be_calibrated(
    calibrated: dict[str, Any], tmp_path: Path
) -> None:
    hopeless = tmp_path / "hopeless.jsonl"
    hopeless.write_text(
        "".join(
            json.dumps({"prompt": f"What is {n} plus {n}?", "answers": ["zebra crossing"]}) + "\n"
            for n in (3, 5, 8)
        )
    )
    result = run(
        "edge-agent", "calibrate", "--dataset", str(hopeless), "--out", str(tmp_path / "c.json"),
        "--no-plot", env=calibrated["env"],
    )  # fmt: skip
    assert result.returncode != 0
    assert "every answer was right (or every one wrong)" in result.stderr
    assert not (tmp_path / "c.json").exists()
