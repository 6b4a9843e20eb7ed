"""Calibration and evaluation answering on Ray Data (issue 21): the same questions answered
serially and over two Ray actors that each load SmolLM2 give the same observations, and
``edge-agent eval --ray`` reports what the serial run reports. The broker's router training
embeds its prompts on Ray actors and writes the serial run's router file, byte for byte.
They run on the session's two-node cluster (conftest.py), which the broker-on-Serve tests
share."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clirun import run
from conftest import MINILM, SMOLLM2, MiniLM, isolated_env

from edge_agent.evaluation import harness
from edge_agent.evaluation.dataset import load_dataset
from edge_agent.evaluation.on_ray import RayAnswering, observe_on_ray
from edge_agent.settings import RuntimeSettings
from ridgeline_core.runtime import SamplingParams, load_runtime
from ridgeline_core.store import ModelsSettings, ModelStore

DATASET = Path(__file__).resolve().parent.parent / "datasets" / "ridgeline-qa-v1" / "test.jsonl"
QUESTIONS = 6


@pytest.fixture
def local_ray(ray_cluster: Any) -> None:
    """The session's two-node cluster (conftest.py); the answering runs where Ray puts it."""


def _features(observations: list[Any]) -> np.ndarray:
    names = sorted({n for m in harness.methods_for(False) for n in m.features})
    return harness.features_of(observations, names)


def test_two_actors_answer_as_the_serial_run(
    local_ray: None, model_store: ModelStore, smollm2_path: Path
) -> None:
    items = load_dataset(DATASET)[:QUESTIONS]
    probes = harness.probes_needed(harness.methods_for(False))
    params = SamplingParams(max_tokens=48, temperature=0.0)
    settings = RuntimeSettings(threads=1)
    models = ModelsSettings(store_dir=model_store.root)
    manifest = models.catalog().get(SMOLLM2)
    runtime = load_runtime(manifest, smollm2_path, settings.load_options())
    try:
        serial = harness.observe(runtime, items, system_prompt=None, params=params, probes=probes)
    finally:
        runtime.close()
    spread = observe_on_ray(
        RayAnswering("auto", actors=2), models, settings, SMOLLM2, items,
        system_prompt=None, params=params, probes=probes,
    )  # fmt: skip
    assert [o.item.id for o in spread] == [i.id for i in items]
    assert [o.text for o in spread] == [o.text for o in serial]
    assert [o.correct for o in spread] == [o.correct for o in serial]
    np.testing.assert_array_equal(_features(spread), _features(serial))


def test_eval_on_ray_reports_what_the_serial_eval_reports(
    local_ray: None, model_store: ModelStore, smollm2_path: Path, tmp_path: Path
) -> None:
    env = isolated_env(model_store, tmp_path)
    env["RIDGELINE_EDGE_RUNTIME__THREADS"] = "1"
    args = [
        "eval",
        "--dataset",
        str(DATASET),
        "--limit",
        str(QUESTIONS),
        "--max-tokens",
        "48",
        "--json",
    ]
    serial = run("edge-agent", *args, env=env)
    assert serial.returncode == 0, serial.stderr
    spread = run("edge-agent", *args, "--ray", "auto", "--ray-actors", "2", env=env)
    assert spread.returncode == 0, spread.stderr
    assert "on 2 Ray actors" in spread.stderr
    mine, theirs = json.loads(spread.stdout), json.loads(serial.stdout)
    for report in (mine, theirs):
        report.pop("seconds")
    assert mine == theirs


def test_ray_does_not_answer_from_knowledge_yet(smollm2: Any) -> None:
    from edge_agent.cli.on_ray import answer_questions
    from edge_agent.settings import EdgeSettings
    from ridgeline_core.errors import ConfigError

    with pytest.raises(ConfigError, match="--ray does not answer from local knowledge"):
        answer_questions(
            EdgeSettings(), smollm2, load_dataset(DATASET)[:1],
            params=SamplingParams(max_tokens=8), probes=set(),
            knowledge=lambda item: None, ray=RayAnswering("auto"),
        )  # fmt: skip


def _router_outcomes(path: Path) -> Path:
    """40 prompts (more than one encoder batch of 32) judged for two models in the same
    order, whose batches are shared, and 24 of them in reverse for a third, whose batch is
    its own: 3 distinct batches, 64 prompts, where the serial run embeds 104."""
    from test_router import ARITHMETIC, GEOGRAPHY

    arithmetic = ARITHMETIC + [f"What is {a + 30} minus {a}?" for a in range(10)]
    countries = ["Spain", "Laos", "Chad", "Iraq", "Mali", "Oman", "Peru", "Togo", "Chile", "Nepal"]
    geography = GEOGRAPHY + [f"Which country borders {c}?" for c in countries]
    prompts = arithmetic + geography
    rows = []
    for model, is_math in (("math-bot", True), ("geo-bot", False)):
        for prompt in prompts:
            right = (prompt in arithmetic) == is_math
            signals = {"mean_logprob": -0.2 if right else -1.4, "min_logprob": -1.0}
            rows.append({"prompt": prompt, "model": model, "correct": right, **signals})
    for prompt in reversed(prompts[-24:]):
        rows.append({"prompt": prompt, "model": "odd-bot", "correct": len(prompt) % 2 == 0})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_router_training_on_ray_writes_the_serial_runs_file(
    ray_cluster: Any, minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    env = isolated_env(model_store, tmp_path)
    outcomes = _router_outcomes(tmp_path / "outcomes.jsonl")
    args = ["router", "train", "--outcomes", str(outcomes), "--json", "--out"]
    serial = run("cloud-broker", *args, str(tmp_path / "serial.json"), env=env)
    assert serial.returncode == 0, serial.stderr
    where = ["--ray", ray_cluster.address, "--ray-actors", "2"]
    spread = run("cloud-broker", *args, str(tmp_path / "ray.json"), *where, env=env)
    assert spread.returncode == 0, spread.stderr
    assert "embedding 3 batches (64 prompts) on 2 Ray actors" in spread.stderr
    assert spread.stdout == serial.stdout
    assert (tmp_path / "ray.json").read_bytes() == (tmp_path / "serial.json").read_bytes()


def test_router_training_names_a_bad_ray_address(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    """In a process of its own: this one's Ray (the session cluster) would be used as is."""
    env = isolated_env(model_store, tmp_path)
    outcomes = _router_outcomes(tmp_path / "outcomes.jsonl")
    out = tmp_path / "r.json"
    args = ["--outcomes", str(outcomes), "--out", str(out), "--ray", "127.0.0.1:1"]
    result = run("cloud-broker", "router", "train", *args, env=env, process=True)
    assert result.returncode == 2, result.stderr
    assert "cannot reach Ray at '127.0.0.1:1': Connection refused" in result.stderr
    assert not (tmp_path / "r.json").exists()


def test_router_training_on_ray_needs_the_ray_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloud_broker.router.on_ray import RayEmbedding, embed_on_ray
    from ridgeline_core.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(MissingDependencyError, match="ray"):
        embed_on_ray(RayEmbedding("local"), ModelsSettings(), [], encoder=("e", None, ""))


def test_a_ray_node_with_another_encoder_file_is_named(
    ray_cluster: Any, minilm: MiniLM, model_store: ModelStore
) -> None:
    """An actor whose encoder is not the driver's ONNX file refuses, and the driver says so
    (here: the driver claims another digest)."""
    from cloud_broker.router.on_ray import RayEmbedding, embed_on_ray
    from cloud_broker.router.opener import store_encoders
    from ridgeline_core.errors import ConfigError

    models = ModelsSettings(store_dir=model_store.root)
    encoder, _ = store_encoders(models)(MINILM)
    try:
        with pytest.raises(ConfigError, match=r"on the Ray node .* ONNX file has sha256"):
            embed_on_ray(
                RayEmbedding(ray_cluster.address, actors=1), models, [["What is 2 plus 2?"]],
                encoder=(MINILM, encoder, "0" * 64),
            )  # fmt: skip
    finally:
        encoder.close()
