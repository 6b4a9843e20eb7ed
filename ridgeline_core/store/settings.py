"""The ``[models]`` settings section, the same on the edge and in the broker."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ConfigError
from .manifest import ManifestCatalog
from .store import ModelStore

__all__ = ["ModelsSettings"]


def _default_store_dir() -> Path:
    return Path(platformdirs.user_cache_dir("ridgeline")) / "models"


class ModelsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # the command that error messages tell the user to run
    pull_command: ClassVar[str] = "edge-agent models pull"

    store_dir: Path = Field(
        default_factory=_default_store_dir, description="content-addressed model store"
    )
    manifest_dirs: list[Path] = Field(
        default_factory=list,
        description="extra directories of model manifests (*.toml), after the bundled ones",
    )
    default: str = Field(default="smollm2-135m-instruct", description="model used by default")

    @field_validator("store_dir")
    @classmethod
    def _expand_store(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("manifest_dirs")
    @classmethod
    def _expand_manifests(cls, value: list[Path]) -> list[Path]:
        return [path.expanduser() for path in value]

    def catalog(self) -> ManifestCatalog:
        missing = [str(path) for path in self.manifest_dirs if not path.is_dir()]
        if missing:
            raise ConfigError(f"models.manifest_dirs: no such directory: {', '.join(missing)}")
        # the manifests of models merged into this store come before the user's own
        return ManifestCatalog.with_bundled([self.store_dir / "manifests", *self.manifest_dirs])

    def store(self) -> ModelStore:
        return ModelStore(self.store_dir, pull_command=self.pull_command)
