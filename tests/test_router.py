"""The learned router: fitting (pure logic), training on judged outcomes with the real
all-MiniLM-L6-v2 encoder through ``cloud-broker router train``, and refusing router files
that are damaged, edited, for other models or for another encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from clirun import run
from conftest import MiniLM, isolated_env

from cloud_broker.backends import AnswerSignals
from cloud_broker.router import LearnedRouter, auroc, fit_logistic, store_encoders
from cloud_broker.router.file import read_router_file
from cloud_broker.router.train import read_outcomes
from ridgeline_core.errors import ConfigError
from ridgeline_core.store import ModelsSettings, ModelStore

ARITHMETIC = [f"What is {a} plus {b}?" for a, b in [(3, 4), (12, 9), (25, 17), (8, 6), (40, 2)]]
ARITHMETIC += [f"What is {a} times {b}?" for a, b in [(3, 7), (6, 6), (9, 4), (11, 5), (2, 13)]]
GEOGRAPHY = [
    f"What is the capital of {country}?"
    for country in ("France", "Peru", "Kenya", "Norway", "Japan", "Chile", "Egypt", "Canada")
]
GEOGRAPHY += ["Which river flows through Cairo?", "Which ocean lies west of Portugal?"]


def test_fitting_separable_data_ranks_it_perfectly() -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(200, 5))
    labels = (rows[:, 0] + 0.5 * rows[:, 1] > 0).astype(float)
    model = fit_logistic(rows, labels, l2=0.1)
    assert auroc(model.predict(rows), labels) > 0.99
    assert auroc(np.array([0.1, 0.2, 0.2, 0.9]), np.array([0.0, 1.0, 0.0, 1.0])) == 0.875


def outcomes_file(path: Path, *, signals: bool = False) -> Path:
    """Model "math-bot" is right on arithmetic, "geo-bot" on geography."""
    lines = []
    for prompt in ARITHMETIC + GEOGRAPHY:
        is_math = prompt in ARITHMETIC
        for model, correct in (("math-bot", is_math), ("geo-bot", not is_math)):
            row = {"prompt": prompt, "model": model, "correct": correct, "prompt_tokens": 20}
            if signals:
                row.update(
                    mean_logprob=-0.1 if correct else -1.5, min_logprob=-0.5 if correct else -4
                )
            lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(
    minilm: MiniLM, model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    root = tmp_path_factory.mktemp("router")
    out = root / "router.json"
    env = isolated_env(model_store, root)
    result = run(
        "cloud-broker",
        "router",
        "train",
        "--outcomes",
        str(outcomes_file(root / "outcomes.jsonl", signals=True)),
        "--out",
        str(out),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "math-bot: 20 outcomes" in result.stdout and f"wrote {out}" in result.stdout
    return out


def opener(model_store: ModelStore) -> object:
    return store_encoders(ModelsSettings(store_dir=model_store.root))


def test_a_trained_router_ranks_models_on_unseen_prompts(
    trained: Path, model_store: ModelStore
) -> None:
    router = LearnedRouter.load(trained, ["math-bot", "geo-bot"], opener(model_store))  # type: ignore[arg-type]
    try:
        math = router.predict("What is 14 plus 27?")
        geo = router.predict("What is the capital of Italy?")
        assert math["math-bot"] > math["geo-bot"]
        assert geo["geo-bot"] > geo["math-bot"]
        sure = router.confidence("math-bot", AnswerSignals(-0.1, -0.5, 4))
        unsure = router.confidence("math-bot", AnswerSignals(-1.5, -4.0, 4))
        assert sure is not None and unsure is not None and sure > 0.5 > unsure
    finally:
        router.close()


def test_a_router_for_other_models_is_refused(trained: Path, model_store: ModelStore) -> None:
    with pytest.raises(ConfigError, match=r"trained for .*, not for smollm2"):
        LearnedRouter.load(trained, ["math-bot", "smollm2"], opener(model_store))  # type: ignore[arg-type]


def test_a_router_for_another_encoder_is_refused(trained: Path, tmp_path: Path) -> None:
    def other_encoder(name: str) -> tuple[object, str]:
        class Closed:
            def close(self) -> None:
                pass

        return Closed(), "0" * 64

    with pytest.raises(ConfigError, match="was trained on encoder all-minilm-l6-v2"):
        LearnedRouter.load(trained, ["math-bot"], other_encoder)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda text: text[: len(text) // 2], "is not a router file"),
        (lambda text: text.replace('"bias": ', '"bias": 1', 1), "damaged or was edited"),
        (lambda text: text.replace("ridgeline-router/1", "ridgeline-router/9"), "has format"),
        (lambda text: "[1, 2]", "has format"),
    ],
)
def test_a_damaged_router_file_is_refused(
    trained: Path, tmp_path: Path, damage: object, message: str
) -> None:
    broken = tmp_path / "router.json"
    broken.write_text(damage(trained.read_text()), encoding="utf-8")  # type: ignore[operator]
    with pytest.raises(ConfigError, match=message):
        read_router_file(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        read_router_file(tmp_path / "missing.json")


def test_bad_outcomes_are_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    path.write_text('{"prompt": "a", "model": "m", "correct": true}\nnot json\n')
    with pytest.raises(ConfigError, match=r"outcomes.jsonl:2: not JSON"):
        read_outcomes(path)
    path.write_text('{"prompt": "a", "model": "m", "correct": 2}\n')
    with pytest.raises(ConfigError, match=r":1: 'correct' must be"):
        read_outcomes(path)
    path.write_text('{"prompt": "a", "model": "m", "correct": true}\n')
    with pytest.raises(ConfigError, match="at least 2"):
        read_outcomes(path)


def test_train_refuses_a_model_with_one_kind_of_outcome(
    minilm: MiniLM, model_store: ModelStore, tmp_path: Path
) -> None:
    path = tmp_path / "outcomes.jsonl"
    rows = [{"prompt": p, "model": "a", "correct": True} for p in ARITHMETIC]
    rows += [{"prompt": p, "model": "b", "correct": i % 2 == 0} for i, p in enumerate(ARITHMETIC)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    env = isolated_env(model_store, tmp_path)
    result = run(
        "cloud-broker",
        "router",
        "train",
        "--outcomes",
        str(path),
        "--out",
        str(tmp_path / "r.json"),
        env=env,
    )
    assert result.returncode != 0
    assert "'a' is judged correct on every prompt" in result.stderr
    assert not (tmp_path / "r.json").exists()
