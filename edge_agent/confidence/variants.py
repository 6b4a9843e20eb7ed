"""A calibration's variants: ``full`` (every feature it was fitted on) and, when fitted,
``cheap`` (fewer probes, for a device that should spend less per answer), which the
telemetry picks between; and the checks that refuse a variant this model cannot compute.

``confidence.variant = "auto"`` uses the cheap variant on battery and while the board
throttles itself, the full one otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ridgeline_core.runtime import Runtime

from ..evaluation.calibration import Calibrator
from ..telemetry.snapshot import Telemetry
from .features import SHORT_PROBE_TOKENS, SHORT_PROBES, Evidence, feature_values, probes_for

__all__ = [
    "VARIANTS",
    "Variant",
    "choose_variant",
    "probe_frames",
    "unusable",
]

VARIANTS = ("full", "cheap")
QUESTION_ROOM = 256  # tokens a short probe needs beyond its frame: a question, an answer


@dataclass(frozen=True)
class Variant:
    """Features and the calibrator fitted on them."""

    features: tuple[str, ...]
    calibrator: Calibrator
    info: dict[str, Any] = field(default_factory=dict)  # its held-out metrics

    @property
    def probes(self) -> set[str]:
        return probes_for(self.features)

    def probability(self, evidence: Evidence) -> float:
        rows = np.asarray([feature_values(evidence, self.features)])
        x = rows if self.calibrator.kind == "logistic" else rows[:, 0]
        return float(np.clip(self.calibrator.predict(x), 0.0, 1.0)[0])


def probe_frames() -> str:
    """Fingerprint of the short probes' frames and length: features read from other
    frames are other numbers, so a calibration fitted on them does not apply."""
    text = repr((sorted(SHORT_PROBES.items()), SHORT_PROBE_TOKENS))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def unusable(variant: Variant, fitted_frames: str | None, runtime: Runtime) -> str | None:
    """Why ``runtime`` cannot compute ``variant``'s features; None when it can."""
    shorts = sorted(variant.probes & set(SHORT_PROBES))
    if not shorts:
        return None
    if fitted_frames is not None and fitted_frames != probe_frames():
        return (
            f"its probes ({', '.join(shorts)}) were asked in other few-shot frames than this "
            "version asks them (recalibrate with edge-agent calibrate)"
        )
    frame = max(runtime.count_tokens(SHORT_PROBES[probe][0]) for probe in shorts)
    needed = frame + QUESTION_ROOM
    # the model's trained context: llama.cpp asks the probes in a context of their own,
    # whatever runtime.n_ctx the answers get
    trained = runtime.manifest.context_length or runtime.context_length
    if trained < needed:
        return (
            f"its probes need {needed} tokens of context and {runtime.manifest.name} was "
            f"trained for {trained}"
        )
    return None


def choose_variant(setting: str, telemetry: Telemetry) -> tuple[str, str]:
    """The variant to use (``setting``: auto, full or cheap) and why."""
    if setting != "auto":
        return setting, f"confidence.variant = {setting}"
    if telemetry.power_plugged is False:
        return "cheap", "on battery"
    if telemetry.throttled:
        return "cheap", "the board is throttling"
    return "full", "on mains power" if telemetry.power_plugged else "power unknown"
