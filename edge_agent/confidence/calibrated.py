"""A calibrated confidence model: named features of a local answer -> P(answer is correct).

``edge-agent calibrate`` fits one per model and saves it as JSON next to the model's
manifest (``<manifest dir>/<model>.calibration.json``); the agent loads it with the model
and compares its probability with τ. It holds:

* ``features`` and a ``calibrator`` over them (a learned combination, or one score
  calibrated by isotonic or Platt scaling);
* ``running``: a Platt calibration of the streaming score (the ``margin`` of the tokens so
  far), which early abort uses while the answer is still being written;
* ``prompt_style``: a fingerprint of the chat prompt the model was calibrated with (system
  prompt and template). Confidence measured under another prompt style is not the same
  quantity, so a mismatch makes the agent fall back to the raw score and say so.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ridgeline_core.runtime import ChatMessage, Runtime, TokenSignals
from ridgeline_core.store.manifest import ModelManifest

from ..decision import ConfidenceInfo
from ..evaluation.calibration import Calibrator, PlattCalibrator
from .calibration_file import (
    FORMAT,
    CalibrationError,
    check_features,
    file_json,
    model_fields,
    read_json,
    write_json,
)
from .features import Evidence, probes_for, run_probes
from .scorers import Scorer, get_scorer, margin
from .variants import Variant, probe_frames, unusable

__all__ = [
    "FORMAT",
    "CalibrationError",
    "ConfidenceInfo",
    "ConfidenceModel",
    "ModelConfidence",
    "Scored",
    "calibration_path",
    "model_confidence",
    "prompt_style",
    "running_score",
]

log = logging.getLogger(__name__)

_STYLE_PROBE = "\ue000question\ue001"


def calibration_path(manifest: ModelManifest, knowledge: bool = False) -> Path | None:
    """Where a model's calibration lives: beside its manifest (None without a manifest
    file). Answers from local knowledge have their own (``<model>.knowledge.calibration.json``):
    the passages change what the model knows, and the retrieval features say how well."""
    if manifest.origin is None:
        return None
    kind = ".knowledge" if knowledge else ""
    return manifest.origin.parent / f"{manifest.name}{kind}.calibration.json"


def prompt_style(runtime: Runtime, system_prompt: str | None) -> str:
    """Fingerprint of the chat prompt around a question: template plus system prompt."""
    messages = [ChatMessage("user", _STYLE_PROBE)]
    if system_prompt:
        messages.insert(0, ChatMessage("system", system_prompt))
    rendered = runtime.render(messages)
    return hashlib.sha256(rendered.encode("utf-8")).hexdigest()[:16]


# The streaming score early abort watches: the mean margin of the tokens so far.
running_score = margin


@dataclass
class ConfidenceModel:
    """One model's calibration (see the module docstring); calibration_file has its format."""

    model: str
    features: tuple[str, ...]
    calibrator: Calibrator
    running: PlattCalibrator
    prompt_style: str
    info: dict[str, Any] = field(default_factory=dict)  # dataset, n, metrics, when
    cheap: Variant | None = None  # fewer probes, for a device that should spend less
    probe_frames: str | None = field(default_factory=probe_frames)  # fitted with these
    where: InitVar[str | None] = None  # the file, named in the errors

    def __post_init__(self, where: str | None) -> None:
        try:
            check_features(self.features, self.calibrator)
        except CalibrationError as exc:
            raise CalibrationError(f"{where}: {exc}" if where else str(exc)) from None

    @property
    def probes(self) -> set[str]:
        return probes_for(self.features)

    @property
    def method(self) -> str:
        return self.calibrator.kind

    @property
    def variants(self) -> dict[str, Variant]:
        """``full``, and ``cheap`` when it was fitted."""
        full = Variant(self.features, self.calibrator, self.info.get("heldout", {}))
        return {"full": full} | ({} if self.cheap is None else {"cheap": self.cheap})

    def probability(self, evidence: Evidence, variant: Variant | None = None) -> float:
        """P(correct) by ``variant`` (default: full)."""
        return (variant or self.variants["full"]).probability(evidence)

    def running_probability(self, signals: Sequence[TokenSignals]) -> float:
        return float(self.running.predict(np.asarray([running_score(signals)]))[0])

    # -- files ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return file_json(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "calibration") -> ConfidenceModel:
        """The model a calibration file's JSON describes; CalibrationError says what is
        wrong with it."""
        return cls(*model_fields(data, where), where=where)

    def save(self, path: Path) -> None:
        """Write the calibration file, atomically and with the umask's mode (see write_json)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> ConfidenceModel:
        return cls.from_dict(read_json(path), where=f"calibration {path}")

    def describe(self) -> str:
        feats = self.features[0] if len(self.features) == 1 else f"{len(self.features)} features"
        auroc = self.info.get("heldout", {}).get("auroc")
        measured = f", held-out AUROC {auroc:.3f}" if isinstance(auroc, float) else ""
        return f"{self.method} over {feats}{measured}"


@dataclass(frozen=True)
class Scored:
    confidence: float
    info: ConfidenceInfo
    evidence: Evidence


class ModelConfidence:
    """One model's confidence: its calibration's variants this model can compute, else
    the raw scorer."""

    def __init__(
        self,
        scorer_name: str,
        scorer: Scorer,
        calibration: ConfidenceModel | None,
        note: str | None,
        refused: dict[str, str] | None = None,
    ) -> None:
        self.scorer_name = scorer_name
        self.scorer = scorer
        self.calibration = calibration
        self.note = note
        self.refused = refused or {}  # variant -> why this model cannot compute it
        variants = {} if calibration is None else calibration.variants
        self.usable = {name: v for name, v in variants.items() if name not in self.refused}

    @property
    def calibrated(self) -> bool:
        return self.calibration is not None

    def describe(self) -> str:
        if self.calibration is None:
            return f"raw {self.scorer_name} score ({self.note})"
        cheap = self.usable.get("cheap")
        more = [] if cheap is None else [f"cheap variant over {len(cheap.features)} features"]
        more += [f"{name} variant refused: {why}" for name, why in self.refused.items()]
        return "; ".join([f"calibrated: {self.calibration.describe()}", *more])

    def running(self, signals: Sequence[TokenSignals]) -> float:
        """The streaming confidence early abort compares with τ - abort.margin."""
        if self.calibration is None:
            return self.scorer(signals)
        return self.calibration.running_probability(signals)

    def running_info(self, signals: Sequence[TokenSignals]) -> ConfidenceInfo:
        """How the confidence of an answer stopped early was computed."""
        method = "running" if self.calibrated else self.scorer_name
        return ConfidenceInfo(self.calibrated, method, self.scorer(signals), None, self.note)

    def probes(self, variant: str = "full") -> set[str]:
        """The probes scoring with ``variant`` runs."""
        chosen = _pick(self.usable, variant)[1]
        return set() if chosen is None else chosen.probes

    def score(
        self, runtime: Runtime, evidence: Evidence, variant: str = "full", why: str | None = None
    ) -> Scored:
        """The confidence of a finished answer by ``variant`` (chosen ``why``; the other
        when this model has not got it), running the probes it needs."""
        raw = self.scorer(evidence.signals)
        name, chosen = _pick(self.usable, variant)
        if self.calibration is None or chosen is None:
            info = ConfidenceInfo(False, self.scorer_name, raw, None, self.note)
            return Scored(raw, info, evidence)
        probes_ms = None
        if chosen.probes:
            started = time.perf_counter()
            evidence = run_probes(runtime, evidence, chosen.probes)
            probes_ms = (time.perf_counter() - started) * 1000
        if name != variant:
            why = self.refused.get(variant, f"the calibration has no {variant} variant")
        label = f"{name} ({why})" if why else name
        info = ConfidenceInfo(True, chosen.calibrator.kind, raw, probes_ms, variant=label)
        return Scored(self.calibration.probability(evidence, chosen), info, evidence)


def _pick(usable: dict[str, Variant], wanted: str) -> tuple[str, Variant | None]:
    """``wanted`` when this model computes it, else the one it does (None: neither)."""
    found = usable.get(wanted)
    return (wanted, found) if found else next(iter(usable.items()), (wanted, None))


def model_confidence(
    manifest: ModelManifest,
    runtime: Runtime,
    *,
    scorer_name: str,
    use_calibration: bool,
    calibration_file: Path | None,
    system_prompt: str | None,
    knowledge: bool = False,
) -> ModelConfidence:
    """Find, check and load a model's calibration (for answers from local knowledge:
    ``knowledge``); explain in ``note`` when it is not used."""
    scorer = get_scorer(scorer_name)
    if not use_calibration:
        return ModelConfidence(scorer_name, scorer, None, "calibration is off")
    path = calibration_file or calibration_path(manifest, knowledge)
    if path is None or not path.is_file():
        how = "edge-agent calibrate --knowledge auto" if knowledge else "edge-agent calibrate"
        what = "for answers from knowledge " if knowledge else ""
        note = f"{manifest.name} is not calibrated {what}(run {how})"
        return ModelConfidence(scorer_name, scorer, None, note)
    try:
        calibration = ConfidenceModel.load(path)
    except CalibrationError as exc:
        log.warning("%s; using the raw %s score", exc, scorer_name)
        return ModelConfidence(scorer_name, scorer, None, str(exc))
    if calibration.model != manifest.name:
        note = f"{path} calibrates {calibration.model}, not {manifest.name}"
        log.warning("%s; using the raw %s score", note, scorer_name)
        return ModelConfidence(scorer_name, scorer, None, note)
    style = prompt_style(runtime, system_prompt)
    if calibration.prompt_style != style:
        note = (
            f"{path} was fitted with another chat prompt (system prompt or template); "
            "recalibrate with the prompt in use"
        )
        log.warning("%s; using the raw %s score", note, scorer_name)
        return ModelConfidence(scorer_name, scorer, None, note)
    refused = {}
    for name, variant in calibration.variants.items():
        why = unusable(variant, calibration.probe_frames, runtime)
        if why is not None:
            log.warning("%s: the %s variant cannot run on %s: %s", path, name, manifest.name, why)
            refused[name] = why
    if len(refused) == len(calibration.variants):
        note = f"{path} cannot be used: " + "; ".join(
            f"the {name} variant: {why}" for name, why in refused.items()
        )
        return ModelConfidence(scorer_name, scorer, None, note)
    return ModelConfidence(scorer_name, scorer, calibration, None, refused)
