"""The learned router at serving time: the file's heads over the encoder's features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ridgeline_core.errors import ConfigError

from ..backends import AnswerSignals
from .features import Featurizer
from .file import read_router_file
from .fit import Logistic

__all__ = ["EncoderOpener", "LearnedRouter"]

# an embedding model's name -> (its encoder, the sha256 of the ONNX file it loaded)
EncoderOpener = Callable[[str], "tuple[Any, str]"]


class LearnedRouter:
    """P(correct) per model for a prompt, and calibrated confidence from token signals."""

    def __init__(self, body: dict[str, Any], featurizer: Featurizer) -> None:
        self.models = tuple(body["models"])
        self._heads = {m: _logistic(body["heads"][m]) for m in self.models}
        calibration = body.get("calibration", {})
        self._calibration = {m: _logistic(c) for m, c in calibration.items()}
        self._featurizer = featurizer

    @classmethod
    def load(cls, path: Path, models: Sequence[str], open_encoder: EncoderOpener) -> LearnedRouter:
        """The router in ``path`` for ``models``: ConfigError when it is damaged, for other
        models, or trained on another encoder's vectors."""
        body = read_router_file(path)
        missing = [m for m in models if m not in body["heads"]]
        if missing:
            raise ConfigError(
                f"router file {path} was trained for {', '.join(body['models'])}, not for "
                f"{', '.join(missing)}: train it on outcomes of every model of the strategy"
            )
        encoder, sha256 = open_encoder(body["encoder"]["name"])
        if sha256 != body["encoder"]["sha256"]:
            encoder.close()
            raise ConfigError(
                f"router file {path} was trained on encoder {body['encoder']['name']} with "
                f"sha256 {body['encoder']['sha256'][:12]}..., not the one in the store "
                f"({sha256[:12]}...): train it again"
            )
        return cls(body, Featurizer(encoder))

    def predict(self, prompt: str) -> dict[str, float]:
        row = self._featurizer.rows([prompt])
        return {model: float(head.predict(row)[0]) for model, head in self._heads.items()}

    def confidence(self, model: str, signals: AnswerSignals) -> float | None:
        calibration = self._calibration.get(model)
        if calibration is None:
            return None
        row = np.asarray([[signals.mean_logprob, signals.min_logprob]])
        return float(calibration.predict(row)[0])

    def close(self) -> None:
        self._featurizer.close()


def _logistic(entry: dict[str, Any]) -> Logistic:
    return Logistic(tuple(float(w) for w in entry["weights"]), float(entry["bias"]))
