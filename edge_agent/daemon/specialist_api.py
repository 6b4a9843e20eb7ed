"""Request and response bodies of the daemon's ONNX endpoints, both ways; pure functions.

``POST /v1/embeddings`` is OpenAI's embeddings API over the agent's sentence encoder.
``POST /v1/classify`` is Ridgeline's: ``{"specialist": NAME, "text": TEXT}`` with optional
``threshold``, ``mode`` and ``deadline_s``, answered with the classification record.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..request.options import RequestOptions
from .bodies import MAX_INPUTS, ClassifyBody, EmbeddingsBody, parse_body

__all__ = [
    "MAX_INPUTS",
    "ClassifyCall",
    "EmbeddingsCall",
    "embeddings_response",
    "parse_classify",
    "parse_embeddings",
]


@dataclass(frozen=True)
class EmbeddingsCall:
    model: str  # as requested; "" for the default encoder
    texts: list[str]
    encoding_format: str  # "float" or "base64"


def parse_embeddings(raw: Any) -> EmbeddingsCall:
    body: EmbeddingsBody = parse_body(EmbeddingsBody, raw)
    body.refuse_unsupported()
    return EmbeddingsCall(body.model, list(body.input), body.encoding_format)


def embeddings_response(
    model: str, vectors: npt.NDArray[np.float32], tokens: int, encoding_format: str
) -> dict[str, Any]:
    def encode(row: npt.NDArray[np.float32]) -> Any:
        if encoding_format == "base64":
            return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
        return row.tolist()

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(row)}
            for i, row in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@dataclass(frozen=True)
class ClassifyCall:
    specialist: str
    text: str
    options: RequestOptions  # mode, threshold, deadline_s


def parse_classify(raw: Any) -> ClassifyCall:
    body: ClassifyBody = parse_body(ClassifyBody, raw)
    return ClassifyCall(body.specialist, body.text, body.options())
