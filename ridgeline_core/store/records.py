"""``builds/<name>.json``: what ``models build`` made of a model, and from which files.

A record counts only for the stored files it was built from (their digests are in it): a
manifest that names other files makes its build stale, and ``models build`` runs again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ..files import atomic_write
from .manifest import ModelManifest, check_name

__all__ = ["BuildRecord", "BuildRecords", "BuiltFile", "inputs_of"]

log = logging.getLogger("ridgeline_core.store.store")


class BuiltFile(BaseModel):
    sha256: str
    size: int


class BuildRecord(BaseModel):
    """``builds/<name>.json``: what a build made, and from which stored files."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["ridgeline-build/1"] = "ridgeline-build/1"
    model: str
    inputs: dict[str, str]  # part name -> sha256 of what it was built from
    artifacts: dict[str, BuiltFile]  # variant -> file
    recipe: str = ""  # how it was built (onnx_build.RECIPE): a new recipe rebuilds
    builder: dict[str, str] = {}  # library versions, for the record
    seconds: float = 0.0
    built_at: str = ""


def inputs_of(manifest: ModelManifest) -> dict[str, str]:
    return {part.file_label or "model": part.sha256 for part in manifest.parts()}


class BuildRecords:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        check_name(name)
        return self.root / "builds" / f"{name}.json"

    def get(self, manifest: ModelManifest) -> BuildRecord | None:
        """The last build of this model, if it was made from these files."""
        path = self.path(manifest.name)
        try:
            record = BuildRecord.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable build record %s: %s", path, exc)
            return None
        if record.inputs != inputs_of(manifest):
            return None  # built from other files: the manifest changed since
        return record

    def save(self, manifest: ModelManifest, record: BuildRecord) -> None:
        path = self.path(manifest.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, record.model_dump_json(indent=2), mode=None)
