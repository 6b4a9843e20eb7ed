"""Each local model's confidence (its calibration, found and checked once), per agent."""

from __future__ import annotations

import threading

from ridgeline_core.runtime import Runtime
from ridgeline_core.store import ManifestCatalog

from ..settings import EdgeSettings
from .calibrated import ModelConfidence, model_confidence

__all__ = ["ConfidenceRegistry"]


class ConfidenceRegistry:
    def __init__(self, settings: EdgeSettings, catalog: ManifestCatalog) -> None:
        self._settings = settings
        self._catalog = catalog
        self._found: dict[tuple[str, bool], ModelConfidence] = {}
        self._lock = threading.Lock()

    @property
    def scorer_name(self) -> str:
        """The raw scorer used when a model has no usable calibration."""
        return self._settings.confidence.scorer

    def for_model(self, model: str, runtime: Runtime, knowledge: bool = False) -> ModelConfidence:
        """How ``model``'s answers get their confidence (answers from local knowledge:
        ``knowledge``); ``runtime`` renders its prompt style, which its calibration must
        match."""
        with self._lock:
            found = self._found.get((model, knowledge))
            if found is None:
                c = self._settings.confidence
                found = model_confidence(
                    self._catalog.get(model),
                    runtime,
                    scorer_name=c.scorer,
                    use_calibration=c.calibrated,
                    calibration_file=c.knowledge_calibration_file
                    if knowledge
                    else c.calibration_file,
                    system_prompt=self._settings.generation.system_prompt,
                    knowledge=knowledge,
                )
                self._found[(model, knowledge)] = found
            return found
