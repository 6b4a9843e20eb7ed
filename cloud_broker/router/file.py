"""The router file: JSON (never pickle), a format version, and a sha256 of its canonical
body, so a truncated or edited file is refused instead of routing by damaged weights.

Body: the candidate ``models``; the ``encoder`` (name and sha256 of the ONNX file the
features came from); ``features`` (the embedding width and the prompt feature names); per
model a ``heads`` entry (logistic weights and bias for P(correct), the L2 strength, its
held-out AUROC, rows and accuracy) and, when the outcomes carried token signals, a
``calibration`` entry (P(correct) from mean and min token logprob); ``trained`` says from
what.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ridgeline_core.errors import ConfigError
from ridgeline_core.files import atomic_write

__all__ = ["FORMAT", "read_router_file", "write_router_file"]

FORMAT = "ridgeline-router/1"


def _digest(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_router_file(path: Path, body: dict[str, Any]) -> None:
    document = {"format": FORMAT, "body": body, "sha256": _digest(body)}
    atomic_write(path, json.dumps(document, indent=1, allow_nan=False) + "\n", mode=0o644)


def read_router_file(path: Path) -> dict[str, Any]:
    """The body of a router file, checked: format, checksum, shapes, finite numbers."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"router file {path} does not exist (train one: cloud-broker router train)"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"router file {path} is not a router file: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ConfigError(f"router file {path} has format {found!r}; this broker reads {FORMAT!r}")
    body = document.get("body")
    if not isinstance(body, dict) or document.get("sha256") != _safe_digest(body):
        raise ConfigError(
            f"router file {path} is damaged or was edited (its sha256 does not match)"
        )
    _check_shapes(path, body)
    return body


def _safe_digest(body: dict[str, Any]) -> str:
    try:
        return _digest(body)
    except (TypeError, ValueError):
        return ""


def _check_shapes(path: Path, body: dict[str, Any]) -> None:
    try:
        width = int(body["features"]["embedding_dim"]) + len(body["features"]["prompt"])
        for model in body["models"]:
            head = body["heads"][model]
            numbers = [*head["weights"], head["bias"]]
            if len(head["weights"]) != width:
                raise ValueError(
                    f"head of {model!r} has {len(head['weights'])} weights, not {width}"
                )
            calibration = body.get("calibration", {}).get(model)
            if calibration is not None:
                numbers += [*calibration["weights"], calibration["bias"]]
            if not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
                raise ValueError(f"head of {model!r} has numbers that are not finite")
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"router file {path} is malformed: {exc}") from None
