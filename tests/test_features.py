"""Confidence features and the calibrated confidence model: pure logic, no model."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.confidence.calibrated import (
    FORMAT,
    CalibrationError,
    ConfidenceModel,
    ModelConfidence,
    running_score,
)
from edge_agent.confidence.features import (
    FEATURES,
    SHORT_PROBES,
    Evidence,
    ShortAnswer,
    feature_values,
    probes_for,
)
from edge_agent.confidence.scorers import get_scorer
from edge_agent.evaluation.calibration import LogisticCalibrator, PlattCalibrator
from edge_agent.evaluation.harness import (
    CHEAP_FEATURES,
    DEFAULT_FEATURES,
    FAST_FEATURES,
    METHODS,
    compare_methods,
)
from ridgeline_core.errors import InvalidRequestError
from ridgeline_core.runtime import TokenSignals


def sig(prob: float, margin: float | None = None, entropy: float = 0.5) -> TokenSignals:
    return TokenSignals(prob=prob, entropy=entropy, margin=prob if margin is None else margin)


def evidence(
    prompt: str,
    tokens: list[tuple[str, float]],
    short: str | None = None,
    p_true: float | None = None,
) -> Evidence:
    shorts = {}
    if short is not None:
        shorts = {p: ShortAnswer(short, (sig(0.9), sig(0.5)), 0.1) for p in SHORT_PROBES}
    return Evidence(
        prompt,
        tuple(text for text, _ in tokens),
        tuple(sig(p) for _, p in tokens),
        sig(0.8),
        shorts,
        p_true,
        samples=(shorts["short"],) * 2 if shorts else (),
    )


PARIS = evidence(
    "What is the capital of France?",
    [("The", 0.9), (" capital", 0.95), (" of", 0.99), (" France", 0.97), (" is", 0.9),
     (" Paris", 0.4), (".", 0.8), (" It", 0.2), (" is", 0.3), (" lovely", 0.05)],
    short="Paris",
)  # fmt: skip


def test_span_is_the_first_sentence_and_its_new_words() -> None:
    values = dict(zip(["span_min", "span_first", "sentence_min"],
                      feature_values(PARIS, ["span_min", "span_first", "sentence_min"]),
                      strict=True))  # fmt: skip
    # "capital", "France" and "of" come from the prompt; "Paris" is the only new word.
    assert values["span_min"] == pytest.approx(0.4)
    assert values["span_first"] == pytest.approx(0.4)
    # the second sentence (" lovely" at 0.05) is not part of the span
    assert values["sentence_min"] == pytest.approx(0.4)
    assert feature_values(PARIS, ["min_prob"]) == [pytest.approx(0.05)]


def test_agreement_with_the_short_probes() -> None:
    assert feature_values(PARIS, ["agree", "agree2", "agree3", "short_pairs"]) == [1, 1, 1, 3]
    mixed = Evidence(
        PARIS.prompt,
        PARIS.pieces,
        PARIS.signals,
        shorts={
            "short": ShortAnswer("Paris", (), 0.1),
            "short2": ShortAnswer("paris.", (), 0.1),
            "short3": ShortAnswer("Marseille", (), 0.1),
        },
    )
    assert feature_values(mixed, ["agree", "agree2", "agree3", "short_pairs"]) == [1, 1, 0, 1]
    other = evidence(PARIS.prompt, list(zip(PARIS.pieces, [0.5] * 10, strict=True)), "Lyon")
    assert feature_values(other, ["agree"]) == [0.0]
    empty = evidence(PARIS.prompt, [("Paris", 0.5)], "")
    assert feature_values(empty, ["agree"]) == [0.0]
    sums = evidence("What is 12 plus 30?", [("12 plus 30 is 42.", 0.6)], "42")
    assert feature_values(sums, ["numbers_agree", "agree"]) == [1.0, 1.0]


def test_prompt_features() -> None:
    e = evidence("Is 17 times 3 more than 50?", [("Yes", 0.5)])
    names = ["prompt_numbers", "prompt_yes_no", "prompt_arithmetic", "prompt_what"]
    assert feature_values(e, names) == [3.0, 1.0, 1.0, 0.0]
    what = evidence("What is the boiling point of water?", [("100", 0.5)])
    assert feature_values(what, names) == [0.0, 0.0, 0.0, 1.0]


def test_every_feature_is_finite_on_edge_cases() -> None:
    cases = [
        evidence("?", [], short="", p_true=0.0),
        evidence("x", [("", 1.0)], short="", p_true=1.0),
        evidence("Is it?", [("No", 1e-30)] * 3, short="No", p_true=0.5),
        PARIS,
    ]
    for case in cases:
        with_probe = Evidence(
            case.prompt, case.pieces, case.signals, case.eog, case.shorts, case.p_true or 0.5,
            samples=case.samples or (ShortAnswer("", (), 0.0), ShortAnswer("x", (), 0.0)),
        )  # fmt: skip
        for value in feature_values(with_probe, list(FEATURES)):
            assert math.isfinite(value)


def test_probes_are_named_by_the_features_that_need_them() -> None:
    assert probes_for(["margin", "span_min"]) == set()
    assert probes_for(FAST_FEATURES) == {"short"}
    assert probes_for(DEFAULT_FEATURES) == {"short", "short2", "short3", "samples"}
    assert probes_for(CHEAP_FEATURES) == {"short", "samples"}
    assert probes_for(["p_true_logit", "agree"]) == {"selfcheck", "short"}
    with pytest.raises(KeyError, match="unknown confidence feature 'nope'"):
        probes_for(["nope"])
    with pytest.raises(ValueError, match="needs the 'short' probe"):
        feature_values(evidence("q", [("a", 0.5)]), ["agree"])
    with pytest.raises(ValueError, match="needs the 'samples' probe"):
        feature_values(evidence("q", [("a", 0.5)]), ["sample_agree"])


def test_sampled_answers_agree_with_the_reply_and_each_other() -> None:
    e = evidence("What is the capital of France?", [("Paris", 0.9), (".", 0.9)])
    short = ShortAnswer("Paris", (), 0.0)
    sampled = replace(e, shorts={"short": short}, samples=(short, ShortAnswer("Lyon", (), 0.0)))
    assert feature_values(sampled, ["sample_agree", "sample_pairs"]) == [0.5, 1 / 3]


def _model(features: tuple[str, ...] = ("margin", "agree")) -> ConfidenceModel:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(features)))
    y = x.sum(axis=1) + rng.normal(size=200) > 0
    calibrator = LogisticCalibrator().fit(x, y)
    running = PlattCalibrator().fit(rng.random(200), rng.random(200) > 0.5)
    return ConfidenceModel("smollm2-135m-instruct", features, calibrator, running, "abc", {})


def test_confidence_model_round_trips_through_its_file(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "m.calibration.json"
    model.save(path)
    loaded = ConfidenceModel.load(path)
    assert loaded.features == model.features
    assert loaded.probes == {"short"}
    assert loaded.probability(PARIS) == pytest.approx(model.probability(PARIS))
    assert 0.0 <= loaded.running_probability(PARIS.signals) <= 1.0
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="other/9"), "format 'other/9'"),
        (lambda d: d.pop("calibrator"), "missing field 'calibrator'"),
        (lambda d: d.update(features=["margin", "bogus"]), "unknown confidence feature"),
        (lambda d: d["calibrator"].update(coef=[1.0]), "equal, non-empty lists"),
        (lambda d: d["calibrator"].update(kind="forest"), "unknown calibrator kind"),
        (lambda d: d.update(running=d["calibrator"]), "running calibrator must be platt"),
        (lambda d: d.update(features="margin"), "features must be a list"),
        (lambda d: d["calibrator"].update(mean=[float("nan"), 0.0]), "finite"),
    ],
)
def test_a_bad_calibration_file_is_refused_with_the_reason(
    tmp_path: Path, edit: object, message: str
) -> None:
    data = _model().to_dict()
    edit(data)  # type: ignore[operator]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=message):
        ConfidenceModel.load(path)


def test_unreadable_calibration_files(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot read"):
        ConfidenceModel.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(CalibrationError, match="is not JSON"):
        ConfidenceModel.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("[1, 2]")
    with pytest.raises(CalibrationError, match="expected a JSON object"):
        ConfidenceModel.load(tmp_path / "y.json")
    assert FORMAT in json.dumps(_model().to_dict())


def test_single_score_calibrators_take_one_feature() -> None:
    platt = PlattCalibrator().fit(np.linspace(0, 1, 20), np.arange(20) > 9)
    with pytest.raises(CalibrationError, match="takes one feature"):
        ConfidenceModel("m", ("margin", "agree"), platt, platt, "s")


def test_uncalibrated_confidence_is_the_raw_scorer() -> None:
    raw = ModelConfidence("margin", get_scorer("margin"), None, "not calibrated")
    assert not raw.calibrated
    assert raw.running(PARIS.signals) == pytest.approx(running_score(PARIS.signals))
    assert "not calibrated" in raw.describe()


class _Obs:
    def __init__(self, e: Evidence, correct: bool) -> None:
        self.evidence, self.correct, self.seconds = e, correct, {"answer": 1.0, "short": 0.5}


def test_compare_methods_scores_out_of_fold() -> None:
    rng = np.random.default_rng(3)
    observations = []
    for _ in range(120):
        correct = bool(rng.random() < 0.5)
        p = float(np.clip(rng.normal(0.7 if correct else 0.4, 0.15), 0.01, 0.99))
        observations.append(_Obs(evidence("What is x?", [("x", p)] * 3), correct))
    reports = compare_methods(observations, [METHODS["platt"], METHODS["isotonic"]])  # type: ignore[arg-type]
    for report in reports:
        assert report.how == "5-fold cross-validation"
        assert 0.75 < report.auroc < 1.0  # the separation the data was drawn with
        assert report.ece < 0.15
        assert report.seconds == pytest.approx(1.0)  # margin needs no probe
    with pytest.raises(InvalidRequestError, match="needs both"):
        compare_methods([_Obs(PARIS, True)] * 10, [METHODS["platt"]])  # type: ignore[list-item]


def test_the_shipped_calibration_loads_with_todays_features() -> None:
    """A renamed or removed feature would silently turn the bundled calibration off."""
    from edge_agent.confidence.calibrated import calibration_path
    from ridgeline_core.store import ManifestCatalog

    path = calibration_path(ManifestCatalog.with_bundled().get("smollm2-135m-instruct"))
    assert path is not None and path.is_file()
    shipped = ConfidenceModel.load(path)
    assert shipped.features == DEFAULT_FEATURES
    assert shipped.method == "logistic"
