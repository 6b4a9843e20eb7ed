"""Pre-route: a cheap guess from the prompt alone, and when it skips local generation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edge_agent.routing.preroute import Prediction, PreRoute
from edge_agent.settings import PreRouteSettings, TaskHint, load_edge_settings
from ridgeline_core.errors import ConfigError

DEFAULTS = PreRouteSettings()


def predict(prompt: str, settings: PreRouteSettings = DEFAULTS) -> Prediction:
    return PreRoute(settings).predict(prompt)


def test_default_settings() -> None:
    assert DEFAULTS.enabled
    assert DEFAULTS.base == 0.7
    assert DEFAULTS.long_chars == 400
    assert DEFAULTS.per_1000_chars == 0.15
    assert DEFAULTS.skip_margin == 0.2
    assert [hint.name for hint in DEFAULTS.hints] == [
        "arithmetic",
        "code",
        "reasoning",
        "long-form",
        "translation",
    ]
    assert all(0 < hint.penalty <= 1 for hint in DEFAULTS.hints)


def test_plain_question_has_no_hints() -> None:
    prompt = "What is the capital of France?"
    prediction = predict(prompt)
    assert prediction.hints == ()
    assert prediction.confidence == DEFAULTS.base
    assert prediction.prompt_chars == len(prompt)
    assert "no task hints" in prediction.describe()


@pytest.mark.parametrize(
    ("prompt", "hint"),
    [
        ("What is 17 times 23?", "arithmetic"),
        ("Compute 1234 * 5678", "arithmetic"),
        ("What is the square root of 2?", "arithmetic"),
        ("Write a Python function that reverses a linked list.", "code"),
        ("Please fix this SQL query for me", "code"),
        ("Explain photosynthesis in detail.", "long-form"),
        ("Write an essay on the French revolution", "long-form"),
        ("Prove that there are infinitely many primes.", "reasoning"),
        ("Translate 'good morning' into German.", "translation"),
    ],
)
def test_task_hints(prompt: str, hint: str) -> None:
    prediction = predict(prompt)
    assert prediction.hints == (hint,)
    penalty = next(h.penalty for h in DEFAULTS.hints if h.name == hint)
    assert prediction.confidence == pytest.approx(DEFAULTS.base - penalty)
    assert hint in prediction.describe()


def test_hints_are_case_insensitive() -> None:
    assert predict("EXPLAIN GRAVITY IN DETAIL").hints == ("long-form",)


@pytest.mark.parametrize("prompt", ["What is 2 times 3?", "What time is it?", "Who wrote Hamlet?"])
def test_easy_prompts_match_no_hint(prompt: str) -> None:
    assert predict(prompt).hints == ()


def test_several_hints_add_up_and_clamp_at_zero() -> None:
    prompt = "Write a Python function to compute 123 * 456 and explain it step by step in detail"
    prediction = predict(prompt)
    assert set(prediction.hints) == {"arithmetic", "code", "reasoning", "long-form"}
    assert prediction.confidence == 0.0


def test_long_prompt_loses_confidence_per_thousand_chars() -> None:
    prompt = "a " * 2500
    assert len(prompt) == 5000
    prediction = predict(prompt)
    assert prediction.hints == ()
    expected = DEFAULTS.base - DEFAULTS.per_1000_chars * (5000 - DEFAULTS.long_chars) / 1000
    assert prediction.confidence == pytest.approx(expected)
    assert prediction.confidence == pytest.approx(0.01)


def test_prompt_up_to_long_chars_loses_nothing() -> None:
    assert predict("a" * DEFAULTS.long_chars).confidence == DEFAULTS.base
    assert predict("a" * (DEFAULTS.long_chars + 1000)).confidence == pytest.approx(
        DEFAULTS.base - DEFAULTS.per_1000_chars
    )


def test_skips_only_when_well_below_tau() -> None:
    settings = PreRouteSettings(skip_margin=0.25)
    route = PreRoute(settings)
    tau = 0.75

    def at(confidence: float) -> Prediction:
        return Prediction(confidence, (), 10)

    assert route.skips(at(0.3), tau)
    assert not route.skips(at(0.5), tau)  # exactly tau - margin: try locally
    assert not route.skips(at(0.7), tau)
    assert not route.skips(at(0.9), tau)


def test_default_code_prompt_skips_at_neutral_tau() -> None:
    route = PreRoute(DEFAULTS)
    assert route.skips(route.predict("Write a Python function that sorts a list"), 0.55)
    assert not route.skips(route.predict("What is the capital of France?"), 0.55)


def test_disabled_never_skips() -> None:
    route = PreRoute(PreRouteSettings(enabled=False))
    assert not route.skips(Prediction(0.0, ("code",), 10), 0.95)


def test_custom_hints_replace_the_defaults() -> None:
    settings = PreRouteSettings(hints=[TaskHint(name="medical", pattern=r"\bdiagnos", penalty=0.5)])
    assert predict("Can you diagnose this rash?", settings).hints == ("medical",)
    assert predict("Write a Python function", settings).hints == ()


def test_invalid_regex_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="not a regular expression"):
        TaskHint(name="broken", pattern="(unclosed", penalty=0.1)


def test_invalid_regex_fails_at_settings_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    config = tmp_path / "edge.toml"
    config.write_text(
        '[[preroute.hints]]\nname = "broken"\npattern = "(unclosed"\npenalty = 0.1\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match="not a regular expression"):
        load_edge_settings(config_file=config, env={})


def test_hint_penalty_out_of_range_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        TaskHint(name="x", pattern="x", penalty=1.5)
