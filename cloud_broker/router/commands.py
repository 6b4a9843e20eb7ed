"""``cloud-broker router train``: outcomes in, a router file out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..settings import BrokerSettings
from .features import Featurizer
from .file import write_router_file
from .opener import DEFAULT_ENCODER, store_encoders
from .train import read_outcomes, train_router

__all__ = ["train_command"]


def train_command(
    settings: BrokerSettings, outcomes_file: Path, out_file: Path, encoder_name: str | None
) -> dict[str, Any]:
    """Train on ``outcomes_file`` and write ``out_file``; the file's body (its summary)."""
    outcomes = read_outcomes(outcomes_file)
    name = encoder_name or DEFAULT_ENCODER
    encoder, sha256 = store_encoders(settings.models)(name)
    featurizer = Featurizer(encoder)
    try:
        rows = sum(len(r) for r in outcomes.rows.values())
        print(
            f"embedding {rows} outcomes of {len(outcomes.rows)} models with {name}", file=sys.stderr
        )
        body = train_router(
            outcomes, featurizer, {"name": name, "sha256": sha256}, outcomes_file.name
        )
    finally:
        featurizer.close()
    write_router_file(out_file, body)
    return body
