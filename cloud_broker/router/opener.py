"""The broker's embedding encoders, from its model store (``models.*`` settings)."""

from __future__ import annotations

from typing import Any

from ridgeline_core.store import ModelsSettings
from ridgeline_core.store.encoders import encoder_sha256, open_encoder

from .router import EncoderOpener

__all__ = ["DEFAULT_ENCODER", "store_encoders"]

DEFAULT_ENCODER = "all-minilm-l6-v2"


def store_encoders(models: ModelsSettings) -> EncoderOpener:
    """Opens an embedding model of the store by name (built with ``cloud-broker models
    build NAME``), with the sha256 of the file it loaded."""

    def open_by_name(name: str) -> tuple[Any, str]:
        manifest = models.catalog().get(name)
        store = models.store()
        encoder = open_encoder(manifest, store, build_command="cloud-broker models build")
        return encoder, encoder_sha256(manifest, store, None)

    return open_by_name
