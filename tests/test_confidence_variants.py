"""A calibration's cheap and full variants: the file keeps both, the telemetry picks one,
and a variant this model cannot compute is refused with its reason."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge_agent.confidence.calibrated import (
    ConfidenceModel,
    ModelConfidence,
    model_confidence,
    prompt_style,
)
from edge_agent.confidence.calibration_file import CalibrationError
from edge_agent.confidence.features import Evidence, ShortAnswer
from edge_agent.confidence.variants import Variant, choose_variant, probe_frames
from edge_agent.evaluation.calibration import LogisticCalibrator, PlattCalibrator
from edge_agent.telemetry import Telemetry
from ridgeline_core.runtime import LoadOptions, Runtime, TokenSignals, load_runtime
from ridgeline_core.store import ModelManifest

FULL = ("span_geomean", "agree", "agree2", "prompt_words")
CHEAP = ("span_geomean", "agree", "prompt_words")
SPAN = ("span_geomean", "prompt_words")
THROTTLING = "the board is throttling"
PARIS = Evidence(
    "What is the capital of France?",
    ("Paris", "."),
    (TokenSignals(0.9, 0.2, 0.8), TokenSignals(0.95, 0.1, 0.9)),
)
_SHORT = ShortAnswer("Paris", (TokenSignals(0.8, 0.3, 0.7),), 0.0)
PROBED = replace(PARIS, shorts={"short": _SHORT, "short2": _SHORT})  # as after the probes


def _logistic(n: int, seed: int = 0) -> LogisticCalibrator:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, n))
    return LogisticCalibrator().fit(x, x.sum(axis=1) + rng.normal(size=200) > 0)


def _model(
    cheap: tuple[str, ...] | None = CHEAP,
    frames: str | None = None,
    model: str = "smollm2-135m-instruct",
    style: str = "abc",
) -> ConfidenceModel:
    running = PlattCalibrator().fit(np.linspace(0, 1, 20), np.arange(20) > 9)
    variant = None if cheap is None else Variant(cheap, _logistic(len(cheap), 1), {"auroc": 0.8})
    return ConfidenceModel(
        model, FULL, _logistic(len(FULL)), running, style, {}, cheap=variant,
        probe_frames=frames or probe_frames(),
    )  # fmt: skip


# -- the file and the switch (no model) ---------------------------------------------------


def test_the_file_keeps_both_variants(tmp_path: Path) -> None:
    model = _model()
    model.save(tmp_path / "m.json")
    loaded = ConfidenceModel.load(tmp_path / "m.json")
    assert loaded.cheap is not None and loaded.cheap.features == CHEAP
    assert loaded.cheap.probes == {"short"} and loaded.probes == {"short", "short2"}
    assert loaded.probe_frames == probe_frames()
    for name in ("full", "cheap"):
        variant = loaded.variants[name]
        assert loaded.probability(PROBED, variant) == pytest.approx(
            model.probability(PROBED, model.variants[name])
        )
    assert loaded.probability(PROBED) == pytest.approx(model.probability(PROBED))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(cheap=[1]), "cheap variant must be a JSON object"),
        (lambda d: d["cheap"].pop("calibrator"), "cheap variant misses 'calibrator'"),
        (lambda d: d["cheap"].update(features=["nope"]), "unknown confidence feature 'nope'"),
        (lambda d: d["cheap"].update(features=["agree"]), "fitted on 3 features, the file names 1"),
        (lambda d: d.update(probe_frames=3), "probe_frames must be a string"),
    ],
)
def test_a_bad_cheap_variant_is_refused_with_the_reason(
    tmp_path: Path, edit: object, message: str
) -> None:
    data = _model().to_dict()
    edit(data)  # type: ignore[operator]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=message):
        ConfidenceModel.load(tmp_path / "bad.json")


def test_an_old_file_without_variants_still_loads(tmp_path: Path) -> None:
    data = _model(cheap=None).to_dict()
    data.pop("probe_frames")
    (tmp_path / "old.json").write_text(json.dumps(data))
    loaded = ConfidenceModel.load(tmp_path / "old.json")
    assert loaded.cheap is None and loaded.probe_frames is None
    assert list(loaded.variants) == ["full"]


@pytest.mark.parametrize(
    ("setting", "telemetry", "chosen"),
    [
        ("auto", Telemetry(power_plugged=False, battery_percent=80), ("cheap", "on battery")),
        ("auto", Telemetry(power_plugged=True), ("full", "on mains power")),
        (
            "auto",
            Telemetry(power_plugged=True, throttled=True),
            ("cheap", "the board is throttling"),
        ),
        ("auto", Telemetry(), ("full", "power unknown")),
        ("full", Telemetry(power_plugged=False), ("full", "confidence.variant = full")),
        ("cheap", Telemetry(power_plugged=True), ("cheap", "confidence.variant = cheap")),
    ],
)
def test_the_telemetry_picks_the_variant(
    setting: str, telemetry: Telemetry, chosen: tuple[str, str]
) -> None:
    assert choose_variant(setting, telemetry) == chosen


# -- refusals, with the real model ----------------------------------------------------------


def _confidence(
    tmp_path: Path, model: ConfidenceModel, manifest: ModelManifest, runtime: Runtime
) -> ModelConfidence:
    path = tmp_path / "cal.json"
    model.save(path)
    return model_confidence(
        manifest, runtime, scorer_name="margin", use_calibration=True, calibration_file=path,
        system_prompt=None,
    )  # fmt: skip


@pytest.mark.model
def test_a_variant_asked_in_other_frames_is_refused(
    smollm2: Runtime, smollm2_manifest: ModelManifest, tmp_path: Path
) -> None:
    style = prompt_style(smollm2, None)
    # both variants need probes fitted in other frames: nothing usable, the raw score
    both = _confidence(tmp_path, _model(frames="0" * 16, style=style), smollm2_manifest, smollm2)
    assert not both.calibrated
    assert "other few-shot frames" in str(both.note) and "full variant" in str(both.note)
    # a cheap variant without probes is still computable: used in place of the full one
    model = _model(cheap=SPAN, frames="0" * 16, style=style)
    one = _confidence(tmp_path, model, smollm2_manifest, smollm2)
    assert one.calibrated and list(one.usable) == ["cheap"]
    assert "other few-shot frames" in one.refused["full"]
    scored = one.score(smollm2, PARIS, "full", "on mains power")
    assert scored.info.variant is not None and scored.info.variant.startswith("cheap (its probes")
    assert scored.info.probes_ms is None  # the span variant runs no probe
    assert "full variant refused" in one.describe()


@pytest.mark.model
def test_a_context_too_small_for_the_probes_is_refused(
    smollm2_manifest: ModelManifest, smollm2_path: Path, smollm2: Runtime, tmp_path: Path
) -> None:
    # a model trained for 256 tokens (the manifest says so); a short runtime.n_ctx alone
    # does not refuse anything: the probes have a context of their own
    short = smollm2_manifest.model_copy(update={"context_length": 256})
    small = load_runtime(short, smollm2_path, LoadOptions(n_ctx=256, n_threads=1))
    try:
        model = _model(cheap=SPAN, style=prompt_style(small, None))
        confidence = _confidence(tmp_path, model, short, small)
        assert "smollm2-135m-instruct was trained for 256" in confidence.refused["full"]
        assert list(confidence.usable) == ["cheap"]
        # the full-size model computes both, and scores with the one asked for
        full = _confidence(
            tmp_path, _model(style=prompt_style(smollm2, None)), smollm2_manifest, smollm2
        )
        assert set(full.usable) == {"full", "cheap"} and not full.refused
        cheap = full.score(smollm2, PARIS, "cheap", "on battery")
        assert cheap.info.variant == "cheap (on battery)"
        assert set(cheap.evidence.shorts) == {"short"}  # one probe ran, not two
        whole = full.score(smollm2, PARIS, "full", "on mains power")
        assert set(whole.evidence.shorts) == {"short", "short2"}
    finally:
        small.close()
