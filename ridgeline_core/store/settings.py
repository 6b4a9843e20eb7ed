"""The ``[models]`` settings section, the same on the edge and in the broker."""

from __future__ import annotations

from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field

from .manifest import ManifestCatalog
from .store import ModelStore

__all__ = ["ModelsSettings"]


def _default_store_dir() -> Path:
    return Path(platformdirs.user_cache_dir("ridgeline")) / "models"


class ModelsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    store_dir: Path = Field(
        default_factory=_default_store_dir, description="content-addressed model store"
    )
    manifest_dirs: list[Path] = Field(
        default_factory=list,
        description="extra directories of model manifests (*.toml), after the bundled ones",
    )
    default: str = Field(default="smollm2-135m-instruct", description="model used by default")

    def catalog(self) -> ManifestCatalog:
        return ManifestCatalog.with_bundled(self.manifest_dirs)

    def store(self) -> ModelStore:
        return ModelStore(self.store_dir)
