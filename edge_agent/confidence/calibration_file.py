"""The calibration file (``<model>.calibration.json``): its format, and the checks that
turn a malformed or foreign file into a CalibrationError that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from ridgeline_core.errors import ConfigError
from ridgeline_core.files import atomic_write

from ..evaluation.calibration import Calibrator, PlattCalibrator, load_calibrator
from .features import probes_for
from .variants import Variant

__all__ = [
    "FORMAT",
    "CalibrationError",
    "CalibrationFields",
    "check_features",
    "file_json",
    "model_fields",
    "read_json",
    "write_json",
]

FORMAT = "ridgeline-calibration/1"


class CalibrationError(ConfigError):
    """A calibration file is missing a field, malformed, or for something else."""


class CalibrationFields(Protocol):
    """What a calibration file holds: a ConfidenceModel's fields."""

    model: str
    features: tuple[str, ...]
    calibrator: Calibrator
    running: PlattCalibrator
    prompt_style: str
    info: dict[str, Any]
    cheap: Variant | None
    probe_frames: str | None


def file_json(fields: CalibrationFields) -> dict[str, Any]:
    """The file's JSON for a model's fields; ``model_fields`` reads it back."""
    return {
        "format": FORMAT,
        "model": fields.model,
        "features": list(fields.features),
        "calibrator": fields.calibrator.to_dict(),
        "running": fields.running.to_dict(),
        "prompt_style": fields.prompt_style,
        "info": fields.info,
        **({} if fields.probe_frames is None else {"probe_frames": fields.probe_frames}),
        **({} if fields.cheap is None else {"cheap": _variant_json(fields.cheap)}),
    }


def _variant_json(variant: Variant) -> dict[str, Any]:
    return {
        "features": list(variant.features),
        "calibrator": variant.calibrator.to_dict(),
        "info": variant.info,
    }


def _variant(data: Any, where: str) -> Variant:
    """The ``cheap`` variant's JSON, checked as the main features are."""
    if not isinstance(data, dict):
        raise CalibrationError(f"{where}: the cheap variant must be a JSON object")
    try:
        features, calibrator = data["features"], load_calibrator(data["calibrator"])
    except KeyError as exc:
        raise CalibrationError(f"{where}: the cheap variant misses {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise CalibrationError(f"{where}: the cheap variant: {exc}") from None
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise CalibrationError(f"{where}: the cheap variant's features must be a list of names")
    try:
        check_features(tuple(features), calibrator)
    except CalibrationError as exc:
        raise CalibrationError(f"{where}: the cheap variant: {exc}") from None
    info = data.get("info", {})
    return Variant(tuple(features), calibrator, info if isinstance(info, dict) else {})


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file). The file lives next to the
    model's manifest, which other users (the service's) read: the umask decides its mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data, indent=2) + "\n", mode=None)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"calibration {path} is not JSON: {exc}") from None


def check_features(features: tuple[str, ...], calibrator: Calibrator) -> None:
    """The features exist and suit the calibrator (all but logistic take one)."""
    if not features:
        raise CalibrationError("a confidence model needs at least one feature")
    try:
        probes_for(features)
    except KeyError as exc:
        raise CalibrationError(str(exc.args[0])) from None
    if calibrator.kind != "logistic" and len(features) != 1:
        raise CalibrationError(
            f"a {calibrator.kind} calibrator takes one feature, got {len(features)}"
        )
    coef = getattr(calibrator, "coef", None)
    if coef is not None and len(coef) != len(features):
        raise CalibrationError(
            f"the calibrator was fitted on {len(coef)} features, the file names {len(features)}"
        )


Fields = tuple[
    str,
    tuple[str, ...],
    Calibrator,
    PlattCalibrator,
    str,
    dict[str, Any],
    Variant | None,
    str | None,
]


def model_fields(data: Any, where: str) -> Fields:
    """A ConfidenceModel's fields from the file's JSON: model, features, calibrator,
    running calibrator, prompt style, info, the cheap variant (None when the file has
    none) and the probe frames' fingerprint (None in a file from before it was kept)."""
    if not isinstance(data, dict):
        raise CalibrationError(f"{where}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise CalibrationError(
            f"{where}: format {data.get('format')!r} is not {FORMAT!r} "
            "(refit it with edge-agent calibrate)"
        )
    try:
        model = data["model"]
        features = data["features"]
        style = data["prompt_style"]
        if not isinstance(model, str) or not isinstance(style, str):
            raise CalibrationError(f"{where}: model and prompt_style must be strings")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise CalibrationError(f"{where}: features must be a list of names")
        calibrator = load_calibrator(data["calibrator"])
        running = load_calibrator(data["running"])
    except KeyError as exc:
        raise CalibrationError(f"{where}: missing field {exc.args[0]!r}") from None
    except (ValueError, TypeError) as exc:
        raise CalibrationError(f"{where}: {exc}") from None
    if not isinstance(running, PlattCalibrator):
        raise CalibrationError(f"{where}: the running calibrator must be platt")
    info = data.get("info", {})
    cheap = _variant(data["cheap"], where) if data.get("cheap") is not None else None
    frames = data.get("probe_frames")
    if frames is not None and not isinstance(frames, str):
        raise CalibrationError(f"{where}: probe_frames must be a string")
    return (
        model,
        tuple(features),
        calibrator,
        running,
        style,
        info if isinstance(info, dict) else {},
        cheap,
        frames,
    )
