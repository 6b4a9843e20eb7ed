"""``cloud-broker router train``: outcomes in, a router file out."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ridgeline_core.progress import NULL_PROGRESS, Progress

from ..settings import BrokerSettings
from .features import Featurizer
from .file import write_router_file
from .on_ray import RayEmbedding, embed_on_ray
from .opener import DEFAULT_ENCODER, store_encoders
from .train import check_outcomes, prompt_lists, read_outcomes, train_router

__all__ = ["train_command"]


def train_command(
    settings: BrokerSettings,
    outcomes_file: Path,
    out_file: Path,
    encoder_name: str | None,
    *,
    ray: RayEmbedding | None = None,
    progress: Progress = NULL_PROGRESS,
) -> dict[str, Any]:
    """Train on ``outcomes_file`` and write ``out_file``; the file's body (its summary).
    With ``ray``, the prompts are embedded on Ray Data actors (:mod:`.on_ray`)."""
    outcomes = read_outcomes(outcomes_file)
    check_outcomes(outcomes)
    name = encoder_name or DEFAULT_ENCODER
    encoder, sha256 = store_encoders(settings.models)(name)
    featurizer = Featurizer(encoder)
    try:
        rows = sum(len(r) for r in outcomes.rows.values())
        where = "" if ray is None else f" on Ray at {ray.address}"
        print(
            f"embedding {rows} outcomes of {len(outcomes.rows)} models with {name}{where}",
            file=sys.stderr,
        )
        if ray is not None:
            lists = prompt_lists(outcomes)
            embedded = embed_on_ray(
                ray, settings.models, lists, encoder=(name, encoder, sha256), progress=progress
            )
            featurizer = Featurizer(embedded)
        body = train_router(
            outcomes, featurizer, {"name": name, "sha256": sha256}, outcomes_file.name
        )
    finally:
        encoder.close()
    write_router_file(out_file, body)
    return body
