"""Calibration and evaluation answering on Ray Data (issue 21): the same questions answered
serially and over two Ray actors that each load SmolLM2 give the same observations, and
``edge-agent eval --ray`` reports what the serial run reports. They run on the session's
two-node cluster (conftest.py), which the broker-on-Serve tests share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clirun import run
from conftest import SMOLLM2, isolated_env

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
