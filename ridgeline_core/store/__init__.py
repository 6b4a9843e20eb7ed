"""Model manifests and the content-addressed store that holds verified model files."""

from .fetch import FetchContext
from .manifest import ManifestCatalog, ModelManifest, check_digest, check_name
from .settings import ModelsSettings
from .store import ModelStore, PullResult

__all__ = [
    "FetchContext",
    "ManifestCatalog",
    "ModelManifest",
    "ModelStore",
    "ModelsSettings",
    "PullResult",
    "check_digest",
    "check_name",
]
